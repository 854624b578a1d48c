//! `lecr serve --index postgres`: the vectors and their nearest-neighbour search in the
//! PostgreSQL store (pgvector's HNSW graphs, one per language), beside a server of the default in-memory index
//! over the same store. At this size the HNSW search finds every exact neighbour, so the two
//! modes give the same answers (the reranker's included); writes through either server reach
//! the other's answers; a database outage is a 503 the server recovers from by itself; the
//! mode is refused clearly where it cannot run. With the lexical retriever each server holds
//! the lexical index and the store the vectors: the answers are again the in-memory index's,
//! to the bit, with and without the reranker, and follow writes.
//!
//! The PostgreSQL build with pgvector comes from `scripts/fetch-pgvector.sh` (scripts/test.sh
//! runs it and sets `LECR_PGVECTOR_BIN`).

mod common;
use common::server::Server;
use lecr::store::cluster::Cluster;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Each recommended id with its probability (or similarity) per topic of an answer.
fn answers(v: &Value) -> Vec<BTreeMap<String, String>> {
    v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["recommendations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let score = r.get("probability").or(r.get("similarity")).cloned();
                    (
                        r["id"].as_str().unwrap().to_string(),
                        format!("{:.5}", score.and_then(|s| s.as_f64()).unwrap_or(f64::NAN)),
                    )
                })
                .collect()
        })
        .collect()
}

fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !check() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_postgres_index_answers_as_the_memory_index_and_follows_writes() {
    let pg = Cluster::start_pgvector()
        .expect("a PostgreSQL with pgvector (scripts/fetch-pgvector.sh; scripts/test.sh runs it)");
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let rr = root.path().join("rr");
    let rr_path = rr.to_str().unwrap();
    common::run_lecr([
        "rerank", "train", "--data", &data, "--fold", "0", "--model", &model, "--k", "12",
        "--trees", "30", "--out", rr_path,
    ]);
    let memory = Server::start(&[
        "--model",
        &model,
        "--data",
        &data,
        "--store",
        &url,
        "--reranker",
        rr_path,
    ]);
    let remote = Server::start(&[
        "--model",
        &model,
        "--data",
        &data,
        "--store",
        &url,
        "--reranker",
        rr_path,
        "--index",
        "postgres",
        // Every language walks its HNSW graph (by default one this small is scanned exactly).
        "--hnsw-from",
        "1",
    ]);
    // It holds no vectors.
    let metrics = remote.text("/metrics");
    assert!(
        metrics.contains("lecr_index_bytes{part=\"vectors\"} 0"),
        "{metrics}"
    );

    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let topics = studio_topics(&data, 16);
    assert!(topics.iter().any(|t| t["language"] == "es"));
    for path in [
        "/stable/recommend",
        "/stable/recommend?override_threshold=True&top_k=10",
    ] {
        let (c1, a) = memory.post(path, &json!({ "topics": topics }));
        let (c2, b) = remote.post(path, &json!({ "topics": topics }));
        assert_eq!((c1, c2), (200, 200), "{a} {b}");
        let (a, b) = (answers(&a), answers(&b));
        assert!(a.iter().all(|t| !t.is_empty()));
        assert_eq!(
            a, b,
            "{path}: the same contents with the same probabilities"
        );
    }

    // A content written through the memory server: the remote one recommends it (its title
    // equals the topic's) once its follower has its metadata.
    let channel = uuid();
    let title = ds
        .topics
        .iter()
        .find(|t| t.language == "en")
        .unwrap()
        .title
        .clone();
    let topic = json!({"topics": [{"id": uuid(), "channel_id": channel, "title": title,
        "description": "", "language": "en"}]});
    let rec = "/stable/recommend?override_threshold=True";
    let new_id = uuid().replace('-', "");
    let (code, v) = memory.post(
        "/stable/embed-content",
        &json!({"resources": [{"id": new_id, "title": title, "description": "", "text": "",
            "language": "en", "files": null}], "metadata": {"channel_id": channel}}),
    );
    assert_eq!(code, 200, "{v}");
    let first = |s: &Server| -> Option<String> {
        s.post(rec, &topic).1["topics"][0]["recommendations"][0]["id"]
            .as_str()
            .map(str::to_string)
    };
    within(
        Duration::from_secs(2),
        "the remote index serving it",
        || first(&remote).as_deref() == Some(new_id.as_str()),
    );
    // Removed through the remote server: gone from both.
    let (code, v) = remote.post("/stable/remove-content", &json!({ "ids": [new_id] }));
    assert_eq!(code, 200, "{v}");
    assert_ne!(first(&remote).as_deref(), Some(new_id.as_str()));
    within(
        Duration::from_secs(2),
        "the memory index dropping it",
        || first(&memory).as_deref() != Some(new_id.as_str()),
    );

    // The database goes away: a recommend through the remote index is a 503 that names the
    // store (it cannot rank without it), not a 500; it comes back and the server recovers
    // by itself (its search connections reconnect).
    pg.stop().unwrap();
    let (code, v) = remote.post(rec, &topic);
    assert_eq!(code, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("store"), "{v}");
    let (code, h) = remote.try_get("/health").unwrap();
    assert_eq!(code, 200, "{h}: the server lives on");
    pg.start_again().unwrap();
    within(
        Duration::from_secs(10),
        "the remote index answering again",
        || remote.post(rec, &topic).0 == 200,
    );
    drop(remote);

    // Refused where it cannot run, with the reason, before serving.
    let refused = |args: &[&str], why: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
            .arg("serve")
            .args(args)
            .args(["--index", "postgres", "--addr", "127.0.0.1:0"])
            .env("LECR_NO_PROGRESS", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} served");
        assert!(err.contains(why), "{args:?}: {err}");
    };
    let dir = root.path().join("store");
    refused(
        &["--model", &model, "--store", dir.to_str().unwrap()],
        "give --store postgres://",
    );
    refused(
        &["--model", &model, "--store", &url, "--ef-search", "0"],
        "--ef-search 0: pgvector accepts 1 to 1000",
    );
}

/// Topics of the corpus at `data` as Studio sends them (with their parent as ancestor).
fn studio_topics(data: &str, n: usize) -> Vec<Value> {
    let ds = lecr::data::load_dataset(Path::new(data)).unwrap();
    ds.topics
        .iter()
        .filter(|t| t.parent.is_some())
        .take(n)
        .map(|t| {
            let p = ds.topic(t.parent.as_deref().unwrap()).unwrap();
            json!({"id": uuid(), "channel_id": uuid(), "title": t.title,
                "description": t.description, "language": t.language,
                "ancestors": [{"id": uuid(), "title": p.title, "description": p.description,
                    "level": 0}]})
        })
        .collect()
}

fn refs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

/// The value of an unlabelled metric in a `/metrics` text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn with_the_lexical_retriever_the_postgres_index_answers_as_the_memory_index() {
    let pg = Cluster::start_pgvector()
        .expect("a PostgreSQL with pgvector (scripts/fetch-pgvector.sh; scripts/test.sh runs it)");
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let rr = root.path().join("rr");
    let rr_path = rr.to_str().unwrap();
    common::run_lecr([
        "rerank", "train", "--data", &data, "--fold", "0", "--model", &model, "--model", "lexical",
        "--k", "4", "--trees", "30", "--out", rr_path,
    ]);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--model", &model, "--model", "lexical", "--data", &data]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--store".to_string(), url.clone()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let memory = Server::start(&refs(&args(&[])));
    let remote = Server::start(&refs(&args(&["--index", "postgres"])));
    let ranked = Server::start(&refs(&args(&["--reranker", rr_path])));
    let ranked_remote = Server::start(&refs(&args(&[
        "--reranker",
        rr_path,
        "--index",
        "postgres",
    ])));
    let metrics = remote.text("/metrics");
    assert!(
        metrics.contains("lecr_index_bytes{part=\"vectors\"} 0"),
        "no vectors held: {metrics}"
    );
    assert!(
        metric(&metrics, "lecr_lexical_index_bytes") > 0.0,
        "the lexical index is held: {metrics}"
    );

    let topics = studio_topics(&data, 24);
    let body = json!({ "topics": topics });
    let paths = [
        "/stable/recommend",
        "/stable/recommend?override_threshold=True&top_k=10",
        "/stable/recommend?override_threshold=True&top_k=40",
    ];
    let same = |a: &Server, b: &Server, path: &str| -> (Vec<BTreeMap<String, String>>, bool) {
        let (c1, x) = a.post(path, &body);
        let (c2, y) = b.post(path, &body);
        assert_eq!((c1, c2), (200, 200), "{x} {y}");
        let (x, y) = (answers(&x), answers(&y));
        let equal = x == y;
        (x, equal)
    };
    for (a, b) in [(&memory, &remote), (&ranked, &ranked_remote)] {
        for path in paths {
            let (x, equal) = same(a, b, path);
            assert!(x.iter().filter(|t| !t.is_empty()).count() > 12, "{x:?}");
            assert!(equal, "{path}: the same contents with the same scores");
        }
    }
    // At this size every ranking is certain (the lexical list reaches the whole language).
    for s in [&remote, &ranked_remote] {
        assert_eq!(
            metric(&s.text("/metrics"), "lecr_search_uncertain_total"),
            0.0
        );
    }

    // A new content, written through the remote server with a title of its own: a topic of
    // that title finds it first on both servers once their lexical indexes are refitted,
    // and the two agree again everywhere.
    let channel = uuid();
    let title = "Zyxwv quokkanometry";
    let new_id = uuid().replace('-', "");
    let (code, v) = remote.post(
        "/stable/embed-content",
        &json!({"resources": [{"id": new_id, "title": title, "description": "", "text": "",
            "language": "en", "files": null}], "metadata": {"channel_id": channel}}),
    );
    assert_eq!(code, 200, "{v}");
    let topic = json!({"topics": [{"id": uuid(), "channel_id": channel,
        "title": "quokkanometry", "description": "", "language": "en"}]});
    let rec = "/stable/recommend?override_threshold=True";
    let first = |s: &Server| -> Option<String> {
        s.post(rec, &topic).1["topics"][0]["recommendations"][0]["id"]
            .as_str()
            .map(str::to_string)
    };
    for s in [&remote, &memory] {
        within(
            Duration::from_secs(10),
            "ranking the new content first",
            || first(s).as_deref() == Some(new_id.as_str()),
        );
    }
    within(
        Duration::from_secs(10),
        "the same answers after the write",
        || paths.iter().all(|p| same(&memory, &remote, p).1),
    );
    // Removed: gone from the remote server's lexical side too.
    let (code, v) = remote.post("/stable/remove-content", &json!({ "ids": [new_id] }));
    assert_eq!(code, 200, "{v}");
    within(Duration::from_secs(10), "dropping it", || {
        first(&remote).as_deref() != Some(new_id.as_str())
    });
}

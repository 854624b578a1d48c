//! `lecr serve --index postgres`: the vectors and their nearest-neighbour search in the
//! PostgreSQL store (pgvector's HNSW graphs, one per language), beside a server of the default in-memory index
//! over the same store. At this size the HNSW search finds every exact neighbour, so the two
//! modes give the same answers (the reranker's included); writes through either server reach
//! the other's answers; a database outage is a 503 the server recovers from by itself; the
//! mode is refused clearly where it cannot run.
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
    let topics: Vec<Value> = ds
        .topics
        .iter()
        .filter(|t| t.parent.is_some())
        .take(16)
        .map(|t| {
            let p = ds.topic(t.parent.as_deref().unwrap()).unwrap();
            json!({"id": uuid(), "channel_id": uuid(), "title": t.title,
                "description": t.description, "language": t.language,
                "ancestors": [{"id": uuid(), "title": p.title, "description": p.description,
                    "level": 0}]})
        })
        .collect();
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
        &["--model", &model, "--model", "lexical", "--store", &url],
        "not served from PostgreSQL yet",
    );
    refused(
        &["--model", &model, "--store", &url, "--ef-search", "0"],
        "--ef-search 0: pgvector accepts 1 to 1000",
    );
}

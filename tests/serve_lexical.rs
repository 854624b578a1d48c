//! `lecr serve --model M --model lexical`: the service's ensemble of the model and the lexical
//! retriever answers as `lecr predict` with the same `--model`s, with and without a reranker
//! trained on both, and its lexical index follows embed-content and remove-content.

mod common;
use common::server::{ids, Server};
use common::studio::{predict, recommend, studio_topics, uuid};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A gauge of `/metrics`.
fn metric(s: &Server, name: &str) -> f64 {
    s.text("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Waits until the lexical index has caught up with the writes.
fn refitted(s: &Server) {
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    while metric(s, "lecr_lexical_stale_languages") > 0.0 {
        // Generous: the refit runs in idle time, and CI machines are busy.
        assert!(t0.elapsed() < Duration::from_secs(120), "never refitted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_lexical_ensemble_recommends_as_predict_and_follows_writes() {
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let args = [
        "--data", &data, "--model", &model, "--model", "lexical", "--margin", "0.18",
    ];
    let predicted = predict(root.path(), "ensemble.csv", &args);
    let model_only = predict(
        root.path(),
        "model.csv",
        &["--data", &data, "--model", &model, "--margin", "0.18"],
    );
    assert_ne!(
        predicted, model_only,
        "the lexical retriever changes the answers"
    );
    let s = Server::start(&args);
    assert!(metric(&s, "lecr_lexical_index_bytes") > 0.0);
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let topics = studio_topics(&ds, false);
    assert!(topics.len() >= 10);
    let served = recommend(&s, &topics);
    for (tid, _) in &topics {
        assert_eq!(served[tid], predicted[tid], "topic {tid}");
    }
    // One by one, the same.
    for t in topics.iter().take(5) {
        assert_eq!(recommend(&s, std::slice::from_ref(t)), {
            let mut m = HashMap::new();
            m.insert(t.0.clone(), served[&t.0].clone());
            m
        });
    }
    // A new content whose text is the topic's title: found once the lexical index is refitted
    // (the tiny model alone does not rank it first), and gone once removed.
    let (tid, topic) = &topics[0];
    let title = topic["title"].as_str().unwrap();
    let lang = topic["language"].as_str().unwrap();
    let new_id = uuid().replace('-', "");
    let (code, v) = s.post(
        "/stable/embed-content",
        &json!({"resources": [{"id": new_id, "channel_id": uuid(), "title": title,
            "description": "", "text": "", "language": lang}]}),
    );
    assert_eq!(code, 200, "{v}");
    refitted(&s);
    let (code, v) = s.post(
        "/stable/recommend?override_threshold=True&top_k=3",
        &json!({"topics": [topic]}),
    );
    assert_eq!(code, 200, "{v}");
    let top = ids(&v["topics"][0]);
    assert!(top.contains(&new_id), "{top:?}");
    // A cosine is at most 1, so without its lexical similarity the mean would be at most ½.
    let sim = v["topics"][0]["recommendations"][top.iter().position(|i| *i == new_id).unwrap()]
        ["similarity"]
        .as_f64()
        .unwrap();
    assert!(sim > 0.5, "{sim}");
    let (code, _) = s.post("/stable/remove-content", &json!({"ids": [new_id]}));
    assert_eq!(code, 200);
    refitted(&s);
    // The language is back to the contents `predict` knows: the same answers again.
    assert_eq!(recommend(&s, &topics[..1])[tid], predicted[tid]);
}

#[test]
fn a_reranker_trained_with_lexical_reranks_as_predict() {
    let root = tempfile::tempdir().unwrap();
    // Studio-shaped ids, so requests can name the data folder's topics.
    let (data, model) = common::serve_corpus_with(root.path(), true);
    let rr = root.path().join("rr");
    let rr_path = rr.to_str().unwrap();
    common::run_lecr([
        "rerank", "train", "--data", &data, "--fold", "0", "--model", &model, "--model", "lexical",
        "--k", "8", "--trees", "30", "--out", rr_path,
    ]);
    let common::studio::Reranked {
        server: s, topics, ..
    } = common::studio::serve_reranked_as_predict(
        root.path(),
        &data,
        &model,
        rr_path,
        "reranked.csv",
    );
    let with_parent = topics
        .iter()
        .filter(|t| !t.1["ancestors"].as_array().unwrap().is_empty())
        .count();
    assert!(with_parent >= 5, "parents' similarities are compared too");
    drop(s);
    // Served with the retrievers in another order, or without lexical: refused, naming them.
    for bad in [
        vec!["--model", "lexical", "--model", model.as_str()],
        vec!["--model", model.as_str()],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
            .arg("serve")
            .args(&bad)
            .args(["--reranker", rr_path, "--addr", "127.0.0.1:0"])
            .env("LECR_NO_PROGRESS", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?}");
        assert!(err.contains("--model lexical"), "{err}");
    }
}

/// Each saved lexical fit of a store's folder: (path, modified time, bytes).
fn saved_fits(store: &Path) -> Vec<(std::path::PathBuf, std::time::SystemTime, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(store.join("lexical"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let m = std::fs::metadata(&p).unwrap().modified().unwrap();
            let b = std::fs::read(&p).unwrap();
            (p, m, b)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_restart_reads_the_saved_lexical_fits_back_and_refits_a_damaged_one() {
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let store = root.path().join("store");
    let args = [
        "--data",
        &data,
        "--model",
        &model,
        "--model",
        "lexical",
        "--margin",
        "0.18",
        "--store",
        store.to_str().unwrap(),
    ];
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let topics = studio_topics(&ds, false);
    let s = Server::start(&args);
    let first = recommend(&s, &topics);
    assert!(s.terminate().success());
    let saved = saved_fits(&store);
    assert!(!saved.is_empty(), "a fit saved per language");
    // File times have a granularity: a rewrite must be able to show.
    std::thread::sleep(Duration::from_millis(1100));
    let s = Server::start(&args);
    assert_eq!(
        recommend(&s, &topics),
        first,
        "the same answers from fits read back"
    );
    assert!(s.terminate().success());
    let again = saved_fits(&store);
    let times = |v: &[(std::path::PathBuf, std::time::SystemTime, Vec<u8>)]| {
        v.iter().map(|f| (f.0.clone(), f.1)).collect::<Vec<_>>()
    };
    assert_eq!(
        times(&again),
        times(&saved),
        "read back, not fitted and saved again"
    );
    // A damaged file (cut in half, as by a full disk): fitted again, same answers, and
    // saved again whole (a fit is deterministic: the same bytes).
    let (path, _, bytes) = &saved[0];
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    let s = Server::start(&args);
    assert_eq!(
        recommend(&s, &topics),
        first,
        "the same answers after a refit"
    );
    assert!(s.terminate().success());
    assert_eq!(&std::fs::read(path).unwrap(), bytes);
}

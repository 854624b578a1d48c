//! `lecr serve --studio-addr`: Studio's routes on their own listener (no key, as Studio's
//! client sends none), the curator page and its `/api` on `--addr` behind `--api-key`, one
//! engine behind both.

mod common;
use common::server::Server;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An HTTP call; status and JSON body.
fn call(method: &str, url: &str, body: Option<&Value>, key: Option<&str>) -> (u16, Value) {
    let mut req = ureq::request(method, url);
    if let Some(k) = key {
        req = req.set("authorization", &format!("Bearer {k}"));
    }
    let r = match body {
        Some(b) => req
            .set("content-type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    match r {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(c, r)) => (c, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn probability_of(v: &Value, content: &str) -> Option<f64> {
    v["topics"][0]["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(content))
        .map(|r| r["probability"].as_f64().unwrap())
}

#[test]
fn studio_and_curators_on_separate_listeners_share_one_engine() {
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let rr = root.path().join("rr");
    let rr_path = rr.to_str().unwrap();
    common::run_lecr([
        "rerank", "train", "--data", &data, "--fold", "0", "--model", &model, "--k", "12",
        "--trees", "60", "--out", rr_path,
    ]);
    let store = root.path().join("store");
    let s = Server::start(&[
        "--model",
        &model,
        "--data",
        &data,
        "--store",
        store.to_str().unwrap(),
        "--reranker",
        rr_path,
        "--api-key",
        "curators",
        "--studio-addr",
        "127.0.0.1:0",
    ]);
    let studio = s.studio.clone().unwrap();
    let public = s.base.clone();
    assert_ne!(studio, public);

    // Studio's request shapes on the internal listener, with no header at all.
    assert_eq!(
        call("GET", &format!("{studio}/stable/connect"), None, None),
        (200, json!({"status": "OK"}))
    );
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let t = ds.topics.iter().find(|t| t.language == "en").unwrap();
    let (channel, parent) = (uuid(), uuid());
    let studio_topic = |title: &str| {
        json!({"id": uuid(), "channel_id": channel, "title": title, "description": "",
            "language": "en",
            "ancestors": [{"id": parent, "title": "Studio unit", "description": "", "level": 0}]})
    };
    let topic = studio_topic(&t.title);
    let siblings: Vec<Value> = (0..10)
        .map(|i| studio_topic(&format!("sibling {i}")))
        .collect();
    let mut all = vec![topic.clone()];
    all.extend(siblings.iter().cloned());
    let (code, first) = call(
        "POST",
        &format!("{studio}/stable/recommend"),
        Some(&json!({ "topics": all })),
        None,
    );
    assert_eq!(code, 200, "{first}");
    let resource = json!({"resources": [{"id": uuid().replace('-', ""), "title": "new video",
        "description": "", "text": "", "language": "en", "files": null}],
        "metadata": {"channel_id": channel}});
    let (code, v) = call(
        "POST",
        &format!("{studio}/stable/embed-content"),
        Some(&resource),
        None,
    );
    assert_eq!((code, v["added"].clone()), (200, json!(1)), "{v}");

    // The same paths on the public listener do not exist; the page's do not exist on Studio's.
    for (method, path) in [
        ("GET", "/stable/connect"),
        ("POST", "/stable/recommend"),
        ("POST", "/stable/embed-content"),
        ("POST", "/stable/remove-content"),
        ("DELETE", "/stable/content/abc"),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let (code, _) = call(
            method,
            &format!("{public}{path}"),
            body.as_ref(),
            Some("curators"),
        );
        assert_eq!(code, 404, "{method} {path} on the public listener");
    }
    assert_eq!(
        call("GET", &format!("{studio}/api/channels"), None, None).0,
        404
    );
    assert_eq!(call("GET", &format!("{studio}/"), None, None).0, 404);
    // /api needs the key on the public listener; /metrics is on the internal one.
    assert_eq!(
        call("GET", &format!("{public}/api/channels"), None, None).0,
        401
    );
    assert_eq!(
        call(
            "GET",
            &format!("{public}/api/channels"),
            None,
            Some("curators")
        )
        .0,
        200
    );
    assert_eq!(call("GET", &format!("{public}/metrics"), None, None).0, 404);
    let metrics = ureq::get(&format!("{studio}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("lecr_requests_total"));
    for base in [&public, &studio] {
        assert_eq!(call("GET", &format!("{base}/health"), None, None).0, 200);
    }

    // One engine: the topics Studio sent are on the page, and decisions made there count in
    // the reranker's tree context of Studio's next recommend.
    let tid = topic["id"].as_str().unwrap();
    let (code, v) = call(
        "GET",
        &format!("{public}/api/topics/{tid}"),
        None,
        Some("curators"),
    );
    assert_eq!((code, v["origin"].clone()), (200, json!("studio")), "{v}");
    let one = json!({ "topics": [topic] });
    let (_, before) = call(
        "POST",
        &format!("{studio}/stable/recommend?override_threshold=True&top_k=12"),
        Some(&one),
        None,
    );
    let c = before["topics"][0]["recommendations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p0 = probability_of(&before, &c).unwrap();
    for sib in &siblings {
        let (code, v) = call(
            "POST",
            &format!("{public}/api/feedback"),
            Some(&json!({"topic_id": sib["id"], "content_id": c, "decision": "accept"})),
            Some("curators"),
        );
        assert_eq!(code, 200, "{v}");
    }
    let (_, after) = call(
        "POST",
        &format!("{studio}/stable/recommend?override_threshold=True&top_k=12"),
        Some(&one),
        None,
    );
    let p1 = probability_of(&after, &c).unwrap();
    assert!(
        (p1 - p0).abs() > 1e-6,
        "ten siblings accepting {c} should move its probability ({p0} → {p1})"
    );

    // SIGTERM stops both listeners.
    assert!(s.terminate().success());
    assert!(ureq::get(&format!("{studio}/health")).call().is_err());

    // A port that cannot be bound stops the process, naming the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["serve", "--model", &model, "--addr", "127.0.0.1:0"])
        .args(["--studio-addr", &addr])
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr) && err.contains("--studio-addr"),
        "{err}"
    );
}

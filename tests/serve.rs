//! `lecr serve` driven over HTTP on a free loopback port, with the request shapes Kolibri
//! Studio's client sends: recommend (as Python encodes the flag), embed-content in both shapes,
//! invalid bodies, replacement, removal, a kill -9 and restart that keeps the index, a model
//! change refused, the bearer token, and equality with `lecr predict`.

mod common;
use common::server::{ids, Server};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn topic(title: &str, lang: &str) -> Value {
    json!({"id": uuid(), "channel_id": uuid(), "title": title, "description": "", "language": lang})
}

fn metric(s: &Server, name: &str) -> f64 {
    s.text("/metrics")
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[test]
fn studio_contract_store_and_lifecycle() {
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let store = root.path().join("store");
    let st = store.to_str().unwrap();
    let s = Server::start(&["--model", &model, "--data", &data, "--store", st]);
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let n_en = ds.contents.iter().filter(|c| c.language == "en").count() as f64;
    assert_eq!(metric(&s, "lecr_index_contents{language=\"en\"}"), n_en);
    // `/metrics` names the kernels that run (this process has the server's CPU and LECR_ISA).
    let info = s
        .text("/metrics")
        .lines()
        .find(|l| l.starts_with("lecr_kernels_info{"))
        .expect("lecr_kernels_info")
        .to_string();
    let level = lecr::kernels::isa::active().name();
    let kernel = lecr::kernels::int8::Int8Kernel::detect().name();
    assert!(info.contains(&format!("isa=\"{level}\"")), "{info}");
    assert!(
        info.contains(&format!("int8_kernel=\"{kernel}\"")),
        "{info}"
    );
    let bf16 = lecr::kernels::bf16::Bf16Kernel::detect().name();
    assert!(info.contains(&format!("bf16_kernel=\"{bf16}\"")), "{info}");
    assert!(info.ends_with(" 1"), "{info}");

    // Recommend as Studio sends it: `override_threshold=False`, topics in request order.
    let title = ds.topics[ds.topic_index[&ds.sample_topics[0]]]
        .title
        .clone();
    let body = json!({"topics": [topic(&title, "en"), topic("x", "es")], "metadata": {"channel_id": uuid()}});
    let (code, v) = s.post("/stable/recommend?override_threshold=False", &body);
    assert_eq!(code, 200, "{v}");
    let topics = v["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 2);
    assert_eq!(topics[0]["id"], body["topics"][0]["id"]);
    assert_eq!(topics[1]["id"], body["topics"][1]["id"]);
    for (t, lang) in topics.iter().zip(["en", "es"]) {
        let recs = t["recommendations"].as_array().unwrap();
        assert!(!recs.is_empty() && recs.len() <= 128);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r["rank"], json!(i + 1));
            let c = &ds.contents[ds.content_index[r["id"].as_str().unwrap()]];
            assert_eq!(c.language, lang, "only contents of the topic's language");
            assert_eq!(r["title"], json!(c.title));
        }
        let sims: Vec<f64> = recs
            .iter()
            .map(|r| r["similarity"].as_f64().unwrap())
            .collect();
        assert!(sims.windows(2).all(|w| w[0] >= w[1]), "best first");
        // The dynamic threshold: everything within margin 0.18 of the best.
        assert!(sims.iter().all(|&x| x >= sims[0] - 0.18 * sims[0] - 1e-6));
    }
    // With the override, exactly top_k (default 20).
    let (code, v) = s.post("/stable/recommend?override_threshold=True", &body);
    assert_eq!(code, 200);
    assert_eq!(ids(&v["topics"][0]).len(), 20);
    let (_, v5) = s.post("/stable/recommend?override_threshold=true&top_k=5", &body);
    assert_eq!(ids(&v5["topics"][0]), ids(&v["topics"][0])[..5]);

    // Invalid bodies: rejected, field named, nothing changes.
    let bad = |path: &str, raw: &str, want_code: u16, want_field: &str| {
        let (code, v) = s.post_raw(path, raw, None);
        assert_eq!(code, want_code, "{path} {raw}: {v}");
        assert_eq!(v["field"], json!(want_field), "{path} {raw}: {v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    };
    let mut t = topic("a", "en");
    bad("/stable/recommend", "{not json", 400, "/");
    bad("/stable/recommend", "{}", 422, "/");
    t["id"] = json!("not-a-uuid");
    bad(
        "/stable/recommend",
        &json!({"topics": [t]}).to_string(),
        422,
        "/topics/0/id",
    );
    let mut t = topic("a", "zz-unknown");
    bad(
        "/stable/recommend",
        &json!({"topics": [topic("a", "en"), t.clone()]}).to_string(),
        422,
        "/topics/1/language",
    );
    t["language"] = json!("en");
    t["ancestors"] = json!([{"id": uuid(), "title": "p", "description": "", "level": "one"}]);
    bad(
        "/stable/recommend",
        &json!({"topics": [t]}).to_string(),
        422,
        "/topics/0/ancestors/0/level",
    );
    bad(
        "/stable/recommend?override_threshold=maybe",
        &json!({"topics": []}).to_string(),
        400,
        "?override_threshold",
    );
    bad(
        "/stable/embed-content",
        &json!({"resources": [{"title": "no id"}]}).to_string(),
        422,
        "/resources/0",
    );
    bad(
        "/stable/embed-content",
        &json!({"resources": [{"id": uuid(), "title": "t", "language": "xx"}]}).to_string(),
        422,
        "/resources/0/language",
    );
    bad("/stable/remove-content", "{\"id\": 1}", 422, "/ids");

    // embed-content, Studio's shape: no channel_id / content_id / channel_version, language
    // null, files null; the channel comes from metadata. Stored, not recommendable.
    let new_id = uuid().replace('-', "");
    let channel = uuid();
    let studio = json!({"resources": [{"id": new_id, "title": title, "description": "",
        "text": "", "language": null, "files": null}], "metadata": {"channel_id": channel}});
    let (code, v) = s.post("/stable/embed-content", &studio);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["added"].as_u64(), v["embedded"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(metric(&s, "lecr_contents_without_language"), 1.0);
    // Sent again with a language (text unchanged): moves into the index without re-embedding.
    let mut with_lang = studio.clone();
    with_lang["resources"][0]["language"] = json!("en");
    with_lang["resources"][0]["files"] =
        json!([{"url": "http://localhost:1/x.mp4", "preset": "high_res_video"}]);
    let (code, v) = s.post("/stable/embed-content", &with_lang);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["replaced"].as_u64(), v["embedded"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(metric(&s, "lecr_contents_without_language"), 0.0);
    let (_, again) = s.post("/stable/embed-content", &with_lang);
    assert_eq!(again["unchanged"], json!(1));
    // Its title equals the topic's: it is now the top hit, with the id exactly as sent.
    let (_, v) = s.post("/stable/recommend?override_threshold=False", &body);
    let top = &v["topics"][0]["recommendations"][0];
    assert_eq!(top["id"], json!(new_id));
    assert_eq!(top["channel_id"], json!(channel));
    assert_eq!(top["kind"], json!("video"));
    // The schema's shape, replacing it with another text: re-embedded, no longer on top.
    let schema_shape = json!({"resources": [{"id": new_id, "channel_id": channel, "title": "zzz qqq",
        "description": "other words", "content_id": uuid(), "channel_version": 2, "language": "en"}]});
    let (code, v) = s.post("/stable/embed-content", &schema_shape);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["replaced"].as_u64(), v["embedded"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, v) = s.post("/stable/recommend?override_threshold=True", &body);
    let hit = v["topics"][0]["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(new_id))
        .cloned();
    if let Some(h) = hit {
        assert_eq!(h["title"], json!("zzz qqq"));
        assert_ne!(h["rank"], json!(1));
    }
    // Empty resources are skipped with a reason; duplicates: the last one wins.
    let dup = json!({"resources": [
        {"id": uuid(), "title": "", "description": "", "language": "en"},
        {"id": new_id, "title": "first", "language": "en"},
        {"id": new_id, "title": title, "language": "en", "channel_id": channel}]});
    let (_, v) = s.post("/stable/embed-content", &dup);
    let reasons: Vec<u64> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    assert_eq!(reasons, [0, 1], "{v}");

    // Survives kill -9: a restart without --data serves the same answers, embedding nothing.
    let (_, before) = s.post("/stable/recommend?override_threshold=True", &body);
    s.kill9();
    let s = Server::start(&["--model", &model, "--store", st]);
    let (_, after) = s.post("/stable/recommend?override_threshold=True", &body);
    assert_eq!(ids(&before["topics"][0]), ids(&after["topics"][0]));
    assert_eq!(ids(&after["topics"][0])[0], new_id);
    assert_eq!(
        metric(&s, "lecr_index_contents{language=\"en\"}"),
        n_en + 1.0
    );

    // Removal: by batch and by id; unknown ids are reported.
    let (code, v) = s.post("/stable/remove-content", &json!({"ids": [new_id, "nope"]}));
    assert_eq!(code, 200);
    assert_eq!(v, json!({"removed": 1, "unknown": ["nope"]}));
    let (_, v) = s.post("/stable/recommend?override_threshold=True", &body);
    assert!(!ids(&v["topics"][0]).contains(&new_id));
    let victim = ids(&v["topics"][0])[0].clone();
    let del = |id: &str| match ureq::delete(&format!("{}/stable/content/{id}", s.base)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(del(&victim), 200);
    assert_eq!(del(&victim), 404);
    let (_, v) = s.post("/stable/recommend?override_threshold=True", &body);
    assert!(!ids(&v["topics"][0]).contains(&victim));

    // SIGTERM: a clean exit.
    assert!(s.terminate().success());

    // Another model (here: the same weights in int8) refuses the store...
    let out = Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args([
            "serve",
            "--model",
            &model,
            "--int8",
            "--store",
            st,
            "--addr",
            "127.0.0.1:0",
        ])
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--reembed"), "{err}");
    // ...unless asked to re-embed.
    let s = Server::start(&["--model", &model, "--int8", "--store", st, "--reembed"]);
    let (code, v) = s.post("/stable/recommend?override_threshold=False", &body);
    assert_eq!(code, 200);
    assert!(!ids(&v["topics"][0]).is_empty());
}

#[test]
fn api_key_guards_studio_endpoints_and_the_page_data() {
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let s = Server::spawn(&[
        "--model",
        &model,
        "--data",
        &data,
        "--api-key",
        "sekrit",
        "--max-body-mib",
        "1",
    ]);
    let t0 = Instant::now();
    while s
        .try_get("/health")
        .map(|(_, v)| v["phase"] != json!("ready"))
        .unwrap_or(true)
    {
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.try_get("/stable/connect").unwrap().0, 401);
    let connect: Value = ureq::get(&format!("{}/stable/connect", s.base))
        .set("authorization", "Bearer sekrit")
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(connect, json!({"status": "OK"}));
    let body = json!({"topics": [topic("a", "en")]}).to_string();
    assert_eq!(s.post_raw("/stable/recommend", &body, None).0, 401);
    assert_eq!(s.post_raw("/stable/recommend", &body, Some("wrong")).0, 401);
    assert_eq!(
        s.post_raw("/stable/recommend", &body, Some("sekrit")).0,
        200
    );
    // The page's data is guarded too; its files are not (they hold no data).
    assert_eq!(s.try_get("/api/channels").unwrap().0, 401);
    let fb = json!({"topic_id": "a", "content_id": "b", "decision": "accept"}).to_string();
    assert_eq!(s.post_raw("/api/feedback", &fb, Some("wrong")).0, 401);
    let r = ureq::get(&format!("{}/api/channels", s.base))
        .set("authorization", "Bearer sekrit")
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.text("/").contains("key-form"));
    assert!(s.text("/page/app.js").contains("Bearer"));
    // Errors from below the handlers are JSON too: too large, unknown route, wrong method.
    let big = "x".repeat((1 << 20) + 1024);
    let (code, v) = s.post_raw("/stable/recommend", &big, Some("sekrit"));
    assert_eq!(code, 413);
    assert!(v["error"].as_str().unwrap().contains("max-body-mib"), "{v}");
    let (code, v) = s.try_get("/nowhere").unwrap();
    assert_eq!((code, v["error"].is_string()), (404, true), "{v}");
    let r = ureq::get(&format!("{}/stable/recommend", s.base))
        .set("authorization", "Bearer sekrit")
        .call();
    match r {
        Err(ureq::Error::Status(405, r)) => {
            let v: Value = r.into_json().unwrap();
            assert!(v["error"].is_string(), "{v}");
        }
        other => panic!("expected 405, got {other:?}"),
    }
}

#[test]
fn recommend_equals_predict() {
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let sub = root.path().join("submission.csv");
    let sub_path = sub.to_str().unwrap();
    common::run_lecr([
        "predict", "--data", &data, "--model", &model, "--margin", "0.18", "--out", sub_path,
    ]);
    let predicted: HashMap<String, HashSet<String>> = std::fs::read_to_string(&sub)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (t, cs) = l.split_once(',').unwrap();
            (t.to_string(), cs.split(' ').map(str::to_string).collect())
        })
        .collect();
    let s = Server::start(&["--model", &model, "--data", &data, "--margin", "0.18"]);
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let index: HashMap<String, usize> = ds
        .topics
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let forest = lecr::data::tree::Forest::build(&ds.topics, &index);
    // Studio-shaped topics (new UUIDs) with their ancestors, in one request and one by one.
    let mut topics = Vec::new();
    let mut kaggle_ids = Vec::new();
    for tid in &ds.sample_topics {
        let i = index[tid];
        let t = &ds.topics[i];
        let ancestors: Vec<Value> = forest.breadcrumb(i)[1..]
            .iter()
            .map(|&j| {
                json!({"id": uuid(), "title": ds.topics[j].title,
                "description": ds.topics[j].description, "level": ds.topics[j].level})
            })
            .collect();
        topics.push(json!({"id": uuid(), "channel_id": uuid(), "title": t.title,
            "description": t.description, "language": t.language, "ancestors": ancestors}));
        kaggle_ids.push(tid.clone());
    }
    assert!(topics.len() >= 10);
    let (code, v) = s.post(
        "/stable/recommend?override_threshold=False",
        &json!({ "topics": topics }),
    );
    assert_eq!(code, 200, "{v}");
    let one_by_one: Vec<Value> = topics
        .iter()
        .take(10)
        .map(|t| s.post("/stable/recommend", &json!({"topics": [t]})).1["topics"][0].clone())
        .collect();
    for (k, (got, tid)) in v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&kaggle_ids)
        .enumerate()
    {
        let got: HashSet<String> = ids(got).into_iter().collect();
        assert_eq!(&got, &predicted[tid], "topic {tid}");
        if k < one_by_one.len() {
            let alone: HashSet<String> = ids(&one_by_one[k]).into_iter().collect();
            assert_eq!(alone, got, "topic {tid} alone");
        }
    }
}

#[test]
fn reranker_orders_recommendations_by_probability() {
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let rr = root.path().join("rr");
    let rr_path = rr.to_str().unwrap();
    common::run_lecr([
        "rerank", "train", "--data", &data, "--fold", "0", "--model", &model, "--k", "12",
        "--trees", "40", "--out", rr_path,
    ]);
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(rr.join("reranker.json")).unwrap()).unwrap();
    let (threshold, margin) = (
        meta["selection"]["threshold"].as_f64().unwrap() as f32,
        meta["selection"]["margin"].as_f64().unwrap() as f32,
    );
    let s = Server::start(&["--model", &model, "--data", &data, "--reranker", rr_path]);
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let with_parent = ds
        .topics
        .iter()
        .filter(|t| t.parent.is_some())
        .take(6)
        .map(|t| {
            let p = ds.topic(t.parent.as_deref().unwrap()).unwrap();
            json!({"id": uuid(), "channel_id": uuid(), "title": t.title,
                "description": t.description, "language": t.language,
                "ancestors": [{"id": uuid(), "title": p.title, "description": p.description,
                    "level": 0}]})
        })
        .collect::<Vec<_>>();
    let (code, v) = s.post("/stable/recommend", &json!({ "topics": with_parent }));
    assert_eq!(code, 200, "{v}");
    for t in v["topics"].as_array().unwrap() {
        let recs = t["recommendations"].as_array().unwrap();
        assert!(!recs.is_empty() && recs.len() <= 12, "{t}");
        let probs: Vec<f32> = recs
            .iter()
            .map(|r| r["probability"].as_f64().unwrap() as f32)
            .collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
        assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)));
        // The saved selection: every kept one reaches the cut, except the best.
        let cut = threshold.min((1.0 - margin) * probs[0]);
        assert!(probs[1..].iter().all(|&p| p >= cut), "{probs:?} cut {cut}");
        let ranks: Vec<u64> = recs.iter().map(|r| r["rank"].as_u64().unwrap()).collect();
        assert_eq!(ranks, (1..=recs.len() as u64).collect::<Vec<_>>());
    }
    // top_k under the override: exactly that many of the K candidates, same order.
    let (code, v5) = s.post(
        "/stable/recommend?override_threshold=True&top_k=5",
        &json!({ "topics": [with_parent[0]] }),
    );
    assert_eq!(code, 200);
    let top5 = ids(&v5["topics"][0]);
    assert_eq!(top5.len(), 5);
    assert_eq!(
        top5[..1],
        ids(&v["topics"][0])[..1],
        "same best with and without the override"
    );
    drop(s);
    // A reranker over lexical candidates cannot serve a model's index.
    let lex = root.path().join("rr-lex");
    common::run_lecr([
        "rerank",
        "train",
        "--data",
        &data,
        "--fold",
        "0",
        "--model",
        "lexical",
        "--k",
        "12",
        "--trees",
        "20",
        "--out",
        lex.to_str().unwrap(),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args([
            "serve",
            "--model",
            &model,
            "--reranker",
            lex.to_str().unwrap(),
        ])
        .args(["--addr", "127.0.0.1:0"])
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("lecr rerank train --model"), "{err}");
}

#[test]
fn page_api_remembers_studio_topics_keeps_decisions_and_exports_them() {
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let store = root.path().join("store");
    let st = store.to_str().unwrap();
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let s = Server::start(&["--model", &model, "--data", &data, "--store", st]);
    // The page is served, and the data folder's channels are listed with their trees.
    assert!(s.text("/").contains("<title>lecr"));
    assert!(s.text("/page/app.js").contains("loadChannels"));
    let (code, ch) = s.try_get("/api/channels").unwrap();
    assert_eq!(code, 200);
    let t = ds.topics.iter().find(|t| t.parent.is_some()).unwrap();
    let listed: Vec<&str> = ch["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&t.channel.as_str()));
    let (_, tree) = s
        .try_get(&format!("/api/channels/{}/tree", t.channel))
        .unwrap();
    let nodes = tree["topics"].as_array().unwrap();
    let pos = |id: &str| nodes.iter().position(|n| n["id"] == id).unwrap();
    assert!(
        pos(t.parent.as_deref().unwrap()) < pos(&t.id),
        "parents first"
    );
    assert_eq!(s.try_get("/api/channels/nope/tree").unwrap().0, 404);

    // A topic's recommendations, then decisions: bad ones are refused with the field.
    let (code, recs) = s
        .try_get(&format!("/api/topics/{}/recommendations?top_k=5", t.id))
        .unwrap();
    assert_eq!(code, 200, "{recs}");
    let items = recs["recommendations"].as_array().unwrap();
    assert!(items.len() >= 5 && recs["selected"].as_u64().unwrap() >= 1);
    let c1 = items[0]["id"].as_str().unwrap().to_string();
    let c2 = items[1]["id"].as_str().unwrap().to_string();
    let fb = |topic: &str, content: &str, decision: &str| {
        s.post(
            "/api/feedback",
            &json!({"topic_id": topic, "content_id": content, "decision": decision}),
        )
    };
    assert_eq!(fb(&t.id, &c1, "accept").0, 200);
    assert_eq!(fb(&t.id, &c2, "reject").0, 200);
    let (code, v) = fb(&t.id, &c1, "maybe");
    assert_eq!((code, v["field"].as_str()), (422, Some("/decision")));
    assert_eq!(fb("no-topic", &c1, "accept").1["field"], "/topic_id");
    assert_eq!(fb(&t.id, "no-content", "accept").0, 404);
    let (_, topic) = s.try_get(&format!("/api/topics/{}", t.id)).unwrap();
    assert_eq!(topic["decisions"][&c1], "accept");
    assert_eq!(topic["decisions"][&c2], "reject");
    let (code, v) = s.post(
        "/api/recommend-text",
        &json!({"text": "", "language": "en"}),
    );
    assert_eq!((code, v["field"].as_str()), (422, Some("/text")));

    // A Studio topic with its ancestors becomes browsable under its channel.
    let channel = uuid();
    let (root_id, topic_id) = (uuid(), uuid());
    let (code, _) = s.post(
        "/stable/recommend",
        &json!({"topics": [{"id": topic_id, "channel_id": channel, "title": t.title,
            "description": "", "language": t.language,
            "ancestors": [{"id": root_id, "title": "Studio root", "description": "", "level": 0}]}]}),
    );
    assert_eq!(code, 200);
    drop(s);
    // After a restart: the Studio topics and the decisions are still there.
    let s = Server::start(&["--model", &model, "--data", &data, "--store", st]);
    let (code, tree) = s.try_get(&format!("/api/channels/{channel}/tree")).unwrap();
    assert_eq!(code, 200, "{tree}");
    let ids: Vec<&str> = tree["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [root_id.as_str(), topic_id.as_str()]);
    let (_, topic) = s.try_get(&format!("/api/topics/{}", t.id)).unwrap();
    assert_eq!(topic["decisions"][&c1], "accept");
    // A decision on the Studio topic.
    let (code, v) = s.post(
        "/api/feedback",
        &json!({"topic_id": topic_id, "content_id": c1, "decision": "accept"}),
    );
    assert_eq!(code, 200, "{v}");
    drop(s);

    // The export: accepted links in the Kaggle layout, rejected ones apart, the whole log.
    let out = root.path().join("export");
    common::run_lecr([
        "feedback",
        "export",
        "--store",
        st,
        "--out",
        out.to_str().unwrap(),
    ]);
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let mut accepted = [format!("{},{c1}", t.id), format!("{topic_id},{c1}")];
    accepted.sort();
    assert_eq!(
        read("correlations.csv"),
        format!("topic_id,content_ids\n{}\n{}\n", accepted[0], accepted[1])
    );
    assert_eq!(
        read("rejected.csv"),
        format!("topic_id,content_ids\n{},{c2}\n", t.id)
    );
    assert_eq!(read("decisions.csv").lines().count(), 4);
    // The Studio topic with its ancestor, and the decided contents, in the data layout (the
    // data folder's own topic is not repeated).
    let topics = lecr::data::load::read_topics_file(&out.join("topics.csv")).unwrap();
    let mut got: Vec<_> = topics
        .iter()
        .map(|x| (x.id.as_str(), x.parent.as_deref(), x.level, x.has_content))
        .collect();
    got.sort();
    let mut want = vec![
        (root_id.as_str(), None, Some(0), false),
        (topic_id.as_str(), Some(root_id.as_str()), Some(1), true),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(topics
        .iter()
        .all(|x| x.channel == channel && x.language == t.language));
    let contents = lecr::data::load::read_contents_file(&out.join("content.csv")).unwrap();
    let titles: Vec<(&str, &str)> = contents
        .iter()
        .map(|c| (c.id.as_str(), c.title.as_str()))
        .collect();
    let mut want: Vec<(&str, &str)> = [&c1, &c2]
        .iter()
        .map(|id| (id.as_str(), ds.content(id).unwrap().title.as_str()))
        .collect();
    want.sort();
    assert_eq!(titles, want);
}

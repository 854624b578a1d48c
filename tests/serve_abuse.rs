//! Hostile and heavy requests against a real `lecr serve` on loopback, one check per finding of
//! the service's security review: each sends the request and asserts the refusal (status, JSON
//! shape, field) and that the server's state and memory stayed within a stated bound; a long
//! publish does not stall `/health` or a recommend; a full queue answers 503 with Retry-After
//! and recovers; a 408 leaves the store unchanged; cross-site and foreign-Host requests are
//! refused; slow headers and a half-sent request cannot hold the server or its shutdown.

mod common;
use common::server::Server;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn topic(title: &str) -> Value {
    json!({"id": uuid(), "channel_id": uuid(), "title": title, "description": "", "language": "en"})
}

/// A raw HTTP/1.1 exchange (to set Host, Origin and Content-Type freely): status, headers
/// (lower-cased names) and the JSON body.
fn raw(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Raw {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn metric(s: &Server, line_start: &str) -> f64 {
    s.text("/metrics")
        .lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// Peak resident memory of a process, in MiB (Linux).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb / 1024.0
}

fn store_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn expect(r: (u16, Value), code: u16, field: &str) {
    assert_eq!(r.0, code, "{}", r.1);
    assert_eq!(r.1["field"], json!(field), "{}", r.1);
    assert!(
        r.1["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        r.1
    );
}

#[test]
fn oversized_and_cross_site_requests_are_refused_and_state_stays_bounded() {
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::split_corpus_and_tiny_model(
        root.path(),
        &lecr::data::synth::SynthConfig {
            topics: 120,
            contents: 240,
            languages: vec!["en".into()],
            seed: 3,
            ..Default::default()
        },
        1,
        "model",
    );
    let store = root.path().join("store");
    let st = store.to_str().unwrap();
    let s = Server::start(&["--model", &model, "--data", &data, "--store", st]);
    let rec = "/stable/recommend";

    // 1. Counts: topics per request, ancestors per topic, resources per embed-content.
    let many: Vec<Value> = (0..101).map(|i| topic(&format!("t{i}"))).collect();
    expect(s.post(rec, &json!({ "topics": many })), 413, "/topics");
    let anc = |n: usize, title_len: usize| -> Vec<Value> {
        (0..n)
            .map(|l| json!({"id": uuid(), "title": "w".repeat(title_len), "description": "", "level": l}))
            .collect()
    };
    let mut t = topic("deep");
    t["ancestors"] = json!(anc(65, 10));
    expect(
        s.post(rec, &json!({"topics": [t]})),
        413,
        "/topics/0/ancestors",
    );
    let resources: Vec<Value> = (0..1001)
        .map(|_| json!({"id": uuid(), "title": "x", "language": "en"}))
        .collect();
    expect(
        s.post("/stable/embed-content", &json!({ "resources": resources })),
        413,
        "/resources",
    );
    // A deep tree within the limits, with long titles: accepted, and what it adds to the store
    // grows with its depth (64 records of at most a few KB), not with its square.
    let before = store_bytes(&store);
    let mut t = topic("deep");
    t["ancestors"] = json!(anc(64, 4000));
    let (code, v) = s.post(rec, &json!({"topics": [t]}));
    assert_eq!(code, 200, "{v}");
    let grown = store_bytes(&store).saturating_sub(before);
    assert!(grown < 4 << 20, "the store grew by {grown} bytes");

    // 2. Lengths and values: a title over --max-text-chars, an absurd level, a long free text.
    let mut t = topic(&"x".repeat(16_385));
    expect(
        s.post(rec, &json!({"topics": [t.clone()]})),
        422,
        "/topics/0/title",
    );
    t["title"] = json!("fine");
    t["ancestors"] = json!([{"id": uuid(), "title": "a", "description": "", "level": 1u64 << 40}]);
    expect(
        s.post(rec, &json!({"topics": [t]})),
        422,
        "/topics/0/ancestors/0/level",
    );
    let text = json!({"text": "y ".repeat(50_000), "language": "en"});
    expect(s.post("/api/recommend-text", &text), 422, "/text");
    // A resource with a description over the limit is skipped with the reason; the rest of
    // Studio's batch is stored.
    let (long, ok) = (uuid(), uuid());
    let (code, v) = s.post(
        "/stable/embed-content",
        &json!({"resources": [
            {"id": long, "title": "t", "description": "d".repeat(20_000), "language": "en"},
            {"id": ok, "title": "a fine resource", "language": "en"}]}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["added"], json!(1), "{v}");
    assert_eq!(v["skipped"][0]["id"], json!(long));
    assert!(v["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("--max-text-chars"));
    // remove-content counts a repeated id once.
    let (code, v) = s.post("/stable/remove-content", &json!({"ids": [ok, ok, "nope"]}));
    assert_eq!(code, 200);
    assert_eq!(v, json!({"removed": 1, "unknown": ["nope"]}));
    // Overrides are 400 with the field on Studio's routes and the page's alike; a decision's
    // margin is checked.
    expect(
        s.post(&format!("{rec}?top_k=0"), &json!({"topics": [topic("a")]})),
        400,
        "?top_k",
    );
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let tid = &ds.topics[0].id;
    expect(
        s.try_get(&format!("/api/topics/{tid}/recommendations?margin=7"))
            .unwrap(),
        400,
        "?margin",
    );
    let cid = &ds.contents[0].id;
    expect(
        s.post(
            "/api/feedback",
            &json!({"topic_id": tid, "content_id": cid, "decision": "accept", "margin": 2.5}),
        ),
        422,
        "/margin",
    );

    // 3. Cross-site writes: a form-like body, a foreign origin, a foreign Host are refused; the
    // page's own origin is not.
    let fb = json!({"topic_id": tid, "content_id": cid, "decision": "accept"}).to_string();
    let addr = s.base.trim_start_matches("http://").to_string();
    let plain = raw(
        &s.base,
        "POST",
        "/api/feedback",
        &[("Content-Type", "text/plain")],
        &fb,
    );
    assert_eq!(plain.status, 415, "{plain:?}");
    assert!(plain.body["error"].is_string());
    let json_ct = ("Content-Type", "application/json");
    for path in [
        "/api/feedback",
        "/stable/embed-content",
        "/stable/remove-content",
    ] {
        let r = raw(
            &s.base,
            "POST",
            path,
            &[json_ct, ("Origin", "http://evil.example")],
            &fb,
        );
        assert_eq!(r.status, 403, "{path}: {r:?}");
    }
    let same = format!("http://{addr}");
    let r = raw(
        &s.base,
        "POST",
        "/api/feedback",
        &[json_ct, ("Origin", &same)],
        &fb,
    );
    assert_eq!(r.status, 200, "{r:?}");
    for path in ["/api/channels", "/stable/connect", "/"] {
        let r = raw(&s.base, "GET", path, &[("Host", "evil.example:8000")], "");
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert!(r.body["error"].as_str().unwrap().contains("--allow-host"));
    }
    let r = raw(&s.base, "GET", "/health", &[("Host", "10.0.0.7:8000")], "");
    assert_eq!(r.status, 200, "probes may use any Host: {r:?}");
    // The page's protection headers.
    let page = raw(&s.base, "GET", "/", &[], "");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("frame-ancestors 'none'")));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    // Every refusal was counted.
    assert!(
        metric(
            &s,
            "lecr_requests_total{endpoint=\"/api/feedback\",status=\"415\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &s,
            "lecr_requests_total{endpoint=\"/stable/recommend\",status=\"413\"}"
        ) >= 2.0
    );

    let peak = peak_rss_mib(s.child.id());
    println!("peak RSS of the server under the abuse requests: {peak:.0} MiB");
    assert!(peak < 1024.0, "{peak} MiB");
    drop(s);

    // 4. An empty key is an error, not "no key".
    let out = Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["serve", "--model", &model, "--addr", "127.0.0.1:0"])
        .env("LECR_API_KEY", "")
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

/// Resources with distinct texts of about 80 tokens (so embedding them takes real time).
fn resources(n: usize, tag: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"id": uuid(), "title": format!("{tag} lesson {i} on fractions and decimals"),
                "description": format!(
                    "worked examples number {i} with exercises {tag}: {}",
                    "adding and subtracting fractions with unlike denominators, ".repeat(6)
                ),
                "language": "en"})
        })
        .collect()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t0 = Instant::now();
    let out = f();
    (out, t0.elapsed())
}

#[test]
fn a_long_publish_does_not_stall_others_and_a_full_queue_recovers() {
    let model = common::minilm_dir();
    let model = model.to_str().unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let s = Server::start(&[
        "--model",
        model,
        "--store",
        store.to_str().unwrap(),
        "--max-queue",
        "24",
    ]);
    let (code, v) = s.post(
        "/stable/embed-content",
        &json!({"resources": resources(16, "seed")}),
    );
    assert_eq!(code, 200, "{v}");
    let body = json!({"topics": [topic("fractions")]});
    let (quiet, quiet_t) = timed(|| s.post("/stable/recommend", &body));
    assert_eq!(quiet.0, 200);

    // A publish of 600 resources (tens of seconds of embedding on 2 cores) in the background.
    let base = s.base.clone();
    let publish = std::thread::spawn(move || {
        let r = ureq::post(&format!("{base}/stable/embed-content"))
            .set("content-type", "application/json")
            .send_string(&json!({"resources": resources(600, "bulk")}).to_string())
            .unwrap();
        r.into_json::<Value>().unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let (mut worst_health, mut worst_rec) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..5 {
        let ((code, _), t) = timed(|| s.try_get("/health").unwrap());
        assert_eq!(code, 200);
        worst_health = worst_health.max(t);
        let ((code, v), t) = timed(|| s.post("/stable/recommend", &body));
        assert_eq!(code, 200, "{v}");
        worst_rec = worst_rec.max(t);
    }
    assert!(
        !publish.is_finished(),
        "the publish should still be running"
    );
    println!(
        "quiet recommend {quiet_t:?}; while publishing: worst /health {worst_health:?}, worst \
         recommend {worst_rec:?}"
    );
    assert!(worst_health < Duration::from_secs(1), "{worst_health:?}");
    assert!(worst_rec < Duration::from_secs(3), "{worst_rec:?}");

    // A burst of large recommends while the publish runs: the queue (24 texts) refuses what
    // does not fit at once, with Retry-After and the JSON shape.
    let burst: Vec<_> = (0..12)
        .map(|i| {
            let base = s.base.clone();
            std::thread::spawn(move || {
                let topics: Vec<Value> =
                    (0..10).map(|k| topic(&format!("burst {i} {k}"))).collect();
                raw(
                    &base,
                    "POST",
                    "/stable/recommend",
                    &[("Content-Type", "application/json")],
                    &json!({ "topics": topics }).to_string(),
                )
            })
        })
        .collect();
    let answers: Vec<Raw> = burst.into_iter().map(|t| t.join().unwrap()).collect();
    let refused: Vec<&Raw> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(
        !refused.is_empty(),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(answers.iter().all(|r| r.status == 200 || r.status == 503));
    for r in &refused {
        let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "{r:?}");
        assert!(
            r.body["error"].as_str().unwrap().contains("overloaded"),
            "{r:?}"
        );
    }
    let v = publish.join().unwrap();
    assert_eq!(v["added"], json!(600), "{v}");
    // Recovered: the queue is empty again and work is taken.
    let (code, _) = s.post("/stable/recommend", &body);
    assert_eq!(code, 200);
    assert!(
        metric(
            &s,
            "lecr_requests_total{endpoint=\"/stable/recommend\",status=\"503\"}"
        ) >= 1.0
    );
}

#[test]
fn a_timed_out_write_changes_nothing_and_slow_clients_cannot_hold_the_server() {
    let model = common::minilm_dir();
    let model = model.to_str().unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let st = store.to_str().unwrap();
    let s = Server::start(&[
        "--model",
        model,
        "--store",
        st,
        "--timeout-s",
        "2",
        "--header-timeout-s",
        "1",
        "--shutdown-timeout-s",
        "2",
    ]);
    // 400 resources take far longer than 2 s to embed: 408, in the JSON shape, counted.
    let batch = json!({"resources": resources(400, "late")});
    let (code, v) = s.post("/stable/embed-content", &batch);
    assert_eq!(code, 408, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("nothing was changed"),
        "{v}"
    );
    assert_eq!(
        metric(
            &s,
            "lecr_requests_total{endpoint=\"/stable/embed-content\",status=\"408\"}"
        ),
        1.0
    );
    // The cancelled work is dropped, not finished later: the queue drains and nothing is stored.
    let t0 = Instant::now();
    while s.try_get("/health").unwrap().1["queued"] != json!(0) {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let probe = json!({"topics": [topic("late lesson 3 on fractions and decimals")]});
    let (code, v) = s.post("/stable/recommend?override_threshold=True", &probe);
    assert_eq!(code, 200);
    assert_eq!(v["topics"][0]["recommendations"], json!([]), "{v}");

    // A client that never finishes its headers is cut off after --header-timeout-s.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // A half-sent request does not hold SIGTERM past --shutdown-timeout-s.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(
        format!(
            "POST /stable/recommend HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n{{\"topics\""
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(s.terminate().success());
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    drop(half);
    // Nothing of the cancelled publish reached the store.
    let n = lecr::store::Store::open_existing(&store)
        .unwrap()
        .count()
        .unwrap();
    assert_eq!(n, 0);
}

//! Two `lecr serve` replicas over one PostgreSQL store (a throwaway cluster started here):
//! what one commits, the other serves within a second; a replica killed mid-write leaves no
//! partial rows; the database going away and coming back under a running replica gives 503s
//! on writes meanwhile (reads go on) and recovers without a restart; export and training read
//! the URL.

mod common;
use common::server::Server;
use lecr::store::cluster::Cluster;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn top_ids(v: &Value) -> Vec<String> {
    v["topics"][0]["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `check` until it holds; returns how long that took (panics after `limit`).
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !check() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

#[test]
fn replicas_over_one_postgres_store_follow_each_other_and_survive_its_restart() {
    let pg = Cluster::start().expect("PostgreSQL (scripts/test.sh installs Debian's postgresql)");
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus(root.path());
    let a = Server::start(&["--model", &model, "--data", &data, "--store", &url]);
    // B has no --data: everything it serves comes from the shared store.
    let b = Server::start(&["--model", &model, "--store", &url]);
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let title = ds
        .topics
        .iter()
        .find(|t| t.language == "en")
        .unwrap()
        .title
        .clone();
    let channel = uuid();
    let body = json!({"topics": [{"id": uuid(), "channel_id": channel, "title": title,
        "description": "", "language": "en"}]});
    let rec = "/stable/recommend?override_threshold=True";

    // embed-content on A → B recommends it (its title equals the topic's: the top hit).
    let new_id = uuid().replace('-', "");
    let (code, v) = a.post(
        "/stable/embed-content",
        &json!({"resources": [{"id": new_id, "title": title, "description": "", "text": "",
            "language": "en", "files": null}], "metadata": {"channel_id": channel}}),
    );
    assert_eq!(code, 200, "{v}");
    let took = within(Duration::from_secs(1), "B serving A's content", || {
        top_ids(&b.post(rec, &body).1).first() == Some(&new_id)
    });
    println!("A's embed-content reached B's recommend in {took:?}");
    // B did not embed it again: it reads the vector A stored (same model).
    assert_eq!(
        b.post(rec, &body).1["topics"][0]["recommendations"][0]["id"],
        json!(new_id)
    );

    // A Studio topic that reached A only is browsable on B, and a decision made on A shows
    // there.
    let topic_id = uuid();
    let only_a = json!({"topics": [{"id": topic_id, "channel_id": channel, "title": title,
        "description": "", "language": "en"}]});
    assert_eq!(a.post(rec, &only_a).0, 200);
    within(Duration::from_secs(1), "B knowing A's Studio topic", || {
        b.try_get(&format!("/api/topics/{topic_id}")).unwrap().0 == 200
    });
    let (code, v) = a.post(
        "/api/feedback",
        &json!({"topic_id": topic_id, "content_id": new_id, "decision": "accept"}),
    );
    assert_eq!(code, 200, "{v}");
    within(Duration::from_secs(1), "B showing A's decision", || {
        b.try_get(&format!("/api/topics/{topic_id}")).unwrap().1["decisions"][&new_id]
            == json!("accept")
    });
    // Each server's writes come back to its own follower marked as its own and are skipped,
    // not read again; the other server reads them. A wrote a content, a topic and a decision;
    // B wrote the Studio topics of the recommend requests it answered.
    let followed = |s: &Server, by: &str| -> f64 {
        let key = format!("lecr_changes_followed_total{{writer=\"{by}\"}} ");
        s.text("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&key).map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0.0)
    };
    within(
        Duration::from_secs(2),
        "each server skipping its own changes",
        || {
            let (a_own, a_others) = (followed(&a, "this_server"), followed(&a, "others"));
            let (b_own, b_others) = (followed(&b, "this_server"), followed(&b, "others"));
            a_own >= 3.0 && b_others >= 3.0 && b_own >= 1.0 && a_others == b_own
        },
    );

    // Another model (here: another max_len) refuses the store, and --reembed is refused while
    // other replicas are connected.
    for extra in [&[][..], &["--reembed"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
            .args([
                "serve",
                "--model",
                &model,
                "--max-len",
                "48",
                "--store",
                &url,
            ])
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .env("LECR_NO_PROGRESS", "1")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let want = if extra.is_empty() {
            "--reembed"
        } else {
            "other lecr session"
        };
        assert!(err.contains(want), "{extra:?}: {err}");
    }

    // remove on B → gone on A.
    let (code, v) = b.post("/stable/remove-content", &json!({"ids": [new_id]}));
    assert_eq!((code, v["removed"].clone()), (200, json!(1)), "{v}");
    within(Duration::from_secs(1), "A dropping what B removed", || {
        !top_ids(&a.post(rec, &body).1).contains(&new_id)
    });

    // Export and training read the URL.
    let out = root.path().join("export");
    common::run_lecr([
        "feedback",
        "export",
        "--store",
        &url,
        "--out",
        out.to_str().unwrap(),
    ]);
    let corr = std::fs::read_to_string(out.join("correlations.csv")).unwrap();
    assert!(corr.contains(&format!("{topic_id},{new_id}")), "{corr}");
    let (accepted, _) = lecr::train::curated::read_decisions(Path::new(&url)).unwrap();
    assert_eq!(accepted[&topic_id], std::slice::from_ref(&new_id));

    // A killed with -9 in the middle of a publish: its transaction never committed, so the
    // store holds all of the batch or none of it, and B is unaffected.
    let count = || {
        lecr::store::Store::open_at(&lecr::store::Location::Postgres(url.clone()))
            .unwrap()
            .count()
            .unwrap()
    };
    let before = count();
    let batch: Vec<Value> = (0..300)
        .map(|i| json!({"id": uuid(), "title": format!("bulk item {i}"), "language": "en"}))
        .collect();
    let base = a.base.clone();
    let publish = std::thread::spawn(move || {
        let _ = ureq::post(&format!("{base}/stable/embed-content"))
            .set("content-type", "application/json")
            .send_string(&json!({ "resources": batch }).to_string());
    });
    std::thread::sleep(Duration::from_millis(150));
    a.kill9();
    let _ = publish.join();
    let after = count();
    assert!(
        after == before || after == before + 300,
        "{before} → {after}"
    );
    assert_eq!(b.post(rec, &body).0, 200);

    // The database goes away under B: writes 503 (JSON, Retry-After), reads go on, /health
    // says degraded; it comes back and B recovers by itself.
    pg.stop().unwrap();
    let write = json!({"resources": [{"id": uuid(), "title": "while down", "language": "en"}]});
    let (code, v) = b.post("/stable/embed-content", &write);
    assert_eq!(code, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("store"), "{v}");
    println!("write while down: {v}");
    let (code, h) = b.try_get("/health").unwrap();
    assert_eq!((code, h["status"].clone()), (200, json!("degraded")), "{h}");
    assert!(h["reason"].is_string());
    assert_eq!(b.post(rec, &body).0, 200, "reads go on from memory");
    pg.start_again().unwrap();
    within(Duration::from_secs(10), "B writing again", || {
        b.post("/stable/embed-content", &write).0 == 200
    });
    assert_eq!(b.try_get("/health").unwrap().1["status"], json!("ok"));
    // A clean stop closes the database connections (off the async threads).
    assert!(b.terminate().success());

    // A database that cannot be reached at start: a clear error (password hidden), exit 1.
    pg.stop().unwrap();
    let down = url.replace("lecr@", "lecr:hunter2@");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args([
            "serve",
            "--model",
            &model,
            "--store",
            &down,
            "--addr",
            "127.0.0.1:0",
        ])
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn the_store_speaks_tls_when_the_url_asks_and_verifies_the_server() {
    let pg = Cluster::start().expect("PostgreSQL (scripts/test.sh installs Debian's postgresql)");
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    pg.require_tls(&cert.cert.pem(), &cert.key_pair.serialize_pem())
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let (_, model) = common::serve_corpus(root.path());
    let export = |url: &str, ca: Option<&Path>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"));
        c.args(["feedback", "export", "--store", url, "--out"])
            .arg(root.path().join("out"));
        match ca {
            Some(p) => c.env(lecr::store::tls::CA_ENV, p),
            None => c.env_remove(lecr::store::tls::CA_ENV),
        };
        let o = c.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let plain = pg.url();
    let tls = format!("{plain}?sslmode=require");
    // The server takes TLS only: a plain connection is refused.
    let (ok, err) = export(&plain, Some(&ca));
    assert!(!ok && err.contains("cannot connect"), "{err}");
    // TLS without trusting the server's certificate: refused by lecr.
    let (ok, err) = export(&tls, None);
    assert!(!ok && err.to_lowercase().contains("certificate"), "{err}");
    // Trusted through LECR_STORE_CA: a replica starts (migrations over TLS) and export reads.
    std::env::set_var(lecr::store::tls::CA_ENV, &ca);
    let s = Server::start(&["--model", &model, "--store", &tls]);
    let (code, v) = s.post(
        "/stable/embed-content",
        &json!({"resources": [{"id": uuid().replace('-', ""), "title": "Fractions",
            "description": "", "text": "", "language": "en", "files": null}],
            "metadata": {"channel_id": uuid()}}),
    );
    assert_eq!(code, 200, "{v}");
    drop(s);
    let (ok, err) = export(&tls, Some(&ca));
    assert!(ok, "{err}");
    // A CA file with no certificate in it is named.
    let empty = root.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let (ok, err) = export(&tls, Some(&empty));
    assert!(
        !ok && err.contains("LECR_STORE_CA") && err.contains("no PEM certificate"),
        "{err}"
    );
}

//! `lecr bench serve`: starts `lecr serve` (and, when asked, the Python baseline of
//! `bench/serve_baseline.py`) on loopback, then measures what a Studio deployment sees: time and
//! memory to seed the index from a data folder, Studio-shaped single-topic recommend requests at
//! several client counts (throughput, p50/p95/p99 latency, errors), embed-content throughput
//! in batches of 20, and the restart time on the filled store.

use crate::data::Dataset;
use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVE_BASELINE_SCRIPT: &str = include_str!("../../bench/serve_baseline.py");

/// What `lecr bench serve` is told (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeBenchOptions {
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    #[arg(long)]
    pub int8: bool,
    /// Kaggle-layout folder: seeds the index and supplies the topics of the requests.
    #[arg(long)]
    pub data: PathBuf,
    /// Store folder (default: a temporary one).
    #[arg(long)]
    pub store: Option<PathBuf>,
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,200")]
    pub clients: Vec<usize>,
    /// Seconds of load per client count.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// embed-content batches of 20 to time.
    #[arg(long, default_value_t = 50)]
    pub content_batches: usize,
    /// Python with fastapi, uvicorn and sentence-transformers: also measure the baseline.
    #[arg(long)]
    pub python: Option<String>,
    /// `lecr embed --data` output for the baseline to load instead of embedding content.csv.
    #[arg(long)]
    pub baseline_features: Option<PathBuf>,
    /// The float model of the baseline (default: the first --model; Python cannot read
    /// lecr's int8 folders).
    #[arg(long)]
    pub baseline_model: Option<String>,
    /// A reranker folder: also load a server that reranks with it (on the filled store, with
    /// --data for its tree context), and compare.
    #[arg(long)]
    pub reranker: Option<PathBuf>,
    /// A reranker that reads a cross-encoder (`lecr rerank train --cross`): also load a server
    /// with it; its rows are compared with --reranker's (or the plain server's).
    #[arg(long)]
    pub cross_reranker: Option<PathBuf>,
    /// Only load a server already running at this base URL (e.g. http://127.0.0.1:8000); no
    /// seeding, restart or baseline figures.
    #[arg(long)]
    pub url: Option<String>,
}

/// One load level.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub clients: usize,
    pub requests: usize,
    pub errors: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// A server child process on a loopback port.
pub struct ServerProcess {
    child: Child,
    pub base: String,
    /// Seconds from spawn to a `200` from `/stable/connect`.
    pub ready_s: f64,
}

impl ServerProcess {
    /// Spawns `cmd`, reads the port from its stdout (`listening on http://ADDR/` or
    /// `baseline ready on port N`) and waits for `/stable/connect`.
    pub fn start(mut cmd: Command, what: &str, timeout: Duration) -> Result<Self> {
        let t0 = Instant::now();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut base = None;
        let mut line = String::new();
        while base.is_none() {
            line.clear();
            anyhow::ensure!(
                out.read_line(&mut line)? > 0,
                "{what} exited before it listened"
            );
            if let Some(rest) = line.trim().strip_prefix("listening on http://") {
                base = rest.split('/').next().map(|a| format!("http://{a}"));
            } else if let Some(port) = line.trim().strip_prefix("baseline ready on port ") {
                base = Some(format!("http://127.0.0.1:{port}"));
            }
        }
        std::thread::spawn(move || out.lines().for_each(drop));
        let base = base.expect("set in the loop");
        loop {
            if let Ok(r) = ureq::get(&format!("{base}/stable/connect")).call() {
                if r.status() == 200 {
                    break;
                }
            }
            if let Some(st) = child.try_wait()? {
                anyhow::bail!("{what} exited with {st}");
            }
            anyhow::ensure!(t0.elapsed() < timeout, "{what} not ready after {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(ServerProcess {
            child,
            base,
            ready_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// Peak resident memory of the server process so far (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// Resident memory of the server process now (VmRSS), MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// A `/proc/PID/status` figure of the server process (`VmRSS:`, `RssAnon:`, ...), MiB.
    pub fn status_mib(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    /// SIGKILL, as a crash or `kill -9` would end it (no shutdown, no store close).
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait (the server finishes in-flight requests and closes its store).
    pub fn stop(mut self) -> Result<()> {
        #[cfg(unix)]
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        #[cfg(not(unix))]
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Studio-shaped recommend bodies, one topic each (with its ancestors), for `n` random topics
/// that have content.
pub fn studio_bodies(ds: &Dataset, n: usize, seed: u64) -> Vec<String> {
    let forest = crate::data::tree::Forest::build(&ds.topics, &ds.topic_index);
    let mut with: Vec<usize> = {
        let mut v: Vec<usize> = ds.pairs().iter().map(|p| p.0).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    with.shuffle(&mut rng);
    let uuid = || uuid::Uuid::new_v4().to_string();
    with.iter()
        .take(n)
        .map(|&i| {
            let t = &ds.topics[i];
            let ancestors: Vec<Value> = forest.breadcrumb(i)[1..]
                .iter()
                .map(|&j| {
                    let a = &ds.topics[j];
                    json!({"id": uuid(), "title": a.title, "description": a.description,
                           "level": a.level})
                })
                .collect();
            json!({"topics": [{"id": uuid(), "channel_id": uuid(), "title": t.title,
                "description": t.description, "language": t.language, "ancestors": ancestors}],
                "metadata": {"channel_id": uuid()}})
            .to_string()
        })
        .collect()
}

/// `clients` threads post recommend bodies for `seconds` (after a short warm-up).
pub fn load(base: &str, bodies: &[String], clients: usize, seconds: f64) -> LoadResult {
    let url = format!("{base}/stable/recommend?override_threshold=False");
    let warm_until = Instant::now() + Duration::from_secs_f64(1.0);
    let until = warm_until + Duration::from_secs_f64(seconds);
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let url = &url;
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(60))
                        .build();
                    let (mut lat, mut errors) = (Vec::new(), 0);
                    let mut k = c * 7919;
                    loop {
                        let now = Instant::now();
                        if now >= until {
                            break;
                        }
                        let body = &bodies[k % bodies.len()];
                        k += 1;
                        let ok = agent
                            .post(url)
                            .set("content-type", "application/json")
                            .send_string(body)
                            .map(|r| r.status() == 200 && r.into_string().is_ok())
                            .unwrap_or(false);
                        if now >= warm_until {
                            lat.push(now.elapsed().as_secs_f64() * 1e3);
                            if !ok {
                                errors += 1;
                            }
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread"))
            .collect()
    });
    let mut lat: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let errors = results.iter().map(|r| r.1).sum();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
        }
    };
    LoadResult {
        clients,
        requests: lat.len(),
        errors,
        per_second: lat.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
    }
}

/// Studio-shaped embed-content resources: copies of `contents` under new ids.
pub fn new_resources<'a>(
    contents: impl IntoIterator<Item = &'a crate::data::Content>,
) -> Vec<Value> {
    contents
        .into_iter()
        .map(|c| {
            json!({"id": uuid::Uuid::new_v4().simple().to_string(), "title": c.title,
                   "description": c.description, "text": "", "language": c.language,
                   "files": null})
        })
        .collect()
}

/// Posts `batches` embed-content requests of 20 new resources each (Studio's shape, copies of
/// the data's contents under new ids), one after another; returns resources per second.
pub fn embed_content_rate(base: &str, ds: &Dataset, batches: usize) -> Result<f64> {
    let url = format!("{base}/stable/embed-content");
    let channel = uuid::Uuid::new_v4().to_string();
    let t0 = Instant::now();
    let mut n = 0;
    for (b, chunk) in ds.contents.chunks(20).take(batches).enumerate() {
        let resources = new_resources(chunk);
        n += resources.len();
        let body = json!({"resources": resources, "metadata": {"channel_id": channel}});
        let r = ureq::post(&url)
            .set("content-type", "application/json")
            .send_string(&body.to_string())
            .with_context(|| format!("embed-content batch {b}"))?;
        let v: Value = r.into_json()?;
        anyhow::ensure!(
            v["added"].as_u64() == Some(chunk.len() as u64),
            "batch {b}: {v}"
        );
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Studio publishing while curators' recommends run: `clients` threads post recommend bodies
/// for `seconds` while one more client posts embed-content batches of 20 new resources back to
/// back. Returns the recommends' result and the resources published per second.
pub fn load_while_publishing(
    base: &str,
    bodies: &[String],
    ds: &Dataset,
    clients: usize,
    seconds: f64,
) -> (LoadResult, f64) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            let url = format!("{base}/stable/embed-content");
            let channel = uuid::Uuid::new_v4().to_string();
            let t0 = Instant::now();
            let mut n = 0usize;
            for chunk in ds.contents.chunks(20).cycle() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let resources = new_resources(chunk);
                let body = json!({"resources": resources, "metadata": {"channel_id": channel}});
                if ureq::post(&url)
                    .set("content-type", "application/json")
                    .send_string(&body.to_string())
                    .is_ok()
                {
                    n += chunk.len();
                }
            }
            n as f64 / t0.elapsed().as_secs_f64()
        });
        let r = load(base, bodies, clients, seconds);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, publisher.join().expect("publisher thread"))
    })
}

/// The "recommend while Studio publishes" rows: quiet and publishing p99 at 16 clients.
fn publishing_rows(base: &str, bodies: &[String], ds: &Dataset, seconds: f64) {
    let quiet = load(base, bodies, 16, seconds);
    let (busy, rate) = load_while_publishing(base, bodies, ds, 16, seconds);
    println!("| recommend, 16 clients | req/s | p50 ms | p99 ms | errors |\n| --- | --- | --- | --- | --- |");
    println!(
        "| quiet | {:.1} | {:.1} | {:.1} | {} |",
        quiet.per_second, quiet.p50_ms, quiet.p99_ms, quiet.errors
    );
    println!(
        "| while Studio publishes (embed-content batches of 20 back to back: {rate:.1} resources/s) | {:.1} | {:.1} | {:.1} | {} |",
        busy.per_second, busy.p50_ms, busy.p99_ms, busy.errors
    );
    println!(
        "recommend p99 while publishing / quiet p99: {:.2}x (target: at most 1.5x)",
        busy.p99_ms / quiet.p99_ms
    );
}

/// The CPU's instruction sets that matter to lecr's kernels.
pub fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut v = Vec::new();
        for (name, on) in [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ] {
            if on {
                v.push(name);
            }
        }
        v.join(" ")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// The whole benchmark; prints the tables.
pub fn run(o: &ServeBenchOptions) -> Result<()> {
    let ds = crate::data::load_dataset(&o.data)?;
    let bodies = studio_bodies(&ds, 2000, 7);
    anyhow::ensure!(
        !bodies.is_empty(),
        "{}: no topic has content",
        o.data.display()
    );
    if let Some(url) = &o.url {
        println!("bench serve against {url}: CPU {}", cpu_features());
        println!("| clients | req/s | p50 ms | p95 ms | p99 ms | errors |\n| --- | --- | --- | --- | --- | --- |");
        for &c in &o.clients {
            let r = load(url, &bodies, c, o.seconds);
            println!(
                "| {c} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                r.per_second, r.p50_ms, r.p95_ms, r.p99_ms, r.errors
            );
        }
        publishing_rows(url, &bodies, &ds, o.seconds);
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let store = o.store.clone().unwrap_or_else(|| tmp.path().join("store"));
    let exe = std::env::current_exe()?;
    let serve_cmd = |seed: bool| {
        let mut c = Command::new(&exe);
        c.arg("serve");
        for m in &o.models {
            c.args(["--model", m]);
        }
        if o.int8 {
            c.arg("--int8");
        }
        c.arg("--store").arg(&store).args(["--addr", "127.0.0.1:0"]);
        if seed {
            c.arg("--data").arg(&o.data);
        }
        c.env("LECR_NO_PROGRESS", "1");
        c
    };
    let limit = Duration::from_secs(4 * 3600);
    println!(
        "bench serve: {} contents, {} topics with content; CPU: {}; {} threads",
        ds.contents.len(),
        bodies.len(),
        cpu_features(),
        rayon::current_num_threads()
    );
    let server = ServerProcess::start(serve_cmd(true), "lecr serve --data", limit)?;
    let (seed_s, seed_rss) = (server.ready_s, server.peak_rss_mib());
    println!("seeded (start to ready): {seed_s:.1}s, peak RSS {seed_rss:.0} MiB");
    let mut ours = Vec::new();
    for &c in &o.clients {
        let r = load(&server.base, &bodies, c, o.seconds);
        println!(
            "  lecr, {c} clients: {:.1} req/s, p99 {:.1} ms",
            r.per_second, r.p99_ms
        );
        ours.push(r);
    }
    let content_rate = embed_content_rate(&server.base, &ds, o.content_batches)?;
    publishing_rows(&server.base, &bodies, &ds, o.seconds);
    let serve_rss = server.peak_rss_mib();
    server.stop()?;
    let restart = ServerProcess::start(serve_cmd(false), "lecr serve (restart)", limit)?;
    let (restart_s, restart_rss) = (restart.ready_s, restart.peak_rss_mib());
    restart.stop()?;
    let mut reranked = vec![crate::bench::serve_rerank::RerankRun {
        label: "retriever only".into(),
        loads: ours.clone(),
        cross: None,
    }];
    for (label, dir) in [
        ("reranker", &o.reranker),
        ("reranker + cross-encoder", &o.cross_reranker),
    ] {
        if let Some(dir) = dir {
            reranked.push(crate::bench::serve_rerank::run_one(
                serve_cmd(true),
                label,
                dir,
                &bodies,
                &o.clients,
                o.seconds,
            )?);
        }
    }
    let mut theirs: HashMap<usize, LoadResult> = HashMap::new();
    let mut baseline_ready = None;
    if let Some(py) = &o.python {
        let script = tmp.path().join("serve_baseline.py");
        std::fs::write(&script, SERVE_BASELINE_SCRIPT)?;
        let spec = o.baseline_model.as_ref().unwrap_or(&o.models[0]);
        let model_dir = crate::model::hub::resolve_model(spec)?;
        anyhow::ensure!(
            !model_dir.join("quantization.json").exists(),
            "{}: an int8 folder of lecr's, which Python cannot load; give the float model with \
             --baseline-model",
            model_dir.display()
        );
        let port = free_port()?;
        let mut c = Command::new(py);
        c.arg(&script)
            .arg("--model")
            .arg(&model_dir)
            .arg("--data")
            .arg(&o.data)
            .args(["--port", &port.to_string()])
            .args(["--threads", &rayon::current_num_threads().to_string()]);
        if let Some(f) = &o.baseline_features {
            c.arg("--features").arg(f);
        }
        let base = ServerProcess::start(c, "the Python baseline", limit)?;
        baseline_ready = Some((base.ready_s, base.peak_rss_mib()));
        for &n in &o.clients {
            let r = load(&base.base, &bodies, n, o.seconds);
            println!(
                "  python, {n} clients: {:.1} req/s, p99 {:.1} ms",
                r.per_second, r.p99_ms
            );
            theirs.insert(n, r);
        }
        base.stop()?;
    }
    println!(
        "\nrecommend, Studio-shaped single-topic requests, {:.0} s per level (CPU: {})",
        o.seconds,
        cpu_features()
    );
    println!("| clients | lecr req/s | p50 ms | p95 ms | p99 ms | errors | Python req/s | Python p99 ms | Python errors | throughput ratio |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &ours {
        let b = theirs.get(&r.clients);
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
            r.clients,
            r.per_second,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.errors,
            b.map(|b| format!("{:.1}", b.per_second))
                .unwrap_or("-".into()),
            b.map(|b| format!("{:.1}", b.p99_ms)).unwrap_or("-".into()),
            b.map(|b| b.errors.to_string()).unwrap_or("-".into()),
            b.map(|b| format!("{:.2}x", r.per_second / b.per_second))
                .unwrap_or("-".into()),
        );
    }
    if let (Some(one), Some(most)) = (
        ours.iter().find(|r| r.clients == 1),
        ours.iter().max_by_key(|r| r.clients),
    ) {
        println!(
            "lecr at {} clients / 1 client (a one-request-at-a-time server): {:.2}x",
            most.clients,
            most.per_second / one.per_second
        );
    }
    println!("\n| figure | value |\n| --- | --- |");
    println!("| seed the index from --data (start to ready) | {seed_s:.1} s, peak RSS {seed_rss:.0} MiB |");
    println!("| peak RSS after the load and embed-content runs | {serve_rss:.0} MiB |");
    println!("| restart on the filled store (start to ready) | {restart_s:.1} s, peak RSS {restart_rss:.0} MiB |");
    println!("| embed-content, batches of 20, one after another | {content_rate:.1} resources/s |");
    if let Some((s, rss)) = baseline_ready {
        println!("| Python baseline start to ready | {s:.1} s, peak RSS {rss:.0} MiB |");
    }
    if reranked.len() > 1 {
        println!(
            "\nrecommend with the second stage, same bodies and client counts (CPU: {})",
            cpu_features()
        );
        print!("{}", crate::bench::serve_rerank::render(&reranked));
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

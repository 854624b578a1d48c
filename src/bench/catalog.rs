//! `lecr bench catalog`: the served catalog's cost at a size of your choice. It generates a
//! corpus of N contents across many channels and languages (`lecr synth`'s invented words),
//! writes them straight into a store with **random L2-normalised vectors** (no encoder time:
//! the figures are those of the index, not of embedding; `--vectors model` embeds them with the
//! served model instead, [`super::catalog_vectors`]), then starts `lecr serve` on that store
//! and measures what an operator sizes a machine by:
//!
//! - time to build the store, time to start the server on it, resident memory after the start;
//! - the index's bytes per content, part by part (from the server's own `lecr_index_bytes`);
//! - Studio-shaped recommend requests at 16 clients (p50/p99);
//! - how long new contents (embed-content, Studio's batches of 20) take to become
//!   recommendable once their request returned;
//! - `kill -9` and restart: the start time and whether every answer is the same.
//!
//! Recommendations over random vectors rank nothing meaningful; only their cost is measured.

pub use super::catalog_vectors::random_unit;
use super::catalog_vectors::Vectors;
use crate::serve::embedder::Role;

use super::serve::{load, new_resources, studio_bodies, ServerProcess};
use crate::data::synth::{generate, SynthConfig, DEFAULT_LANGUAGES};
use crate::data::Dataset;
use crate::store::{ContentMeta, Location, Store, StoredContent};
use anyhow::{Context, Result};
use rand::SeedableRng;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// What `lecr bench catalog` is told (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct CatalogBenchOptions {
    /// The served model (embeds the requests' topics and the new contents); repeat it, or add
    /// `--model lexical`, as for `lecr serve`.
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    #[arg(long)]
    pub int8: bool,
    /// Contents in the catalog (LECR has 154,000).
    #[arg(long, default_value_t = 154_000)]
    pub contents: usize,
    /// Languages of the generated channels.
    #[arg(long, value_delimiter = ',')]
    pub languages: Option<Vec<String>>,
    /// Store folder to build (must not hold contents yet; default: a temporary one, removed
    /// at the end).
    #[arg(long)]
    pub store: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of recommend load.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// New contents to publish for the freshness figure (batches of 20, as Studio sends).
    #[arg(long, default_value_t = 1000)]
    pub fresh: usize,
    /// Topics whose answers are compared across the kill -9 and restart.
    #[arg(long, default_value_t = 50)]
    pub compare: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `postgres`: serve with `--index postgres` from a throwaway PostgreSQL cluster with
    /// pgvector (scripts/fetch-pgvector.sh; `LECR_PGVECTOR_BIN`), and measure the HNSW
    /// search's recall@100 against exact search.
    #[arg(long, default_value = "memory", value_parser = ["memory", "postgres"])]
    pub index: String,
    /// With `--index postgres`: pgvector's hnsw.ef_search.
    #[arg(long, default_value_t = crate::store::search::SearchSettings::default().ef_search)]
    pub ef_search: usize,
    /// With `--index postgres`: the server's --hnsw-from (a language of fewer contents is
    /// scanned exactly).
    #[arg(long, default_value_t = crate::store::search::SearchSettings::default().indexed_from)]
    pub hnsw_from: usize,
    /// The contents' vectors: `random` (no encoder time; an approximate index's worst case) or
    /// `model` (the served model's own vectors of the generated texts: the encoder runs over
    /// every content, about ten minutes per 154k on two cores).
    #[arg(long, default_value = "random", value_parser = ["random", "model"])]
    pub vectors: String,
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct CatalogFigures {
    pub contents: usize,
    pub generate_s: f64,
    pub build_s: f64,
    pub start_s: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    /// RSS of the same server on the empty store (model, runtime): what no content costs.
    pub empty_rss_mib: f64,
    /// (part, bytes) from the server's `lecr_index_bytes`.
    pub parts: Vec<(String, f64)>,
    /// Bytes of the exact vectors' files on disk (`lecr_index_exact_vectors_file_bytes`).
    pub exact_file_bytes: f64,
    /// Bytes of the lexical indexes used from their saved files (`lecr_lexical_mapped_bytes`).
    pub lexical_mapped_bytes: f64,
    /// Bytes of the metadata's texts file (`lecr_index_metadata_file_bytes`).
    pub metadata_file_bytes: f64,
    /// Of the RSS after start: anonymous (heap) and file-backed (mapped files' pages).
    pub rss_anon_mib: f64,
    pub rss_file_mib: f64,
    pub requests: usize,
    pub errors: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub fresh: usize,
    pub publish_s: f64,
    /// Longest time from an embed-content's return until its contents were recommended.
    pub fresh_max_s: f64,
    pub restart_s: f64,
    pub compared: usize,
    pub same: usize,
    /// With `--index postgres`: recall@100 of the HNSW search against exact search, its
    /// queries' p50/p99 (ms, one client), and the search table's bytes on the server.
    pub recall: Option<super::catalog_pg::Recall>,
    /// With `--index postgres` and the lexical retriever: answers given without certainty
    /// that their top is the whole language's (`lecr_search_uncertain_total` after the load).
    pub uncertain: u64,
    /// Exact vectors read back per ranked topic text over the load (`None`: none ranked, or
    /// the PostgreSQL index mode, which does not count them).
    pub rescored_per_topic: Option<f64>,
}

/// What the rescoring cost, in words.
fn rescored_line(per_topic: Option<f64>) -> String {
    match per_topic {
        Some(r) => format!("{r:.0} exact vectors read back per topic"),
        None => "no topic ranked".into(),
    }
}

/// The token limit the servers and `--vectors model` embed with (the embedding default).
const MAX_LEN: usize = crate::pipeline::EMBED_MAX_LEN;

/// Contents per transaction while the store is built.
const CHUNK: usize = 10_000;
/// How long a new content may take to show up before the run says it never did.
const FRESH_LIMIT: Duration = Duration::from_secs(120);

fn serve_cmd(o: &CatalogBenchOptions, store: &Location, mode: &str) -> Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.arg("serve");
    for m in &o.models {
        c.args(["--model", m]);
    }
    if o.int8 {
        c.arg("--int8");
    }
    c.arg("--store").arg(match store {
        Location::Dir(d) => d.display().to_string(),
        Location::Postgres(url) => url.clone(),
        Location::Memory => anyhow::bail!("the bench serves a store on disk or in PostgreSQL"),
    });
    if mode == "postgres" {
        c.args([
            "--index",
            "postgres",
            "--ef-search",
            &o.ef_search.to_string(),
            "--hnsw-from",
            &o.hnsw_from.to_string(),
        ]);
    }
    c.args(["--max-len", &MAX_LEN.to_string(), "--addr", "127.0.0.1:0"]);
    c.env("LECR_NO_PROGRESS", "1");
    Ok(c)
}

/// The vector dimension of the served model(s): the server's own answer to embed-topics.
fn served_dim(base: &str) -> Result<usize> {
    let v: Value = ureq::post(&format!("{base}/stable/embed-topics"))
        .set("content-type", "application/json")
        .send_string(&topic_body(&json!("dimension"), &json!(""), &json!("en")))
        .context("embed-topics (the model's dimension)")?
        .into_json()?;
    v["dim"]
        .as_u64()
        .map(|d| d as usize)
        .with_context(|| format!("embed-topics answered without a dim: {v}"))
}

/// The generated contents written into `store` with `vectors`' vectors, each content in the
/// channel of the first topic it is linked to.
fn build_store(ds: &Dataset, store: &Location, vectors: &mut Vectors) -> Result<()> {
    let mut st = Store::open_at(store)?;
    anyhow::ensure!(
        st.count()? == 0,
        "{store}: the store holds contents already; give an empty or new --store"
    );
    let mut channel: Vec<Option<&str>> = vec![None; ds.contents.len()];
    for (t, c) in ds.pairs() {
        channel[c].get_or_insert(ds.topics[t].channel.as_str());
    }
    let label = if vectors.is_model() {
        "embedding and storing"
    } else {
        "storing"
    };
    let bar = crate::progress::bar(ds.contents.len() as u64, label);
    for (k, chunk) in ds.contents.chunks(CHUNK).enumerate() {
        let texts: Vec<String> = chunk
            .iter()
            .map(|c| crate::text::content_text_parts(&c.title, &c.description, &c.text))
            .collect();
        let vecs = vectors.embed(Role::Content, &texts)?;
        let rows: Vec<StoredContent> = chunk
            .iter()
            .zip(texts.into_iter().zip(vecs))
            .enumerate()
            .map(|(j, (c, (text, vector)))| StoredContent {
                meta: ContentMeta {
                    id: c.id.clone(),
                    channel_id: channel[k * CHUNK + j].unwrap_or_default().to_string(),
                    title: c.title.clone(),
                    description: c.description.clone(),
                    kind: c.kind.clone(),
                    language: Some(c.language.clone()).filter(|l| !l.is_empty()),
                    short_text: crate::text::short_text(&c.text),
                },
                text,
                vector,
            })
            .collect();
        st.apply(&rows, &[])?;
        bar.inc(rows.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// `n` topics with a language, drawn at random, and their vectors as the model embeds them
/// (the recall queries of `--vectors model`).
fn topic_queries(
    ds: &Dataset,
    vectors: &mut Vectors,
    n: usize,
    seed: u64,
) -> Result<Vec<(String, Vec<f32>)>> {
    use rand::seq::SliceRandom;
    let texts = crate::text::topic_texts(&ds.topics);
    let mut picks: Vec<usize> = (0..ds.topics.len())
        .filter(|&i| !ds.topics[i].language.is_empty())
        .collect();
    picks.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9e7));
    picks.truncate(n);
    let chosen: Vec<String> = picks.iter().map(|&i| texts[i].clone()).collect();
    let vecs = vectors.embed(Role::Topic, &chosen)?;
    Ok(picks
        .iter()
        .map(|&i| ds.topics[i].language.clone())
        .zip(vecs)
        .collect())
}

/// A Studio-shaped request body of one root topic.
fn topic_body(title: &Value, description: &Value, language: &Value) -> String {
    let uuid = || uuid::Uuid::new_v4().to_string();
    json!({"topics": [{"id": uuid(), "channel_id": uuid(), "title": title,
        "description": description, "language": language, "ancestors": []}],
        "metadata": {"channel_id": uuid()}})
    .to_string()
}

/// What the bench reads from a server's `/metrics`.
struct Served {
    /// `lecr_index_bytes{part="..."}`, with `exact_on_disk` last (the exact vectors' file).
    parts: Vec<(String, f64)>,
    /// `lecr_lexical_stale_languages`.
    stale: f64,
    /// `lecr_search_uncertain_total`.
    uncertain: f64,
    /// `lecr_lexical_mapped_bytes`.
    mapped: f64,
    /// `lecr_index_metadata_file_bytes`.
    metadata_file: f64,
    /// `lecr_index_rescored_rows_total`.
    rescored: f64,
    /// `lecr_batch_topics_sum`: texts ranked so far.
    ranked: f64,
}

fn metrics(base: &str) -> Result<Served> {
    let text = ureq::get(&format!("{base}/metrics"))
        .call()
        .context("GET /metrics")?
        .into_string()?;
    let mut parts = Vec::new();
    let mut stale = 0.0;
    let mut exact = 0.0;
    let mut uncertain = 0.0;
    let mut mapped = 0.0;
    let mut metadata_file = 0.0;
    let (mut rescored, mut ranked) = (0.0, 0.0);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("lecr_index_bytes{part=\"") {
            if let Some((part, value)) = rest.split_once("\"} ") {
                parts.push((part.to_string(), value.trim().parse().unwrap_or(0.0)));
            }
        } else if let Some(v) = line.strip_prefix("lecr_index_exact_vectors_file_bytes ") {
            exact = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("lecr_lexical_stale_languages ") {
            stale = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("lecr_search_uncertain_total ") {
            uncertain = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("lecr_lexical_mapped_bytes ") {
            mapped = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("lecr_index_metadata_file_bytes ") {
            metadata_file = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("lecr_index_rescored_rows_total ") {
            rescored = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("lecr_batch_topics_sum ") {
            ranked = v.trim().parse().unwrap_or(0.0);
        }
    }
    anyhow::ensure!(
        !parts.is_empty(),
        "{base}/metrics has no lecr_index_bytes (another version of lecr?)"
    );
    parts.push(("exact_on_disk".to_string(), exact));
    Ok(Served {
        parts,
        stale,
        uncertain,
        mapped,
        metadata_file,
        rescored,
        ranked,
    })
}

/// Waits until no language's lexical index misses writes (answers are final then), at most
/// `limit` (a refit runs in idle time, so it takes longer the larger the catalog).
fn settle(base: &str, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    while metrics(base)?.stale > 0.0 {
        anyhow::ensure!(
            t0.elapsed() < limit,
            "the lexical index was still stale after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The recommended content ids of each body, in order (the default selection).
fn answers(base: &str, bodies: &[String]) -> Result<Vec<Vec<String>>> {
    let url = format!("{base}/stable/recommend?override_threshold=False");
    bodies
        .iter()
        .map(|b| {
            let v: Value = ureq::post(&url)
                .set("content-type", "application/json")
                .send_string(b)
                .context("recommend")?
                .into_json()?;
            Ok(ids_of(&v))
        })
        .collect()
}

fn ids_of(v: &Value) -> Vec<String> {
    v["topics"][0]["recommendations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Publishes `n` new contents (copies of generated texts under new ids) in batches of 20 and
/// returns (seconds publishing, the longest wait from a batch's return until one of its
/// contents was recommended for a topic made of that content's own title and description).
fn freshness(base: &str, ds: &Dataset, n: usize) -> Result<(f64, f64)> {
    let url = format!("{base}/stable/embed-content");
    let rec = format!("{base}/stable/recommend?override_threshold=True&top_k=20");
    let channel = uuid::Uuid::new_v4().to_string();
    let t0 = Instant::now();
    let mut worst = 0f64;
    let mut published = 0;
    for (b, chunk) in ds
        .contents
        .iter()
        .cycle()
        .take(n)
        .collect::<Vec<_>>()
        .chunks(20)
        .enumerate()
    {
        let resources = new_resources(chunk.iter().copied());
        let body = json!({"resources": resources, "metadata": {"channel_id": channel}});
        let r: Value = ureq::post(&url)
            .set("content-type", "application/json")
            .send_string(&body.to_string())
            .with_context(|| format!("embed-content batch {b}"))?
            .into_json()?;
        let returned = Instant::now();
        anyhow::ensure!(
            r["added"].as_u64() == Some(chunk.len() as u64),
            "embed-content batch {b}: {r}"
        );
        published += chunk.len();
        // The batch's last content, asked for by a topic with its own words.
        let probe = &resources[resources.len() - 1];
        let id = probe["id"].as_str().unwrap_or_default();
        let topic = topic_body(&probe["title"], &probe["description"], &probe["language"]);
        loop {
            let v: Value = ureq::post(&rec)
                .set("content-type", "application/json")
                .send_string(&topic)
                .context("recommend (freshness)")?
                .into_json()?;
            if ids_of(&v).iter().any(|x| x == id) {
                break;
            }
            anyhow::ensure!(
                returned.elapsed() < FRESH_LIMIT,
                "content {id} was not recommended {FRESH_LIMIT:?} after embed-content returned"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        worst = worst.max(returned.elapsed().as_secs_f64());
    }
    anyhow::ensure!(published == n, "published {published} of {n}");
    Ok((t0.elapsed().as_secs_f64(), worst))
}

/// The whole benchmark; prints the table. Fails when an answer changed across the restart.
pub fn run(o: &CatalogBenchOptions) -> Result<CatalogFigures> {
    anyhow::ensure!(o.contents >= 2, "--contents must be at least 2");
    let tmp = tempfile::tempdir()?;
    let postgres = o.index == "postgres";
    anyhow::ensure!(
        !(postgres && o.store.is_some()),
        "--store is a folder: with --index postgres the bench builds its store in a throwaway \
         PostgreSQL cluster"
    );
    let cluster = if postgres {
        Some(crate::store::cluster::Cluster::start_pgvector()?)
    } else {
        None
    };
    let store_dir = o.store.clone().unwrap_or_else(|| tmp.path().join("store"));
    let store = match &cluster {
        Some(c) => Location::Postgres(c.url()),
        None => Location::Dir(store_dir.clone()),
    };
    let languages = o
        .languages
        .clone()
        .unwrap_or_else(|| DEFAULT_LANGUAGES.iter().map(|s| s.to_string()).collect());
    println!(
        "bench catalog: {} contents in {} languages; CPU: {}; {} threads",
        o.contents,
        languages.len(),
        super::serve::cpu_features(),
        rayon::current_num_threads()
    );
    let mut f = CatalogFigures {
        contents: o.contents,
        ..Default::default()
    };
    let t0 = Instant::now();
    let corpus = tmp.path().join("corpus");
    generate(
        &SynthConfig {
            topics: (o.contents / 2).max(2),
            contents: o.contents,
            languages,
            seed: o.seed,
            studio_ids: true,
            ..Default::default()
        },
        &corpus,
    )?;
    let ds = crate::data::load_dataset(&corpus)?;
    f.generate_s = t0.elapsed().as_secs_f64();
    println!(
        "generated {} contents, {} topics in {:.1}s",
        ds.contents.len(),
        ds.topics.len(),
        f.generate_s
    );
    f.contents = ds.contents.len();
    let limit = Duration::from_secs(3600);
    // A first start on the empty store records the model's id there (and tells the dimension).
    // In memory: the search table is made (and its HNSW graphs built) by the first start on
    // the full store, as an operator's first start would.
    let first = ServerProcess::start(
        serve_cmd(o, &store, "memory")?,
        "lecr serve (empty store)",
        limit,
    )?;
    let dim = served_dim(&first.base)?;
    f.empty_rss_mib = first.rss_mib();
    first.stop()?;
    let t0 = Instant::now();
    let mut vectors = Vectors::new(&o.vectors, dim, o.seed, &o.models, o.int8, MAX_LEN)?;
    println!("{}", vectors.describe());
    build_store(&ds, &store, &mut vectors)?;
    f.build_s = t0.elapsed().as_secs_f64();
    println!(
        "store built: {} contents x {dim} dims in {:.1}s ({})",
        f.contents, f.build_s, store
    );
    let server = ServerProcess::start(serve_cmd(o, &store, &o.index)?, "lecr serve", limit)?;
    f.start_s = server.ready_s;
    f.rss_mib = server.rss_mib();
    f.peak_rss_mib = server.peak_rss_mib();
    f.rss_anon_mib = server.status_mib("RssAnon:");
    f.rss_file_mib = server.status_mib("RssFile:");
    let served = metrics(&server.base)?;
    f.lexical_mapped_bytes = served.mapped;
    f.metadata_file_bytes = served.metadata_file;
    f.parts = served.parts;
    if let Some((_, b)) = f.parts.pop() {
        f.exact_file_bytes = b;
    }
    println!(
        "started in {:.1}s; RSS {:.0} MiB (peak {:.0} MiB)",
        f.start_s, f.rss_mib, f.peak_rss_mib
    );
    if postgres {
        let settings = crate::store::search::SearchSettings {
            ef_search: o.ef_search,
            indexed_from: o.hnsw_from,
            ..Default::default()
        };
        // The queries: random unit vectors, or with the model's vectors the topics' own.
        let queries = vectors
            .is_model()
            .then(|| topic_queries(&ds, &mut vectors, 200, o.seed));
        let r = super::catalog_pg::recall(&store, settings, queries.transpose()?, 200, o.seed)?;
        println!(
            "search ({}; {}): recall@100 {:.4} against exact search over {} queries ({:.4} counting \
             near-ties); query p50 {:.1} ms, p99 {:.1} ms (one client); search table {:.1} MiB \
             on the server",
            r.engine,
            r.plan,
            r.recall,
            r.queries,
            r.near,
            r.p50_ms,
            r.p99_ms,
            r.table_bytes as f64 / (1u64 << 20) as f64
        );
        f.recall = Some(r);
    }
    let bodies = studio_bodies(&ds, 2000, o.seed);
    anyhow::ensure!(
        !bodies.is_empty(),
        "the generated corpus has no topic with content"
    );
    let r = load(&server.base, &bodies, o.clients, o.seconds);
    (f.requests, f.errors, f.per_second, f.p50_ms, f.p99_ms) =
        (r.requests, r.errors, r.per_second, r.p50_ms, r.p99_ms);
    let loaded = metrics(&server.base)?;
    let ranked = loaded.ranked - served.ranked;
    f.rescored_per_topic =
        (ranked > 0.0 && !postgres).then(|| (loaded.rescored - served.rescored) / ranked);
    println!(
        "recommend at {} clients: {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms, {} errors; {}",
        o.clients,
        f.per_second,
        f.p50_ms,
        f.p99_ms,
        f.errors,
        rescored_line(f.rescored_per_topic)
    );
    if o.fresh > 0 {
        (f.publish_s, f.fresh_max_s) = freshness(&server.base, &ds, o.fresh)?;
        f.fresh = o.fresh;
        println!(
            "{} new contents published in {:.1}s; recommendable at most {:.3}s after their \
             request returned",
            f.fresh, f.publish_s, f.fresh_max_s
        );
    }
    let served = metrics(&server.base)?;
    f.uncertain = served.uncertain as u64;
    println!("index bytes after the load: {:?}", served.parts);
    // A refit fits what the start fitted, in idle time: allow it several start times.
    let settle_limit = FRESH_LIMIT.max(Duration::from_secs_f64(f.start_s * 4.0));
    settle(&server.base, settle_limit)?;
    let probe = &bodies[..o.compare.min(bodies.len())];
    let before = answers(&server.base, probe)?;
    server.kill()?;
    let again = ServerProcess::start(
        serve_cmd(o, &store, &o.index)?,
        "lecr serve (after kill -9)",
        limit,
    )?;
    f.restart_s = again.ready_s;
    settle(&again.base, settle_limit)?;
    let after = answers(&again.base, probe)?;
    again.stop()?;
    f.compared = before.len();
    f.same = before.iter().zip(&after).filter(|(a, b)| a == b).count();
    print_table(&f, o);
    anyhow::ensure!(
        f.same == f.compared,
        "{} of {} topics got other answers after kill -9 and restart",
        f.compared - f.same,
        f.compared
    );
    if o.store.is_some() {
        println!("store kept: {store}");
    }
    Ok(f)
}

fn print_table(f: &CatalogFigures, o: &CatalogBenchOptions) {
    let n = f.contents.max(1) as f64;
    let mib = |b: f64| b / (1u64 << 20) as f64;
    println!(
        "\ncatalog of {} contents (generated texts, {} vectors; CPU: {})",
        f.contents,
        o.vectors,
        super::serve::cpu_features()
    );
    println!("| figure | value |\n| --- | --- |");
    println!(
        "| generate the corpus (not part of serving) | {:.1} s |",
        f.generate_s
    );
    println!("| build the store | {:.1} s |", f.build_s);
    println!(
        "| start `lecr serve` on the store (to ready) | {:.1} s |",
        f.start_s
    );
    println!(
        "| RSS after start | {:.0} MiB (peak {:.0} MiB; on the empty store {:.0} MiB) |",
        f.rss_mib, f.peak_rss_mib, f.empty_rss_mib
    );
    println!(
        "| of it: anonymous (heap) / file-backed (mapped files, reclaimable) | {:.0} / {:.0} MiB |",
        f.rss_anon_mib, f.rss_file_mib
    );
    println!(
        "| RSS the contents add (after start, less the empty store's) | {:.0} bytes per content |",
        (f.rss_mib - f.empty_rss_mib) * (1u64 << 20) as f64 / n
    );
    let mut total = 0.0;
    for (part, bytes) in &f.parts {
        total += bytes;
        println!(
            "| index: {part} | {:.0} bytes per content ({:.1} MiB) |",
            bytes / n,
            mib(*bytes)
        );
    }
    println!(
        "| index: all parts, in memory | {:.0} bytes per content ({:.1} MiB) |",
        total / n,
        mib(total)
    );
    println!(
        "| exact f32 vectors, on disk (read back to rescore each ranking's top) | {:.0} bytes per content ({:.1} MiB) |",
        f.exact_file_bytes / n,
        mib(f.exact_file_bytes)
    );
    println!(
        "| metadata texts, on disk (read back for what responses return) | {:.0} bytes per content ({:.1} MiB) |",
        f.metadata_file_bytes / n,
        mib(f.metadata_file_bytes)
    );
    if f.lexical_mapped_bytes > 0.0 {
        println!(
            "| lexical, used in place from its saved files (page cache, not heap) | {:.0} bytes per content ({:.1} MiB) |",
            f.lexical_mapped_bytes / n,
            mib(f.lexical_mapped_bytes)
        );
    }
    println!(
        "| recommend, Studio-shaped, {} clients, {:.0} s | {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms, {} errors; {} |",
        o.clients,
        o.seconds,
        f.per_second,
        f.p50_ms,
        f.p99_ms,
        f.errors,
        rescored_line(f.rescored_per_topic)
    );
    if f.fresh > 0 {
        println!(
            "| {} new contents (embed-content, batches of 20) | published in {:.1} s; recommendable at most {:.3} s after their request returned |",
            f.fresh, f.publish_s, f.fresh_max_s
        );
    }
    println!(
        "| kill -9, then restart (to ready) | {:.1} s; {}/{} topics answered the same |",
        f.restart_s, f.same, f.compared
    );
    if let Some(r) = &f.recall {
        println!(
            "| index in PostgreSQL ({}; HNSW, halfvec, ef_search {}, graphs from {} contents): recall@100 against exact search, {} vectors | {:.4} over {} queries ({}); {:.4} counting ties within {:e} of the exact 100th score |",
            r.engine, o.ef_search, o.hnsw_from, o.vectors, r.recall, r.queries, r.plan, r.near, super::catalog_pg::TIE
        );
        println!(
            "| its nearest-100 query, one client | p50 {:.1} ms, p99 {:.1} ms |",
            r.p50_ms, r.p99_ms
        );
        println!(
            "| its search table and indexes, on the PostgreSQL server | {:.0} bytes per content ({:.1} MiB) |",
            r.table_bytes as f64 / n,
            mib(r.table_bytes as f64)
        );
        if o.models.iter().any(|m| m == "lexical") {
            println!(
                "| answers given at the pool's cap without certainty (`lecr_search_uncertain_total`) | {} of the load's {} requests |",
                f.uncertain, f.requests
            );
        }
    }
}

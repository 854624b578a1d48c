//! `serve`: the recommendations service.

use anyhow::Result;
use clap::Args;
use lecr::serve::limits::Limits;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Model folder or hub name; repeat to ensemble (similarities averaged, as in `eval`).
    /// `lexical` adds the character n-gram TF-IDF retriever to the ensemble (it needs a model
    /// next to it; its index is rebuilt from the stored texts at start and after writes).
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Quantize float models to int8 as they load.
    #[arg(long)]
    int8: bool,
    /// Round float models' dense layers to bf16 as they load (f32 sums; the AVX512-BF16
    /// kernel where the CPU has it). Inference only.
    #[arg(long, conflicts_with = "int8")]
    bf16: bool,
    /// The durable store: a folder (SQLite) or a `postgres://` URL (shared by replicas; the
    /// password is never printed). Contents, vectors, the model that made them, Studio's
    /// topics, decisions. Without it the index lives in memory only.
    #[arg(long, env = "LECR_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Seed the index from a Kaggle-layout folder's content.csv (channels from correlations);
    /// unchanged contents already in the store are not embedded again.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Embed a store's contents again when it was made by another model (otherwise refused).
    #[arg(long)]
    reembed: bool,
    /// Rerank the candidates with this `lecr rerank train` folder and select on its
    /// probability. It must have been trained with one model, or one model and `lexical`,
    /// given here as --model in the same order; tree context comes from --data's links.
    #[arg(long)]
    reranker: Option<PathBuf>,
    /// With a reranker that reads a cross-encoder: how many (topic, content) logits to keep by
    /// their texts, so a topic asked for again costs no transformer pass (0: keep none).
    #[arg(long, default_value_t = lecr::serve::cross_cache::DEFAULT_PAIRS)]
    cross_cache: usize,
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: String,
    /// Path prefix of Studio's endpoints (Studio uses `stable`).
    #[arg(long, default_value = "stable")]
    prefix: String,
    /// Threshold margin of recommend (method §8; 0.18 as in the original's submission).
    #[arg(long, default_value_t = 0.18)]
    margin: f32,
    /// Recommendations per topic with `override_threshold=True`.
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// Require `Authorization: Bearer <key>` on Studio's endpoints and the page's `/api`
    /// (compared in constant time; an empty key is an error).
    #[arg(long, env = "LECR_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A Host name this server answers (repeat; `*`: any). Default: the bound address,
    /// localhost, 127.0.0.1 and [::1]. Others get 403 (DNS rebinding); /health and /metrics
    /// answer any.
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Serve Studio's routes on this address instead (e.g. an address only the cluster
    /// reaches); --addr then serves the curator page and its /api only.
    #[arg(long)]
    studio_addr: Option<String>,
    /// Require `Authorization: Bearer <key>` on Studio's listener (Studio's own client sends
    /// none, so leave it unset for Studio).
    #[arg(long, env = "LECR_STUDIO_KEY", hide_env_values = true)]
    studio_key: Option<String>,
    /// A Host name Studio's listener answers (repeat; `*`: any). Default: its bound address
    /// and the loopback names.
    #[arg(long = "studio-allow-host")]
    studio_allow_hosts: Vec<String>,
    /// Serve /metrics here (with --studio-addr; default: on Studio's listener).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Where the contents' vectors and their nearest-neighbour search live: `memory` (in each
    /// server, exact) or `postgres` (in the PostgreSQL --store, pgvector's HNSW graphs, so a
    /// server holds no vectors; needs the `vector` extension, see README; with --model
    /// lexical each server keeps the lexical index and ranks the union of both lists).
    #[arg(long, default_value = "memory", value_parser = ["memory", "postgres"])]
    index: String,
    /// With --index postgres: candidates each HNSW search keeps (pgvector's hnsw.ef_search,
    /// 1 to 1000): more finds more of the exact neighbours, more slowly.
    #[arg(long, default_value_t = lecr::store::search::SearchSettings::default().ef_search)]
    ef_search: usize,
    /// With --index postgres: a language of at least this many contents gets an HNSW graph of
    /// its own at start; a smaller one is scanned exactly (exact answers, about 1.2 ms per
    /// 1,000 contents).
    #[arg(long, default_value_t = lecr::store::search::SearchSettings::default().indexed_from)]
    hnsw_from: usize,
    #[arg(long, default_value_t = 96)]
    max_len: usize,
    /// The prompt topic texts (recommend, the page) get: a prompt name of the model folder
    /// (config_sentence_transformers.json) or the text itself, "" for none [default: the
    /// folder's query prompt, if any].
    #[arg(long)]
    topic_prompt: Option<String>,
    /// The prompt content texts (embed-content) get [default: the folder's passage prompt].
    #[arg(long)]
    content_prompt: Option<String>,
    /// Encoder batch size (seeding).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Most topic texts the model worker embeds together (and most cross-encoder pairs it reads
    /// together).
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Topics per recommend / embed-topics request (more: 413).
    #[arg(long, default_value_t = Limits::DEFAULT.max_topics)]
    max_topics: usize,
    /// Ancestors per topic (more: 413).
    #[arg(long, default_value_t = Limits::DEFAULT.max_ancestors)]
    max_ancestors: usize,
    /// Resources per embed-content, ids per remove-content (more: 413).
    #[arg(long, default_value_t = Limits::DEFAULT.max_resources)]
    max_resources: usize,
    /// Characters of a title, description or text (a topic over it: 422; a resource over it
    /// is skipped with the reason).
    #[arg(long, default_value_t = Limits::DEFAULT.max_text_chars)]
    max_text_chars: usize,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = Limits::DEFAULT.max_body_bytes >> 20)]
    max_body_mib: usize,
    /// Texts waiting for the model before new work is refused (503 with Retry-After).
    #[arg(long, default_value_t = Limits::DEFAULT.max_queue)]
    max_queue: usize,
    /// Requests handled at once before new ones are refused (503 with Retry-After).
    #[arg(long, default_value_t = Limits::DEFAULT.max_inflight)]
    max_inflight: usize,
    /// Content texts per model job of an embed-content (recommends run between slices).
    #[arg(long, default_value_t = Limits::DEFAULT.embed_slice)]
    embed_slice: usize,
    /// Requests running longer are answered 408, and a write that has not begun to commit is
    /// cancelled (nothing changes).
    #[arg(long, default_value_t = Limits::DEFAULT.timeout.as_secs())]
    timeout_s: u64,
    /// A connection must send its request headers within this many seconds.
    #[arg(long, default_value_t = Limits::DEFAULT.header_timeout.as_secs())]
    header_timeout_s: u64,
    /// After SIGTERM, in-flight requests get this many seconds to finish.
    #[arg(long, default_value_t = Limits::DEFAULT.shutdown_timeout.as_secs())]
    shutdown_timeout_s: u64,
}

pub(crate) fn serve(a: ServeArgs) -> Result<i32> {
    use std::time::Duration;
    lecr::serve::run(lecr::serve::ServeOptions {
        models: a.models,
        int8: a.int8,
        bf16: a.bf16,
        max_len: a.max_len,
        batch_size: a.batch_size,
        topic_prompt: a.topic_prompt,
        content_prompt: a.content_prompt,
        max_batch: a.max_batch,
        store: a.store.as_deref().map(lecr::store::Location::parse),
        data: a.data,
        reembed: a.reembed,
        reranker: a.reranker,
        cross_cache: a.cross_cache,
        addr: a.addr,
        prefix: a.prefix,
        margin: a.margin,
        top_k: a.top_k,
        api_key: a.api_key,
        allow_hosts: a.allow_hosts,
        studio_addr: a.studio_addr,
        studio_key: a.studio_key,
        studio_allow_hosts: a.studio_allow_hosts,
        metrics_addr: a.metrics_addr,
        index: match a.index.as_str() {
            "postgres" => {
                lecr::serve::engine::IndexMode::Postgres(lecr::store::search::SearchSettings {
                    ef_search: a.ef_search,
                    indexed_from: a.hnsw_from.max(1),
                    // A search never outlives its request.
                    timeout: lecr::store::search::SearchSettings::default()
                        .timeout
                        .min(Duration::from_secs(a.timeout_s.max(1))),
                })
            }
            _ => lecr::serve::engine::IndexMode::Memory,
        },
        limits: Limits {
            max_topics: a.max_topics,
            max_ancestors: a.max_ancestors,
            max_resources: a.max_resources,
            max_text_chars: a.max_text_chars,
            max_body_bytes: a.max_body_mib << 20,
            max_queue: a.max_queue,
            max_inflight: a.max_inflight,
            embed_slice: a.embed_slice,
            timeout: Duration::from_secs(a.timeout_s),
            header_timeout: Duration::from_secs(a.header_timeout_s),
            shutdown_timeout: Duration::from_secs(a.shutdown_timeout_s),
            ..Limits::DEFAULT
        },
    })?;
    Ok(0)
}

//! `serve`: the recommendations service.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Model folder or hub name; repeat to ensemble (similarities averaged, as in `eval`).
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Quantize float models to int8 as they load.
    #[arg(long)]
    int8: bool,
    /// Folder of the durable store (SQLite: contents, vectors, the model that made them).
    /// Without it the index lives in memory only.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Seed the index from a Kaggle-layout folder's content.csv (channels from correlations);
    /// unchanged contents already in the store are not embedded again.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Embed a store's contents again when it was made by another model (otherwise refused).
    #[arg(long)]
    reembed: bool,
    /// Rerank the model's candidates with this `lecr rerank train` folder (trained with this one
    /// model) and select on its probability; tree context comes from --data's links.
    #[arg(long)]
    reranker: Option<PathBuf>,
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
    /// Require `Authorization: Bearer <key>` on Studio's endpoints.
    #[arg(long, env = "LECR_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[arg(long, default_value_t = 96)]
    max_len: usize,
    /// Encoder batch size (seeding, embed-content).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Most topic texts the dynamic batcher embeds together.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 16)]
    max_body_mib: usize,
    /// Requests running longer are answered 408.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
}

pub(crate) fn serve(a: ServeArgs) -> Result<i32> {
    lecr::serve::run(lecr::serve::ServeOptions {
        models: a.models,
        int8: a.int8,
        max_len: a.max_len,
        batch_size: a.batch_size,
        max_batch: a.max_batch,
        store: a.store,
        data: a.data,
        reembed: a.reembed,
        reranker: a.reranker,
        addr: a.addr,
        api: lecr::serve::api::ApiOptions {
            prefix: a.prefix,
            margin: a.margin,
            top_k: a.top_k,
            api_key: a.api_key.filter(|k| !k.is_empty()),
            max_body_bytes: a.max_body_mib << 20,
            timeout: std::time::Duration::from_secs(a.timeout_s),
        },
    })?;
    Ok(0)
}

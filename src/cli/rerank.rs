//! `rerank train`: the second stage's booster, trained on a fold the retrievers did not see.

use anyhow::Result;
use clap::{Args, Subcommand};
use lecr::rerank::model::BoostSettings;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub(crate) enum RerankCmd {
    /// Train a reranker on the topics of --fold: candidates from every --model (top --k each),
    /// features, gradient-boosted trees; prints candidate recall, the comparison with the
    /// retrievers alone (out of fold) and the feature importances, and writes the folder.
    Train(TrainArgs),
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// Data folder with fold columns (`lecr split`).
    #[arg(long)]
    data: PathBuf,
    /// The fold to train on: one the retrievers did not train on (their validation fold).
    #[arg(long)]
    fold: i32,
    /// Retriever: model folder or hub name, or `lexical`. Repeat for several.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Output folder (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// Candidates drawn from each retriever per topic.
    #[arg(long, default_value_t = lecr::rerank::DEFAULT_K)]
    k: usize,
    /// Token limit when embedding with a model.
    #[arg(long, default_value_t = 96)]
    max_len: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Quantize float models to int8 as they load.
    #[arg(long)]
    int8: bool,
    /// Round float models' dense layers to bf16 as they load (f32 sums; the AVX512-BF16
    /// kernel where the CPU has it). Inference only.
    #[arg(long, conflicts_with = "int8")]
    bf16: bool,
    /// Boosting rounds.
    #[arg(long, default_value_t = BoostSettings::default().trees)]
    trees: usize,
    #[arg(long, default_value_t = BoostSettings::default().learning_rate)]
    learning_rate: f32,
    /// Tree depth.
    #[arg(long, default_value_t = BoostSettings::default().max_depth)]
    depth: usize,
    #[arg(long, default_value_t = BoostSettings::default().seed)]
    seed: u64,
    /// Share of the fold's topics also trained without tree context (as a topic of a channel
    /// nobody has linked yet sees it); compare the report's "new-channel context" row.
    #[arg(long, default_value_t = lecr::rerank::DEFAULT_COLD_SHARE)]
    cold_share: f64,
    /// A cross-encoder folder (`lecr cross train`'s `best/`, trained without this fold): its
    /// logit on each topic's best --cross-top candidates becomes a feature.
    #[arg(long)]
    cross: Option<PathBuf>,
    /// Candidates per topic the cross-encoder reads.
    #[arg(long, default_value_t = lecr::cross::DEFAULT_TOP)]
    cross_top: usize,
    /// The cross-encoder's arithmetic, saved with the reranker (eval, predict and serve read
    /// it the same way): int8 is the fastest on every CPU.
    #[arg(long, value_enum, default_value_t = lecr::cross::model::Precision::DEFAULT_FOR_RERANKER)]
    cross_precision: lecr::cross::model::Precision,
}

pub(crate) fn rerank(c: RerankCmd) -> Result<i32> {
    match c {
        RerankCmd::Train(a) => train(a),
    }
}

fn train(a: TrainArgs) -> Result<i32> {
    let t0 = Instant::now();
    let ds = lecr::data::load_dataset(&a.data)?;
    anyhow::ensure!(
        ds.topics.iter().any(|t| t.fold.is_some()),
        "{}: topics.csv has no fold column; run `lecr split` first",
        a.data.display()
    );
    let sources: Vec<_> = a
        .models
        .iter()
        .map(|m| lecr::pipeline::Source::from_model_arg(m))
        .collect();
    let settings = lecr::pipeline::EmbedSettings {
        max_len: a.max_len,
        batch_size: a.batch_size,
        int8: a.int8,
        bf16: a.bf16,
        ..Default::default()
    };
    let opts = lecr::rerank::TrainOptions {
        k: a.k,
        boost: BoostSettings {
            trees: a.trees,
            learning_rate: a.learning_rate,
            max_depth: a.depth,
            seed: a.seed,
            ..Default::default()
        },
        cold_share: a.cold_share,
        cross: a.cross.as_ref().map(|d| lecr::rerank::model::CrossFeature {
            // Absolute, so eval and predict find it from anywhere.
            dir: std::fs::canonicalize(d)
                .unwrap_or_else(|_| d.clone())
                .display()
                .to_string(),
            top: a.cross_top,
            precision: a.cross_precision,
            fingerprint: None,
        }),
    };
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.cold_share),
        "--cold-share must be in [0, 1]"
    );
    let (rr, report) = lecr::rerank::train(&ds, &sources, &a.models, &settings, a.fold, &opts)?;
    let text = report.render(a.k);
    rr.save(&a.out)?;
    lecr::io::write_atomic(&a.out.join("report.md"), |w| {
        w.write_all(text.as_bytes())?;
        Ok(())
    })?;
    print!("{text}");
    println!(
        "\nselection: {}; trained in {:.1}s",
        serde_json::to_string(&rr.meta.selection)?,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "wrote {} (booster.json, booster-a.json, booster-b.json, reranker.json, importances.csv, report.md)",
        a.out.display()
    );
    Ok(0)
}

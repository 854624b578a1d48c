//! `cross train` and `cross eval`: the cross-encoder stage, trained on the retrievers'
//! candidates of the training folds and scored on a fold it never saw.

use anyhow::Result;
use clap::{Args, Subcommand};
use lecr::cross::model::{CrossEncoder, CrossOptions};
use lecr::cross::train::{CrossConfig, CrossTrainer};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub(crate) enum CrossCmd {
    /// Train a cross-encoder from an encoder folder on the retrievers' top candidates of the
    /// training folds (true links against the other candidates, binary cross-entropy), keeping
    /// the epoch whose re-ordering of the --fold topics' top --top candidates scores best.
    /// Resumable (`--resume RUN`).
    Train(TrainArgs),
    /// Score a cross-encoder on a fold: the retrievers' order of each topic's top N against
    /// the cross-encoder's, for every N of --top (F2 and cross-encoder time per topic).
    Eval(EvalArgs),
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// Continue the run in this folder after its last finished epoch (other flags ignored).
    #[arg(long, conflicts_with_all = ["data", "base", "output"])]
    resume: Option<PathBuf>,
    /// Data folder with fold columns (`lecr split`).
    #[arg(long, required_unless_present = "resume")]
    data: Option<String>,
    /// The encoder folder (or hub name) to start from: a BERT / XLM-R model, or a cross-encoder
    /// folder to train further.
    #[arg(long, required_unless_present = "resume")]
    base: Option<String>,
    /// Retriever whose candidates it learns to re-score: model folder, hub name or `lexical`.
    /// Repeat for several (their mean orders the candidates).
    #[arg(long = "model", required_unless_present = "resume")]
    models: Vec<String>,
    /// Run folder.
    #[arg(long, required_unless_present = "resume")]
    output: Option<String>,
    /// Validation fold (not trained on).
    #[arg(long, default_value_t = 0)]
    fold: i32,
    /// A fold kept out of training too (the one held out for `cross eval`). Repeatable.
    #[arg(long = "exclude-fold")]
    exclude_folds: Vec<i32>,
    #[arg(long, default_value_t = CrossConfig::default().epochs)]
    epochs: usize,
    /// Stop after this many epochs in this call (resume later).
    #[arg(long)]
    max_epochs_this_run: Option<usize>,
    #[arg(long, default_value_t = CrossConfig::default().batch_size)]
    batch_size: usize,
    #[arg(long, default_value_t = CrossConfig::default().lr)]
    lr: f64,
    /// Token limit of a pair.
    #[arg(long, default_value_t = CrossConfig::default().max_len)]
    max_len: usize,
    /// Candidates per training topic that negatives are drawn from.
    #[arg(long, default_value_t = CrossConfig::default().k)]
    k: usize,
    /// Candidates re-scored per validation topic.
    #[arg(long, default_value_t = CrossConfig::default().top)]
    top: usize,
    /// True links per training topic per epoch (at most).
    #[arg(long, default_value_t = CrossConfig::default().positives)]
    positives: usize,
    /// Retriever candidates that are not links, per training topic per epoch.
    #[arg(long, default_value_t = CrossConfig::default().negatives)]
    negatives: usize,
    /// Train on at most this many topics (a fixed draw; 0: all).
    #[arg(long, default_value_t = 0)]
    max_topics: usize,
    /// Validate on at most this many topics (a fixed draw; 0: all).
    #[arg(long, default_value_t = CrossConfig::default().max_val_topics)]
    max_val_topics: usize,
    /// `f32`, or `bf16`: each step's products in bf16 (f32 weights, sums and optimizer).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Curators' decisions (a service store or `lecr feedback export` folder): the contents
    /// they rejected become negatives of their topic in every epoch.
    #[arg(long)]
    feedback: Option<String>,
    /// Token limit of the retrievers' texts.
    #[arg(long, default_value_t = lecr::pipeline::EMBED_MAX_LEN)]
    retriever_max_len: usize,
    #[arg(long, default_value_t = CrossConfig::default().seed)]
    seed: u64,
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[arg(long)]
    data: PathBuf,
    /// The fold to score (one neither the cross-encoder nor the retrievers trained on).
    #[arg(long)]
    fold: i32,
    /// Retriever: model folder, hub name or `lexical`. Repeat for several.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// The cross-encoder folder (a run's `best/`).
    #[arg(long)]
    cross: PathBuf,
    /// Candidates read per topic; repeat (or comma-separate) for the F2 / cost curve.
    #[arg(long, value_delimiter = ',', default_values_t = [5usize, 10, 20, 40])]
    top: Vec<usize>,
    /// Score at most this many of the fold's topics (a fixed draw; 0: all).
    #[arg(long, default_value_t = 0)]
    max_topics: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// The cross-encoder's dense layers in int8 (quantized as it loads).
    #[arg(long)]
    int8: bool,
    /// The cross-encoder's dense layers rounded to bf16.
    #[arg(long, conflicts_with = "int8")]
    bf16: bool,
    #[arg(long, default_value_t = lecr::pipeline::EMBED_MAX_LEN)]
    retriever_max_len: usize,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub(crate) fn cross(c: CrossCmd) -> Result<i32> {
    match c {
        CrossCmd::Train(a) => train(a),
        CrossCmd::Eval(a) => eval(a),
    }
}

fn train(a: TrainArgs) -> Result<i32> {
    let t0 = Instant::now();
    let mut t = match &a.resume {
        Some(run) => CrossTrainer::resume(run)?,
        None => CrossTrainer::new(CrossConfig {
            data: a.data.clone().unwrap_or_default(),
            base: a.base.clone().unwrap_or_default(),
            retrievers: a.models.clone(),
            retriever_max_len: a.retriever_max_len,
            fold: a.fold,
            exclude_folds: a.exclude_folds.clone(),
            max_topics: a.max_topics,
            max_val_topics: a.max_val_topics,
            k: a.k,
            top: a.top,
            positives: a.positives,
            negatives: a.negatives,
            epochs: a.epochs,
            batch_size: a.batch_size,
            lr: a.lr,
            max_len: a.max_len,
            seed: a.seed,
            precision: a.precision.clone(),
            feedback: a.feedback.clone().unwrap_or_default(),
            output: a.output.clone().unwrap_or_default(),
            ..Default::default()
        })?,
    };
    t.fit(a.max_epochs_this_run)?;
    println!(
        "best epoch {} (validation F2 {:.4}; the retriever's order {:.4}); {:.1}s",
        t.state.best_epoch,
        t.state.best_f2,
        t.state.retriever_f2,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "wrote {run}/best (the cross-encoder), {run}/last (resumable), {run}/train.log, {run}/metrics.jsonl",
        run = t.run.display()
    );
    Ok(0)
}

fn eval(a: EvalArgs) -> Result<i32> {
    anyhow::ensure!(
        !a.top.is_empty() && a.top.iter().all(|&n| n >= 1),
        "--top: give candidate counts of at least 1"
    );
    let ds = lecr::data::load_dataset(&a.data)?;
    let truth = lecr::select::truth(&ds);
    let topics: Vec<usize> = (0..ds.topics.len())
        .filter(|&t| ds.topics[t].fold == Some(a.fold) && truth.contains_key(&t))
        .collect();
    anyhow::ensure!(
        !topics.is_empty(),
        "{}: fold {} has no topic with links (run `lecr split` first)",
        a.data.display(),
        a.fold
    );
    let topics = if a.max_topics > 0 && topics.len() > a.max_topics {
        let step = topics.len() as f64 / a.max_topics as f64;
        (0..a.max_topics)
            .map(|i| topics[(i as f64 * step) as usize])
            .collect()
    } else {
        topics
    };
    let model = CrossEncoder::load(
        &lecr::model::hub::resolve_model(&a.cross.to_string_lossy())?,
        &CrossOptions {
            int8: a.int8,
            bf16: a.bf16,
            ..Default::default()
        },
    )?;
    let sources: Vec<_> = a
        .models
        .iter()
        .map(|m| lecr::pipeline::Source::from_model_arg(m))
        .collect();
    let settings = lecr::pipeline::EmbedSettings {
        max_len: a.retriever_max_len,
        ..Default::default()
    };
    let deepest = a.top.iter().copied().max().unwrap_or(1);
    let lists = lecr::cross::candidate_lists(&ds, &sources, &settings, &topics, deepest)?;
    let rows = lecr::cross::evaluate_budgets(&model, &ds, &lists, &a.top, a.batch_size)?;
    println!(
        "fold {}: {} topics; cross-encoder {} ({}, max {} tokens); selection and margin at \
         their best on these topics for both\n",
        a.fold,
        topics.len(),
        a.cross.display(),
        if a.int8 {
            "int8"
        } else if a.bf16 {
            "bf16"
        } else {
            "f32"
        },
        model.max_len()
    );
    print!("{}", lecr::cross::render_budgets(&rows, topics.len()));
    if let Some(p) = &a.json {
        lecr::io::write_atomic(p, |w| Ok(serde_json::to_writer_pretty(w, &rows)?))?;
        println!("wrote {}", p.display());
    }
    Ok(0)
}

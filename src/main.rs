//! The `lecr` command line: parses arguments, calls the library, prints where outputs went.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lecr",
    version,
    about = "Recommend educational content for curriculum topics (Learning Equality LECR data)",
    long_about = "lecr learns from the topic–content alignments curators already made and proposes \
                  ranked content for new topics. Data folders use the Kaggle LECR layout: \
                  topics.csv, content.csv, correlations.csv, sample_submission.csv."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a synthetic corpus in the Kaggle layout (for demos, tests and benchmarks).
    Synth(cli::data::SynthArgs),
    /// Inspect a data folder.
    #[command(subcommand)]
    Data(cli::data::DataCmd),
    /// Split the topics into cross-validation folds that minimise content overlap (method §3)
    /// and write the data again with fold columns.
    Split(cli::data::SplitArgs),
    /// Embed the topics and contents of a data folder (method §2 texts), or raw texts one per
    /// line, and write the vectors as safetensors with ids and languages beside them.
    Embed(cli::model::EmbedArgs),
    /// Fine-tune an encoder with InfoNCE, the hard-negative sampler and language switching
    /// (method §4–§7), validating on a fold each epoch. Resumable.
    Train(cli::train::TrainArgs),
    /// Layer-drop distillation (method §9): the student is the teacher with only --layers, trained
    /// to match the frozen teacher's embeddings and last hidden states on the training sampler's
    /// batches; same schedule, checkpoints, metrics and resume as `train`.
    Distill(cli::train::DistillArgs),
    /// Score a model (or several, ensembled; or saved features; or `--model lexical`) on a
    /// validation fold: F2 / precision / recall per language (method §8), R@k, P@k, MRR.
    Eval(cli::select::EvalArgs),
    /// Write a Kaggle submission for the topics of sample_submission.csv.
    Predict(cli::select::PredictArgs),
    /// Curators' decisions from the service's page: export them as CSV, or simulate a curator
    /// from held-back truth for experiments (`lecr train --set feedback=DIR` learns from either).
    #[command(subcommand)]
    Feedback(cli::feedback::FeedbackCmd),
    /// The second stage: gradient-boosted trees that rerank the retrievers' candidates
    /// (`--reranker DIR` on eval, predict and serve).
    #[command(subcommand)]
    Rerank(cli::rerank::RerankCmd),
    /// The cross-encoder stage: a transformer that reads a topic and a candidate together
    /// (train it on the retrievers' candidates; score it against their order).
    #[command(subcommand)]
    Cross(cli::cross::CrossCmd),
    /// Int8 post-training quantization of a model folder's dense layers (SmoothQuant-calibrated,
    /// per-row weight scales); every --model option accepts the result.
    Quantize(cli::model::QuantizeArgs),
    /// Turn a checkpoint of the original solution (`weights_fold_0.pth`, a PyTorch state_dict
    /// of its Net) into a model folder that every --model option and sentence-transformers load.
    Import(cli::model::ImportArgs),
    /// Serve recommendations over HTTP: a drop-in backend for Kolibri Studio's curriculum
    /// automation client (connect / recommend / embed-topics / embed-content), with a durable
    /// content index, dynamic batching, /health and /metrics.
    Serve(Box<cli::serve::ServeArgs>),
    /// Benchmarks, printed as tables with ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(cli::bench::BenchCmd),
}

fn main() {
    // Keep freed memory in the process: glibc otherwise maps and unmaps every large tensor
    // buffer, which cost 40% of a training step here (as GLIBC_TUNABLES mmap/trim thresholds).
    // LECR_SYSTEM_MALLOC=1 keeps glibc's defaults (smaller resident memory for big scoring runs).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("LECR_SYSTEM_MALLOC").is_none() {
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
    // Piping into `head` must end quietly, not panic on a closed stdout.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs piped to a file or CI stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // A mistyped instruction-set cap must not silently measure the wrong kernels.
    if let Err(e) = lecr::kernels::isa::requested() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    // Chosen now, so a cap above this CPU is said once (the level below runs), before any work.
    lecr::kernels::isa::active();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Synth(a) => cli::data::synth(a),
        Cmd::Data(c) => cli::data::data(c),
        Cmd::Split(a) => cli::data::split(a),
        Cmd::Embed(a) => cli::model::embed(a),
        Cmd::Quantize(a) => cli::model::quantize(a),
        Cmd::Import(a) => cli::model::import(a),
        Cmd::Train(a) => cli::train::train(a, None),
        Cmd::Distill(a) => cli::train::distill(a),
        Cmd::Eval(a) => cli::select::eval(a),
        Cmd::Predict(a) => cli::select::predict(a),
        Cmd::Rerank(c) => cli::rerank::rerank(c),
        Cmd::Cross(c) => cli::cross::cross(c),
        Cmd::Feedback(c) => cli::feedback::feedback(c),
        Cmd::Serve(a) => cli::serve::serve(*a),
        Cmd::Bench(b) => cli::bench::bench(b),
    }
}

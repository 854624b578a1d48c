//! The `lecr` command line: parses arguments, calls the library, prints where outputs went.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use lecr::data::{self, split, synth, validate};
use std::path::PathBuf;
use std::time::Instant;

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
    Synth(SynthArgs),
    /// Inspect a data folder.
    #[command(subcommand)]
    Data(DataCmd),
    /// Split the topics into cross-validation folds that minimise content overlap (SPEC §3)
    /// and write the data again with fold columns.
    Split(SplitArgs),
    /// Embed the topics and contents of a data folder (SPEC §2 texts), or raw texts one per
    /// line, and write the vectors as safetensors with ids and languages beside them.
    Embed(EmbedArgs),
    /// Fine-tune an encoder with InfoNCE, the hard-negative sampler and language switching
    /// (SPEC §4–§7), validating on a fold each epoch. Resumable.
    Train(TrainArgs),
    /// Layer-drop distillation (SPEC §9): the student is the teacher with only --layers, trained
    /// to match the frozen teacher's embeddings and last hidden states on the training sampler's
    /// batches; same schedule, checkpoints, metrics and resume as `train`.
    Distill(DistillArgs),
    /// Score a model (or several, ensembled; or saved features; or `--model lexical`) on a
    /// validation fold: F2 / precision / recall per language (SPEC §8), R@k, P@k, MRR.
    Eval(EvalArgs),
    /// Write a Kaggle submission for the topics of sample_submission.csv.
    Predict(PredictArgs),
    /// Int8 post-training quantization of a model folder's dense layers (SmoothQuant-calibrated,
    /// per-row weight scales); every --model option accepts the result.
    Quantize(QuantizeArgs),
    /// Serve recommendations over HTTP: a drop-in backend for Kolibri Studio's curriculum
    /// automation client (connect / recommend / embed-topics / embed-content), with a durable
    /// content index, dynamic batching, /health and /metrics.
    Serve(ServeArgs),
    /// Benchmarks, printed as tables with ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Args)]
struct ServeArgs {
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
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: String,
    /// Path prefix of Studio's endpoints (Studio uses `stable`).
    #[arg(long, default_value = "stable")]
    prefix: String,
    /// Threshold margin of recommend (SPEC §8; 0.18 as in the original's submission).
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

#[derive(Args)]
struct QuantizeArgs {
    /// The float model folder (or hub name).
    #[arg(long)]
    model: String,
    /// Where to write the int8 model folder.
    #[arg(long)]
    out: PathBuf,
    /// Calibration texts, one per line (default: random vocabulary words, no data needed).
    #[arg(long, conflicts_with = "data")]
    calibration_texts: Option<PathBuf>,
    /// Calibrate on a sample of this data folder's topic and content texts.
    #[arg(long)]
    data: Option<PathBuf>,
    /// How many calibration texts to use at most.
    #[arg(long, default_value_t = lecr::model::quantize::CALIBRATION_TEXTS)]
    calibration_size: usize,
    /// SmoothQuant migration strength (0 = no smoothing).
    #[arg(long, default_value_t = lecr::model::quantize::DEFAULT_ALPHA)]
    alpha: f32,
    /// Token limit for calibration (default 96 as in SPEC §2).
    #[arg(long, default_value_t = 96)]
    max_len: usize,
}

#[derive(Args)]
struct ModelArgs {
    /// A model folder (config.json, tokenizer.json, model.safetensors) or a Hugging Face name.
    #[arg(long)]
    model: String,
    /// Pooling, overriding the folder's 1_Pooling/config.json: `cls` or `mean`.
    #[arg(long)]
    pooling: Option<lecr::model::config::Pooling>,
    /// Quantize a float model to int8 as it loads (calibrated on vocabulary texts); `lecr
    /// quantize` does it once and saves the result.
    #[arg(long)]
    int8: bool,
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A data folder: embeds topics.csv and content.csv.
    #[arg(long, conflicts_with = "texts", required_unless_present = "texts")]
    data: Option<PathBuf>,
    /// A text file: embeds each line, in order.
    #[arg(long)]
    texts: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Token limit (default: 96 for data folders as in SPEC §2; the folder's max_seq_length
    /// for --texts, as sentence-transformers does).
    #[arg(long)]
    max_len: Option<usize>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

#[derive(Args)]
struct TrainArgs {
    /// TOML file with the settings (see --print-config for every key and its default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a setting: `--set lr=1e-4 --set languages=["en"]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue the run in this folder after its last finished epoch.
    #[arg(long, conflicts_with_all = ["config", "sets", "print_config"])]
    resume: Option<PathBuf>,
    /// Print the resolved settings (defaults when nothing else is given) and exit.
    #[arg(long)]
    print_config: bool,
    /// Stop after this many epochs in this invocation (resume later with --resume).
    #[arg(long)]
    max_epochs_this_run: Option<usize>,
}

#[derive(Args)]
struct DistillArgs {
    /// The teacher model folder or hub name (frozen).
    #[arg(long, required_unless_present = "resume")]
    teacher: Option<String>,
    /// The teacher's layers the student keeps, e.g. 0,2,4,7,9,11.
    #[arg(long, value_delimiter = ',', required_unless_present = "resume")]
    layers: Vec<usize>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Args)]
struct SourceArgs {
    /// Model folder or hub name; `lexical` for the TF-IDF baseline. Repeat to ensemble.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Folder written by `lecr embed --data` (topics/content features). Repeat to ensemble.
    #[arg(long = "features")]
    features: Vec<PathBuf>,
    /// Token limit when embedding with a model.
    #[arg(long, default_value_t = 96)]
    max_len: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Quantize float models to int8 as they load (see `lecr quantize`).
    #[arg(long)]
    int8: bool,
}

impl SourceArgs {
    fn sources(&self) -> Vec<lecr::pipeline::Source> {
        let mut v: Vec<_> = self
            .models
            .iter()
            .map(|m| lecr::pipeline::Source::from_model_arg(m))
            .collect();
        v.extend(
            self.features
                .iter()
                .cloned()
                .map(lecr::pipeline::Source::Features),
        );
        if v.is_empty() {
            eprintln!("note: no --model or --features given: using the lexical baseline");
            v.push(lecr::pipeline::Source::Lexical);
        }
        v
    }
    fn settings(&self) -> lecr::pipeline::EmbedSettings {
        lecr::pipeline::EmbedSettings {
            max_len: self.max_len,
            batch_size: self.batch_size,
            int8: self.int8,
        }
    }
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    src: SourceArgs,
    #[arg(long)]
    data: PathBuf,
    /// Validation fold (needs the fold columns of `lecr split`); default: every topic with content.
    #[arg(long)]
    fold: Option<i32>,
    /// Threshold margin (SPEC §8).
    #[arg(long, default_value_t = 0.16)]
    margin: f32,
    /// Sweep margins `start:end:step` and mark the best.
    #[arg(long)]
    margins: Option<String>,
    /// Cut-off of recall@k and precision@k.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Group the table by language or channel.
    #[arg(long, value_enum, default_value = "language")]
    by: lecr::select::GroupBy,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Score each --model / --features on its own (not as an ensemble), on the same topics,
    /// and print one table: F2, precision, recall, selected, margin and time per source.
    #[arg(long)]
    compare: bool,
}

#[derive(Args)]
struct PredictArgs {
    #[command(flatten)]
    src: SourceArgs,
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Threshold margin (0.18 in the original final submission).
    #[arg(long, default_value_t = 0.18)]
    margin: f32,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// `lecr serve` under load over loopback: seeding time and memory, Studio-shaped recommend
    /// requests at several client counts (throughput, p50/p95/p99, errors), embed-content
    /// throughput, restart time; against the Python baseline (bench/serve_baseline.py) when
    /// --python is given.
    Serve(lecr::bench::serve::ServeBenchOptions),
    /// Selection and scoring of a validation fold with precomputed random embeddings: blocked
    /// per-language scoring (lecr) against materialising each language's full matrix.
    Select {
        #[arg(long)]
        data: PathBuf,
        /// Validation fold (data written by `lecr split`); default: every topic with content.
        #[arg(long)]
        fold: Option<i32>,
        /// Score the topics of sample_submission.csv instead (the prediction-time workload).
        #[arg(long, conflicts_with = "fold")]
        sample: bool,
        #[arg(long, default_value_t = 384)]
        dim: usize,
        #[arg(long, default_value_t = 0.16)]
        margin: f32,
        /// Skip the full-matrix baseline.
        #[arg(long)]
        no_baseline: bool,
    },
    /// Inference sentences/s and one InfoNCE training step, against PyTorch when
    /// --torch-python is given (runs bench/baseline.py in the same run).
    Encode {
        #[arg(long)]
        model: String,
        /// Inputs, one per line, first 1,024 used (default: bench/texts-1024.txt, built in).
        #[arg(long)]
        texts: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        max_len: usize,
        #[arg(long, default_value_t = 32)]
        pairs: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Python with torch + transformers (+ onnx, onnxruntime for the ORT rows; see the
        /// header of bench/baseline.py).
        #[arg(long)]
        torch_python: Option<String>,
        /// Figures the baseline script measures (its --only).
        #[arg(long, default_value = "encode,train-step,ort")]
        baselines: String,
        /// Skip the training-step figure (lecr's and the baseline's).
        #[arg(long)]
        no_train_step: bool,
        /// The baseline script (default: bench/baseline.py, built in).
        #[arg(long)]
        torch_script: Option<PathBuf>,
    },
}

#[derive(Args)]
struct SynthArgs {
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of topics (default 1500; `--scale lecr` gives 77,000).
    #[arg(long)]
    topics: Option<usize>,
    /// Number of content items (default 3000; `--scale lecr` gives 154,000).
    #[arg(long)]
    contents: Option<usize>,
    /// Topic/content languages, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = synth::DEFAULT_LANGUAGES.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    languages: Vec<String>,
    /// Random seed; the same seed gives the same files.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the translated pools topics_{1,2,3}.csv and content_{1,2,3}.csv.
    #[arg(long)]
    switch: bool,
    /// Topics listed in sample_submission.csv (default: a sixth of the topics with content).
    #[arg(long)]
    predict: Option<usize>,
    /// `small` (default) or `lecr` (the size of the real competition data).
    #[arg(long, default_value = "small")]
    scale: String,
}

#[derive(Subcommand)]
enum DataCmd {
    /// Print counts (languages, categories, kinds, levels, pairs, orphans) and the validation
    /// report. Exits non-zero on structural errors; with --strict also on data problems.
    Check {
        #[arg(long)]
        data: PathBuf,
        /// How many problems to list.
        #[arg(long, default_value_t = 20)]
        max_problems: usize,
        /// Exit with status 2 when any data problem is found.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Args)]
struct SplitArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 10)]
    folds: usize,
    /// Output folder for the data with fold columns.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random split the report compares against.
    #[arg(long, default_value_t = 42)]
    seed: u64,
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
        Cmd::Synth(a) => cmd_synth(a),
        Cmd::Data(DataCmd::Check {
            data,
            max_problems,
            strict,
        }) => cmd_check(data, max_problems, strict),
        Cmd::Split(a) => cmd_split(a),
        Cmd::Embed(a) => cmd_embed(a),
        Cmd::Train(a) => cmd_train(a, None),
        Cmd::Distill(a) => {
            let teacher = a.teacher.map(|t| (t, a.layers));
            cmd_train(a.train, teacher)
        }
        Cmd::Eval(a) => cmd_eval(a),
        Cmd::Predict(a) => cmd_predict(a),
        Cmd::Quantize(a) => cmd_quantize(a),
        Cmd::Bench(BenchCmd::Select {
            data,
            fold,
            sample,
            dim,
            margin,
            no_baseline,
        }) => cmd_bench_select(&data, fold, sample, dim, margin, no_baseline),
        Cmd::Serve(a) => {
            lecr::serve::run(lecr::serve::ServeOptions {
                models: a.models,
                int8: a.int8,
                max_len: a.max_len,
                batch_size: a.batch_size,
                max_batch: a.max_batch,
                store: a.store,
                data: a.data,
                reembed: a.reembed,
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
        Cmd::Bench(BenchCmd::Serve(o)) => {
            lecr::bench::serve::run(&o)?;
            Ok(0)
        }
        Cmd::Bench(BenchCmd::Encode {
            model,
            texts,
            batch,
            max_len,
            pairs,
            runs,
            torch_python,
            torch_script,
            baselines,
            no_train_step,
        }) => {
            let c = lecr::bench::EncodeBenchConfig {
                batch,
                max_len,
                pairs,
                runs,
            };
            cmd_bench_encode(
                &model,
                texts.as_deref(),
                &c,
                torch_python.as_deref(),
                torch_script.as_deref(),
                &baselines,
                no_train_step,
            )
        }
    }
}

fn cmd_synth(a: SynthArgs) -> Result<i32> {
    let base = match a.scale.as_str() {
        "small" => synth::SynthConfig::default(),
        "lecr" => synth::SynthConfig::lecr_scale(),
        other => anyhow::bail!("--scale must be `small` or `lecr`, not `{other}`"),
    };
    let cfg = synth::SynthConfig {
        topics: a.topics.unwrap_or(base.topics),
        contents: a.contents.unwrap_or(base.contents),
        languages: a.languages,
        seed: a.seed,
        switch: a.switch,
        predict: a.predict,
    };
    let t0 = Instant::now();
    let s = synth::generate(&cfg, &a.out)?;
    println!(
        "generated {} topics in {} channels ({} with content), {} contents, {} pairs in {:.1}s",
        s.topics,
        s.channels,
        s.topics_with_content,
        s.contents,
        s.pairs,
        t0.elapsed().as_secs_f64()
    );
    for f in &s.files {
        println!("wrote {}", f.display());
    }
    Ok(0)
}

fn cmd_check(dir: PathBuf, max: usize, strict: bool) -> Result<i32> {
    let ds = data::load_dataset(&dir)?;
    print!("{}", data::summary::summarize(&ds));
    let report = validate::validate(&ds);
    print!("{}", report.render(max));
    Ok(if strict && !report.problems.is_empty() {
        2
    } else {
        0
    })
}

fn cmd_split(a: SplitArgs) -> Result<i32> {
    anyhow::ensure!(a.folds >= 2, "--folds must be at least 2");
    let t0 = Instant::now();
    let ds = data::load_dataset(&a.data)?;
    let report = validate::validate(&ds);
    if !report.problems.is_empty() {
        eprintln!(
            "warning: {} data problem(s); run `lecr data check --data {}` for the list",
            report.problems.len(),
            a.data.display()
        );
    }
    let folds = split::split_folds(&ds, a.folds);
    let random = split::random_folds(&ds, a.folds, a.seed);
    let ours = split::fold_stats(&ds, &folds);
    let theirs = split::fold_stats(&ds, &random);
    println!(
        "{:>4} {:>8} {:>8} {:>10} {:>10} {:>14}",
        "fold", "topics", "pairs", "val-cont", "overlap", "random-overlap"
    );
    for (o, r) in ours.iter().zip(&theirs) {
        println!(
            "{:>4} {:>8} {:>8} {:>10} {:>9.1}% {:>13.1}%",
            o.fold,
            o.topics,
            o.pairs,
            o.val_contents,
            100.0 * o.overlap,
            100.0 * r.overlap
        );
    }
    println!(
        "mean share of validation contents also in training topics: {:.1}% (random split, seed {}: {:.1}%)",
        100.0 * split::mean_overlap(&ours),
        a.seed,
        100.0 * split::mean_overlap(&theirs)
    );
    let files = split::write_split(&ds, &folds, &a.out)
        .with_context(|| format!("writing the split to {}", a.out.display()))?;
    println!("split in {:.1}s", t0.elapsed().as_secs_f64());
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(0)
}

fn read_lines(path: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(str::to_string).collect())
}

fn cmd_embed(a: EmbedArgs) -> Result<i32> {
    use lecr::model::{LoadOptions, SentenceModel};
    let t0 = Instant::now();
    let max_len = match (&a.data, a.max_len) {
        (_, Some(m)) => Some(m),
        (Some(_), None) => Some(96),
        (None, None) => None,
    };
    let opts = LoadOptions {
        max_len,
        pooling: a.model.pooling,
        int8: a.model.int8,
        ..Default::default()
    };
    let model = SentenceModel::load(&a.model.model, &opts)?;
    let mut written = Vec::new();
    let mut count = 0;
    if let Some(dir) = &a.data {
        let ds = data::load_dataset(dir)?;
        let topic_texts = lecr::text::topic_texts(&ds.topics);
        let emb = model.embed(&topic_texts, a.batch_size, "topics")?;
        let ids: Vec<String> = ds.topics.iter().map(|t| t.id.clone()).collect();
        let langs: Vec<String> = ds.topics.iter().map(|t| t.language.clone()).collect();
        written.extend(lecr::features::write(
            &a.out,
            "topics",
            &emb,
            Some((&ids, &langs)),
        )?);
        let content_texts: Vec<String> = ds.contents.iter().map(lecr::text::content_text).collect();
        let emb = model.embed(&content_texts, a.batch_size, "contents")?;
        let ids: Vec<String> = ds.contents.iter().map(|c| c.id.clone()).collect();
        let langs: Vec<String> = ds.contents.iter().map(|c| c.language.clone()).collect();
        written.extend(lecr::features::write(
            &a.out,
            "content",
            &emb,
            Some((&ids, &langs)),
        )?);
        count = topic_texts.len() + content_texts.len();
    } else if let Some(path) = &a.texts {
        let lines = read_lines(path)?;
        let emb = model.embed(&lines, a.batch_size, "texts")?;
        written.extend(lecr::features::write(&a.out, "texts", &emb, None)?);
        count = lines.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "embedded {count} texts with {} (dim {}, max_len {}) in {secs:.1}s ({:.1}/s)",
        a.model.model,
        model.dim(),
        model.tokenizer.max_len,
        count as f64 / secs
    );
    for f in written {
        println!("wrote {}", f.display());
    }
    Ok(0)
}

fn cmd_bench_encode(
    model_spec: &str,
    texts_path: Option<&std::path::Path>,
    c: &lecr::bench::EncodeBenchConfig,
    torch_python: Option<&str>,
    torch_script: Option<&std::path::Path>,
    baselines: &str,
    no_train_step: bool,
) -> Result<i32> {
    // The built-in inputs and script go to a temporary folder when the baseline needs files.
    let builtin = tempfile::tempdir()?;
    let texts_path = match texts_path {
        Some(p) => p.to_path_buf(),
        None => {
            let p = builtin.path().join("texts-1024.txt");
            std::fs::write(&p, lecr::bench::BENCH_TEXTS)?;
            p
        }
    };
    let texts: Vec<String> = read_lines(&texts_path)?.into_iter().take(1024).collect();
    let model = lecr::bench::load(model_spec, c.max_len, false)?;
    println!(
        "bench encode: {} texts, batch {}, padded to {} tokens, {} runs, {} threads, int8 kernel {:?}",
        texts.len(),
        c.batch,
        c.max_len,
        c.runs,
        rayon::current_num_threads(),
        lecr::kernels::int8::Int8Kernel::detect()
    );
    let float_label = if model.is_int8() {
        "int8 folder"
    } else {
        "f32"
    };
    // Rates computing all `max_len` positions as the baselines do, then lecr's default of
    // skipping padding rows.
    let rates = |m: &mut lecr::model::SentenceModel| -> Result<(f64, f64)> {
        m.encoder.unpad = false;
        let all = lecr::bench::encode_rate(m, &texts, c)?;
        m.encoder.unpad = true;
        Ok((all, lecr::bench::encode_rate(m, &texts, c)?))
    };
    let mut model = model;
    let (rate, rate_unpadded) = rates(&mut model)?;
    let mut int8 = if model.is_int8() {
        None
    } else {
        Some(lecr::bench::load(model_spec, c.max_len, true)?)
    };
    let int8_rate = int8.as_mut().map(rates).transpose()?;
    // Before the training step, which changes the float model's weights.
    let agreement = match &int8 {
        Some(q) => Some(lecr::bench::agreement(&model, q, &texts)?),
        None => None,
    };
    let step = if no_train_step || model.is_int8() {
        None
    } else {
        Some(lecr::bench::train_step_time(&model, &texts, c)?)
    };
    let baseline = match torch_python {
        Some(py) => {
            let dir = lecr::model::hub::resolve_model(model_spec)?;
            let only = if no_train_step {
                baselines.replace("train-step", "")
            } else {
                baselines.to_string()
            };
            let script = match torch_script {
                Some(p) => p.to_path_buf(),
                None => {
                    let p = builtin.path().join("baseline.py");
                    std::fs::write(&p, lecr::bench::BASELINE_SCRIPT)?;
                    p
                }
            };
            lecr::bench::torch_baseline(py, &script, &dir, &texts_path, c, &only)?
        }
        None => Vec::new(),
    };
    let find = |key: &str| baseline.iter().find(|(n, _)| n == key).map(|(_, v)| *v);
    println!(
        "{:<30} {:>10}   {:<22} {:>10} {:>8}",
        "figure", "lecr", "baseline", "value", "ratio"
    );
    let row = |name: &str, ours: f64, base: &str, better: &str| match find(base) {
        Some(t) => println!(
            "{name:<30} {ours:>10.3}   {base:<22} {t:>10.3} {:>7.2}x  ({better})",
            ours / t
        ),
        None => println!(
            "{name:<30} {ours:>10.3}   {:<22} {:>10} {:>8}",
            "-", "-", "-"
        ),
    };
    let hib = "higher is better";
    let enc = format!("encode/s {float_label}");
    let enc_u = format!("encode/s {float_label}, no pad");
    for (name, r) in [(&enc, rate), (&enc_u, rate_unpadded)] {
        row(name, r, "torch encode", hib);
        if find("ort-fp32 encode").is_some() {
            row(name, r, "ort-fp32 encode", hib);
        }
    }
    if let Some((r, ru)) = int8_rate {
        row("encode/s int8", r, "ort-int8 encode", hib);
        row("encode/s int8, no pad", ru, "ort-int8 encode", hib);
        println!(
            "{:<30} {:>9.2}x   (same run)",
            "int8 / f32 encode",
            r / rate
        );
    }
    if let Some((min, mean)) = agreement {
        println!(
            "int8 vs f32 embeddings over the {} texts: min cosine {min:.5}, mean {mean:.5}",
            texts.len()
        );
    }
    println!(
        "(`no pad`: lecr's default, the rows of padding tokens are skipped; the other rows and \
         the baselines compute all {} positions of every text)",
        c.max_len
    );
    if let Some(step) = step {
        row(
            &format!("train step s ({} pairs)", c.pairs),
            step,
            "torch train-step",
            "lower is better",
        );
    }
    Ok(0)
}

fn cmd_quantize(a: QuantizeArgs) -> Result<i32> {
    use lecr::model::{quantize, LoadOptions, SentenceModel};
    let t0 = Instant::now();
    let opts = LoadOptions {
        max_len: Some(a.max_len),
        ..Default::default()
    };
    let float = SentenceModel::load(&a.model, &opts)?;
    anyhow::ensure!(
        !float.is_int8(),
        "{} is already int8-quantized: give the float model",
        a.model
    );
    let texts: Vec<String> = match (&a.calibration_texts, &a.data) {
        (Some(p), _) => read_lines(p)?,
        (None, Some(dir)) => {
            let ds = data::load_dataset(dir)?;
            let mut t = lecr::text::topic_texts(&ds.topics);
            t.extend(ds.contents.iter().map(lecr::text::content_text));
            t
        }
        (None, None) => {
            quantize::vocabulary_texts(&float, a.calibration_size, quantize::VOCABULARY_SEED)
        }
    };
    // An even spread over the file, at most --calibration-size texts.
    let step = texts.len().div_ceil(a.calibration_size.max(1)).max(1);
    let texts: Vec<String> = texts.into_iter().step_by(step).collect();
    anyhow::ensure!(!texts.is_empty(), "no calibration texts");
    let mut model = SentenceModel::load(&a.model, &opts)?;
    let calib = model.calibrate(&texts, 32, a.alpha)?;
    model.quantize(&calib)?;
    // How close the int8 model stays to the float one on the calibration texts.
    let check: Vec<String> = texts.iter().take(256).cloned().collect();
    let (min, mean) = lecr::bench::agreement(&float, &model, &check)?;
    model.save(&a.out)?;
    let size =
        |d: &std::path::Path| std::fs::metadata(d.join("model.safetensors")).map(|m| m.len());
    let src = lecr::model::hub::resolve_model(&a.model)?;
    println!(
        "quantized {} dense layers to int8 ({} calibration texts, alpha {}) in {:.1}s",
        model.params.int8.len(),
        texts.len(),
        a.alpha,
        t0.elapsed().as_secs_f64()
    );
    if let (Ok(f), Ok(q)) = (size(&src), size(&a.out)) {
        println!(
            "model.safetensors: {:.1} MiB -> {:.1} MiB",
            f as f64 / 1048576.0,
            q as f64 / 1048576.0
        );
    }
    println!(
        "cosine to the float model over {} of the calibration texts: min {min:.5}, mean {mean:.5}",
        check.len()
    );
    println!("wrote {}", a.out.display());
    Ok(0)
}

fn parse_margins(s: &str) -> Result<Vec<f32>> {
    let parts: Vec<f32> = s
        .split(':')
        .map(|p| p.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--margins `{s}`: expected start:end:step"))?;
    anyhow::ensure!(
        parts.len() == 3 && parts[2] > 0.0 && parts[1] >= parts[0],
        "--margins `{s}`: expected start:end:step with step > 0"
    );
    let n = ((parts[1] - parts[0]) / parts[2] + 1e-4).floor() as usize;
    Ok((0..=n).map(|i| parts[0] + i as f32 * parts[2]).collect())
}

/// An f32 setting as the decimal the user typed (0.16, not 0.1599999964).
fn round6(v: f32) -> f64 {
    (v as f64 * 1e6).round() / 1e6
}

fn cmd_eval(a: EvalArgs) -> Result<i32> {
    let t0 = Instant::now();
    let ds = data::load_dataset(&a.data)?;
    let with: std::collections::HashSet<usize> = ds.pairs().iter().map(|p| p.0).collect();
    let topics: Vec<usize> = match a.fold {
        Some(k) => {
            anyhow::ensure!(
                ds.topics.iter().any(|t| t.fold.is_some()),
                "{}: topics.csv has no fold column; run `lecr split` first or leave out --fold",
                a.data.display()
            );
            (0..ds.topics.len())
                .filter(|&t| ds.topics[t].fold == Some(k) && with.contains(&t))
                .collect()
        }
        None => (0..ds.topics.len()).filter(|t| with.contains(t)).collect(),
    };
    anyhow::ensure!(!topics.is_empty(), "no topics with content to evaluate");
    let margins = match &a.margins {
        Some(m) => parse_margins(m)?,
        None => vec![a.margin],
    };
    if a.compare {
        return cmd_eval_compare(&a, &ds, &topics, &margins);
    }
    let sim = lecr::pipeline::similarity(&ds, &a.src.sources(), &topics, &a.src.settings())?;
    let ranked = lecr::select::rank(
        &ds,
        &topics,
        sim.as_ref(),
        lecr::select::threshold::MAX_SELECTED.max(a.k),
    )?;
    let reports: Vec<(f32, lecr::select::score::Report)> = margins
        .iter()
        .map(|&m| {
            (
                m,
                lecr::select::evaluate(&ds, &topics, &ranked, m, a.k, a.by),
            )
        })
        .collect();
    let best = reports
        .iter()
        .max_by(|x, y| x.1.overall.f2.total_cmp(&y.1.overall.f2))
        .map(|r| r.0)
        .unwrap_or(a.margin);
    if a.json {
        let v = serde_json::json!({
            "source": sim.name(), "fold": a.fold, "topics": topics.len(), "best_margin": round6(best),
            "reports": reports.iter().map(|(m, r)| serde_json::json!({"margin": round6(*m), "report": r})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "source: {}; topics: {} ({}); {:.1}s",
        sim.name(),
        topics.len(),
        a.fold
            .map(|k| format!("fold {k}"))
            .unwrap_or("all with content".into()),
        t0.elapsed().as_secs_f64()
    );
    let by = match a.by {
        lecr::select::GroupBy::Language => "language",
        lecr::select::GroupBy::Channel => "channel",
    };
    if reports.len() == 1 {
        println!("margin {}", reports[0].0);
        print!("{}", reports[0].1.render(by));
    } else {
        println!(
            "{:>7} {:>7} {:>9} {:>7} {:>8}",
            "margin", "F2", "precision", "recall", "selected"
        );
        for (m, r) in &reports {
            let o = &r.overall;
            println!(
                "{m:>7.3} {:>7.4} {:>9.4} {:>7.4} {:>8.2}{}",
                o.f2,
                o.precision,
                o.recall,
                o.mean_selected,
                if *m == best { "  <- best" } else { "" }
            );
        }
        let (_, r) = reports
            .iter()
            .find(|r| r.0 == best)
            .expect("best is one of them");
        println!("\nat the best margin {best}:");
        print!("{}", r.render(by));
    }
    Ok(0)
}

/// `eval --compare`: each source alone on the same topics, one row each.
fn cmd_eval_compare(
    a: &EvalArgs,
    ds: &data::Dataset,
    topics: &[usize],
    margins: &[f32],
) -> Result<i32> {
    let rows = lecr::pipeline::compare(ds, &a.src.sources(), topics, &a.src.settings(), margins)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{} topics ({}), each source on its own; margin: {}",
        topics.len(),
        a.fold
            .map(|k| format!("fold {k}"))
            .unwrap_or("all with content".into()),
        if margins.len() == 1 {
            format!("{}", margins[0])
        } else {
            "the best of the sweep per source".into()
        }
    );
    print!("{}", lecr::pipeline::render_comparison(&rows));
    Ok(0)
}

fn cmd_predict(a: PredictArgs) -> Result<i32> {
    let t0 = Instant::now();
    let ds = data::load_dataset(&a.data)?;
    anyhow::ensure!(
        !ds.sample_topics.is_empty(),
        "{}: sample_submission.csv is missing or empty",
        a.data.display()
    );
    let mut topics = Vec::new();
    let mut unknown = 0;
    for id in &ds.sample_topics {
        match ds.topic_index.get(id) {
            Some(&t) => topics.push(Some(t)),
            None => {
                unknown += 1;
                topics.push(None);
            }
        }
    }
    if unknown > 0 {
        eprintln!("warning: {unknown} topic(s) of sample_submission.csv are not in topics.csv; they get an empty list");
    }
    let known: Vec<usize> = topics.iter().flatten().copied().collect();
    let by_lang = lecr::select::contents_by_language(&ds);
    let no_content: usize = known
        .iter()
        .filter(|&&t| !by_lang.contains_key(ds.topics[t].language.as_str()))
        .count();
    if no_content > 0 {
        eprintln!("warning: {no_content} topic(s) are in a language with no content; they get an empty list");
    }
    let sim = lecr::pipeline::similarity(&ds, &a.src.sources(), &known, &a.src.settings())?;
    let ranked = lecr::select::rank(
        &ds,
        &known,
        sim.as_ref(),
        lecr::select::threshold::MAX_SELECTED,
    )?;
    let selected = lecr::select::select(&ranked, a.margin);
    let mut it = selected.into_iter();
    lecr::io::write_atomic(&a.out, |w| {
        let mut w = lecr::io::csv_writer(w);
        w.write_record(["topic_id", "content_ids"])?;
        for (id, t) in ds.sample_topics.iter().zip(&topics) {
            let ids = match t {
                Some(_) => it
                    .next()
                    .unwrap_or_default()
                    .iter()
                    .map(|&c| ds.contents[c as usize].id.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                None => String::new(),
            };
            w.write_record([id.as_str(), &ids])?;
        }
        w.flush()?;
        Ok(())
    })?;
    println!(
        "predicted {} topics with {} (margin {}) in {:.1}s",
        ds.sample_topics.len(),
        sim.name(),
        a.margin,
        t0.elapsed().as_secs_f64()
    );
    println!("wrote {}", a.out.display());
    Ok(0)
}

fn cmd_bench_select(
    dir: &std::path::Path,
    fold: Option<i32>,
    sample: bool,
    dim: usize,
    margin: f32,
    no_baseline: bool,
) -> Result<i32> {
    use lecr::select::{evaluate, rank_blocked, similarity::EmbeddingSim, GroupBy, BLOCK_ELEMENTS};
    let ds = data::load_dataset(dir)?;
    let with: std::collections::HashSet<usize> = ds.pairs().iter().map(|p| p.0).collect();
    let topics: Vec<usize> = if sample {
        ds.sample_topics
            .iter()
            .filter_map(|id| ds.topic_index.get(id).copied())
            .collect()
    } else {
        (0..ds.topics.len())
            .filter(|t| with.contains(t) && fold.is_none_or(|k| ds.topics[*t].fold == Some(k)))
            .collect()
    };
    anyhow::ensure!(
        !topics.is_empty(),
        "no topics to score (is the fold column there?)"
    );
    let sim = EmbeddingSim {
        label: "random".into(),
        topics: lecr::bench::random_unit_rows(ds.topics.len(), dim, 1),
        topic_row: (0..ds.topics.len() as u32).collect(),
        contents: lecr::bench::random_unit_rows(ds.contents.len(), dim, 2),
        content_row: (0..ds.contents.len() as u32).collect(),
    };
    let base_mem = lecr::bench::peak_rss_mib(true);
    println!("bench select: {} topics x {} contents, dim {dim}, margin {margin}; data + embeddings {base_mem:.0} MiB", topics.len(), ds.contents.len());
    let mut rows = Vec::new();
    let variants: Vec<(&str, usize)> = if no_baseline {
        vec![("lecr (blocked)", BLOCK_ELEMENTS)]
    } else {
        vec![
            ("lecr (blocked)", BLOCK_ELEMENTS),
            ("full matrix per language", usize::MAX),
        ]
    };
    for (name, block) in variants {
        lecr::bench::peak_rss_mib(true);
        let t0 = Instant::now();
        let ranked = rank_blocked(&ds, &topics, &sim, 128, block)?;
        let rep = evaluate(&ds, &topics, &ranked, margin, 10, GroupBy::Language);
        let secs = t0.elapsed().as_secs_f64();
        let peak = lecr::bench::peak_rss_mib(true);
        rows.push((name, secs, peak, rep.overall.f2));
    }
    println!(
        "{:<26} {:>9} {:>12} {:>10}",
        "variant", "seconds", "peak MiB", "F2"
    );
    for (n, s, m, f) in &rows {
        println!("{n:<26} {s:>9.2} {m:>12.0} {f:>10.5}");
    }
    if rows.len() == 2 {
        println!(
            "ratio lecr / full: time {:.2}x, peak memory {:.2}x",
            rows[0].1 / rows[1].1,
            rows[0].2 / rows[1].2
        );
    }
    Ok(0)
}

/// `train`, or `distill` when `teacher` (model, layers to keep) is given.
fn cmd_train(a: TrainArgs, teacher: Option<(String, Vec<usize>)>) -> Result<i32> {
    use lecr::train::{config::TrainConfig, trainer};
    let opts = trainer::RunOptions {
        max_epochs_this_run: a.max_epochs_this_run,
    };
    let mut t = match &a.resume {
        Some(run) => trainer::Trainer::resume(run)?,
        None => {
            let mut cfg = TrainConfig::load(a.config.as_deref(), &a.sets)?;
            if let Some((model, layers)) = teacher {
                cfg.model = model.clone();
                cfg.teacher = model;
                cfg.student_layers = layers;
                cfg.check()?;
            }
            if a.print_config {
                print!("{}", cfg.to_toml());
                return Ok(0);
            }
            trainer::Trainer::new(cfg)?
        }
    };
    let t0 = Instant::now();
    let done = t.fit(&opts)?;
    println!(
        "trained {} epoch(s) in {:.1}s; best validation F2 {:.4} at epoch {}",
        done.len(),
        t0.elapsed().as_secs_f64(),
        t.state.best_f2,
        t.state.best_epoch
    );
    for f in [
        "best",
        "last",
        "config.toml",
        "train.log",
        "metrics.csv",
        "metrics.jsonl",
        "metrics.svg",
    ] {
        println!("wrote {}", t.run.join(f).display());
    }
    Ok(0)
}

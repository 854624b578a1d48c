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
    /// Benchmarks, printed as tables with ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Args)]
struct ModelArgs {
    /// A model folder (config.json, tokenizer.json, model.safetensors) or a Hugging Face name.
    #[arg(long)]
    model: String,
    /// Pooling, overriding the folder's 1_Pooling/config.json: `cls` or `mean`.
    #[arg(long)]
    pooling: Option<lecr::model::config::Pooling>,
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

#[derive(Subcommand)]
enum BenchCmd {
    /// Inference sentences/s and one InfoNCE training step, against PyTorch when
    /// --torch-python is given (runs ../shared/bench/torch_baseline.py in the same run).
    Encode {
        #[arg(long)]
        model: String,
        #[arg(long, default_value = "../shared/bench/texts-1024.txt")]
        texts: PathBuf,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        max_len: usize,
        #[arg(long, default_value_t = 32)]
        pairs: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Python with torch + transformers (see the header of torch_baseline.py).
        #[arg(long)]
        torch_python: Option<String>,
        #[arg(long, default_value = "../shared/bench/torch_baseline.py")]
        torch_script: PathBuf,
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
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
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
        Cmd::Bench(BenchCmd::Encode {
            model,
            texts,
            batch,
            max_len,
            pairs,
            runs,
            torch_python,
            torch_script,
        }) => {
            let c = lecr::bench::EncodeBenchConfig {
                batch,
                max_len,
                pairs,
                runs,
            };
            cmd_bench_encode(&model, &texts, &c, torch_python.as_deref(), &torch_script)
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
    texts_path: &std::path::Path,
    c: &lecr::bench::EncodeBenchConfig,
    torch_python: Option<&str>,
    torch_script: &std::path::Path,
) -> Result<i32> {
    let texts: Vec<String> = read_lines(texts_path)?.into_iter().take(1024).collect();
    let model = lecr::bench::load(model_spec, c.max_len)?;
    println!(
        "bench encode: {} texts, batch {}, padded to {} tokens, {} runs, {} threads",
        texts.len(),
        c.batch,
        c.max_len,
        c.runs,
        rayon::current_num_threads()
    );
    let rate = lecr::bench::encode_rate(&model, &texts, c)?;
    let step = lecr::bench::train_step_time(&model, &texts, c)?;
    let baseline = match torch_python {
        Some(py) => {
            let dir = lecr::model::hub::resolve_model(model_spec)?;
            lecr::bench::torch_baseline(py, torch_script, &dir, texts_path, c, "encode,train-step")?
        }
        None => Vec::new(),
    };
    let find = |key: &str| {
        baseline
            .iter()
            .find(|(n, _)| n.contains(key))
            .map(|(_, v)| *v)
    };
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "figure", "lecr", "pytorch", "ratio"
    );
    let row = |name: &str, ours: f64, theirs: Option<f64>, better: &str| match theirs {
        Some(t) => println!(
            "{name:<28} {ours:>12.3} {t:>12.3} {:>7.2}x  ({better})",
            ours / t
        ),
        None => println!("{name:<28} {ours:>12.3} {:>12} {:>8}", "-", "-"),
    };
    row(
        "encode sentences/s",
        rate,
        find("encode"),
        "higher is better",
    );
    row(
        &format!("train step s ({} pairs)", c.pairs),
        step,
        find("train-step"),
        "lower is better",
    );
    for (n, v) in &baseline {
        if !n.contains("encode") && !n.contains("train-step") {
            println!("{n:<28} {:>12} {v:>12.3}", "-");
        }
    }
    Ok(0)
}

//! `synth`, `data check`, `split`: making and inspecting Kaggle-layout data folders.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lecr::data::{self, split, synth, validate};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub(crate) struct SynthArgs {
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
    /// Ids as Kolibri Studio and its service use them: topics (a folder's `ContentNode.id`)
    /// and channels as dashed version-4 UUIDs, contents as 32 hex digits (`node_id`), instead
    /// of Kaggle's `t_…`/`c_…`.
    #[arg(long)]
    studio_ids: bool,
}

#[derive(Subcommand)]
pub(crate) enum DataCmd {
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
pub(crate) struct SplitArgs {
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

pub(crate) fn synth(a: SynthArgs) -> Result<i32> {
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
        studio_ids: a.studio_ids,
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

fn check(dir: PathBuf, max: usize, strict: bool) -> Result<i32> {
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

pub(crate) fn split(a: SplitArgs) -> Result<i32> {
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

pub(crate) fn data(c: DataCmd) -> Result<i32> {
    match c {
        DataCmd::Check {
            data,
            max_problems,
            strict,
        } => check(data, max_problems, strict),
    }
}

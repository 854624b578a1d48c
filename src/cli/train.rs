//! `train` and `distill`: the resumable training runs.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub(crate) struct TrainArgs {
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
pub(crate) struct DistillArgs {
    /// The teacher model folder or hub name (frozen).
    #[arg(long, required_unless_present = "resume")]
    teacher: Option<String>,
    /// The teacher's layers the student keeps, e.g. 0,2,4,7,9,11.
    #[arg(long, value_delimiter = ',', required_unless_present = "resume")]
    layers: Vec<usize>,
    #[command(flatten)]
    train: TrainArgs,
}

/// `train`, or `distill` when `teacher` (model, layers to keep) is given.
pub(crate) fn train(a: TrainArgs, teacher: Option<(String, Vec<usize>)>) -> Result<i32> {
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

pub(crate) fn distill(a: DistillArgs) -> Result<i32> {
    let teacher = a.teacher.map(|t| (t, a.layers));
    train(a.train, teacher)
}

//! Resumable checkpoints and metrics files. `last/` is a model folder that also holds the
//! optimizer moments (`optimizer.safetensors`) and the trainer state (`trainer_state.json`);
//! it is written beside the run and swapped in whole, so a kill at any moment leaves either
//! the previous or the new checkpoint, never a mix.

use super::adamw::AdamW;
use super::sampler::Feedback;
use super::trainer::EpochMetrics;
use crate::model::SentenceModel;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;

pub const LAST: &str = "last";
pub const STATE: &str = "trainer_state.json";
const OPTIMIZER: &str = "optimizer.safetensors";

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    /// Optimizer steps taken.
    pub step: usize,
    pub steps_per_epoch: usize,
    pub best_f2: f64,
    pub best_epoch: usize,
    /// The last training-set evaluation (hard negatives and missing pairs).
    pub feedback: Option<Feedback>,
    pub history: Vec<EpochMetrics>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    state: TrainState,
    logit_scale: f32,
}

/// Writes `run/last` (model, optimizer, state) atomically.
pub fn write(
    run: &Path,
    model: &SentenceModel,
    state: &TrainState,
    opt: &AdamW,
    names: &[String],
    logit_scale: f32,
    trained: &crate::model::trained::TrainedWith,
) -> Result<()> {
    model.save_with(&run.join(LAST), |dir| {
        crate::model::trained::write(dir, trained)?;
        write_moments(dir, opt, names)?;
        crate::model::save::write_json(
            &dir.join(STATE),
            &StateFile {
                state: state.clone(),
                logit_scale,
            },
        )
    })
}

pub fn read_state(run: &Path) -> Result<(TrainState, f32)> {
    let p = run.join(LAST).join(STATE);
    let s: StateFile = crate::model::config::read_json(&p).with_context(|| {
        format!(
            "{} is not a resumable run (no {})",
            run.display(),
            p.display()
        )
    })?;
    Ok((s.state, s.logit_scale))
}

/// Writes the optimizer's moments into a checkpoint folder, by variable name.
pub fn write_moments(dir: &Path, opt: &AdamW, names: &[String]) -> Result<()> {
    let mut tensors = Vec::new();
    for (i, n) in names.iter().enumerate() {
        for (suffix, buf) in [("m", &opt.m[i]), ("v", &opt.v[i])] {
            let t = candle_core::Tensor::from_slice(buf, buf.len(), &candle_core::Device::Cpu)?;
            tensors.push((format!("{n}.{suffix}"), t));
        }
    }
    crate::model::save::write_safetensors(&dir.join(OPTIMIZER), &tensors)
}

/// Puts saved moments (of [`read_optimizer`]) back into `opt`, whose variables are `names`;
/// `step` is the optimizer steps taken.
pub fn restore_moments(
    opt: &mut AdamW,
    names: &[String],
    saved: &HashMap<String, Vec<f32>>,
    step: usize,
) -> Result<()> {
    for (i, n) in names.iter().enumerate() {
        if let (Some(m), Some(v)) = (saved.get(&format!("{n}.m")), saved.get(&format!("{n}.v"))) {
            anyhow::ensure!(
                m.len() == opt.m[i].len() && v.len() == opt.v[i].len(),
                "optimizer state for {n} has the wrong size"
            );
            opt.m[i] = m.clone();
            opt.v[i] = v.clone();
        }
    }
    opt.step = step as u64;
    Ok(())
}

/// The optimizer moments of `run/last`.
pub fn read_optimizer(run: &Path) -> Result<HashMap<String, Vec<f32>>> {
    let p = run.join(LAST).join(OPTIMIZER);
    let m = candle_core::safetensors::load(&p, &candle_core::Device::Cpu)
        .with_context(|| format!("reading {}", p.display()))?;
    m.into_iter()
        .map(|(n, t)| Ok((n, t.to_vec1::<f32>()?)))
        .collect()
}

/// Rewrites metrics.csv, metrics.jsonl and metrics.svg from the whole history.
pub fn write_metrics(run: &Path, history: &[EpochMetrics]) -> Result<()> {
    crate::io::write_atomic(&run.join("metrics.csv"), |w| {
        let mut w = crate::io::csv_writer(w);
        w.write_record([
            "epoch",
            "pool",
            "batches",
            "pairs",
            "loss",
            "lr",
            "val_f2",
            "val_precision",
            "val_recall",
            "seconds",
            "pairs_per_s",
        ])?;
        for m in history {
            w.write_record(&[
                m.epoch.to_string(),
                m.pool.to_string(),
                m.batches.to_string(),
                m.pairs.to_string(),
                format!("{:.6}", m.loss),
                format!("{:.3e}", m.lr),
                format!("{:.6}", m.val_f2),
                format!("{:.6}", m.val_precision),
                format!("{:.6}", m.val_recall),
                format!("{:.2}", m.seconds),
                format!("{:.2}", m.pairs_per_s),
            ])?;
        }
        w.flush()?;
        Ok(())
    })?;
    crate::io::write_atomic(&run.join("metrics.jsonl"), |w| {
        for m in history {
            serde_json::to_writer(&mut *w, m)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    crate::io::write_atomic(&run.join("metrics.svg"), |w| {
        Ok(w.write_all(plot(history).as_bytes())?)
    })
}

/// Two panels: training loss and validation F2 per epoch.
pub fn plot(history: &[EpochMetrics]) -> String {
    let (w, h, pad) = (420.0, 260.0, 40.0);
    let panel = |x0: f64, title: &str, ys: Vec<f64>, color: &str| -> String {
        let mut s = format!(
            r#"<g transform="translate({x0},0)"><text x="{}" y="18" font-size="13" text-anchor="middle">{title}</text>"#,
            w / 2.0
        );
        s += &format!(
            r#"<rect x="{pad}" y="{pad}" width="{}" height="{}" fill="none" stroke="gray"/>"#,
            w - 2.0 * pad,
            h - 2.0 * pad
        );
        let valid: Vec<(usize, f64)> = ys
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, y)| y.is_finite() && *y >= 0.0)
            .collect();
        if let (Some(lo), Some(hi)) = (
            valid.iter().map(|p| p.1).reduce(f64::min),
            valid.iter().map(|p| p.1).reduce(f64::max),
        ) {
            let span = if hi > lo { hi - lo } else { 1.0 };
            let n = ys.len().max(2) - 1;
            let pts: Vec<String> = valid
                .iter()
                .map(|&(i, y)| {
                    let px = pad + (w - 2.0 * pad) * i as f64 / n as f64;
                    let py = h - pad - (h - 2.0 * pad) * (y - lo) / span;
                    format!("{px:.1},{py:.1}")
                })
                .collect();
            s += &format!(
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                pts.join(" ")
            );
            for p in &pts {
                let (x, y) = p.split_once(',').expect("x,y");
                s += &format!(r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
            }
            s += &format!(
                r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{hi:.4}</text>"#,
                pad - 3.0,
                pad + 4.0
            );
            s += &format!(
                r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{lo:.4}</text>"#,
                pad - 3.0,
                h - pad
            );
        }
        s += &format!(
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">epoch (1..{})</text></g>"#,
            w / 2.0,
            h - 12.0,
            ys.len()
        );
        s
    };
    let loss = panel(
        0.0,
        "training loss",
        history.iter().map(|m| m.loss).collect(),
        "#c0392b",
    );
    let f2 = panel(
        w,
        "validation F2",
        history.iter().map(|m| m.val_f2).collect(),
        "#2471a3",
    );
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}" font-family="sans-serif">{loss}{f2}</svg>"#,
        2.0 * w
    )
}

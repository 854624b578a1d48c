//! `lecr cross train`: the cross-encoder learns to tell a topic's linked contents from the
//! retriever's other candidates (binary cross-entropy on one logit per pair).
//!
//! Each epoch, every training topic gives its true links (at most `positives`) and
//! `negatives` contents drawn from its retriever top `k` that are not links (a fresh draw per
//! epoch), plus every content a curator rejected for it (`feedback`). AdamW with the
//! bi-encoder's warm-up and polynomial decay; after each epoch the validation topics' top
//! `top` candidates are re-scored and the best epoch kept.
//!
//! Run folder: `cross.toml` (the settings), `train.log`, `metrics.jsonl`, `best/` (the best
//! epoch's model) and `last/` (model, optimizer moments and state: `--resume` continues
//! from it). Each is written beside its place and swapped in whole.

use super::model::{CrossEncoder, CrossOptions};
use super::{candidate_lists, pair_texts, rescore, CandidateLists};
use crate::data::{load_dataset, Dataset};
use crate::pipeline::{EmbedSettings, Source};
use crate::train::adamw::{AdamW, AdamWParams};
use crate::train::checkpoint;
use crate::train::schedule::learning_rate;
use crate::train::trainer::log_line;
use anyhow::{Context, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of a run, saved as `cross.toml` in its folder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossConfig {
    /// Data folder with fold columns.
    pub data: String,
    /// The encoder folder the cross-encoder starts from.
    pub base: String,
    /// Retrievers whose candidates it learns to re-score (`--model` arguments).
    pub retrievers: Vec<String>,
    /// Token limit of the retrievers' texts.
    pub retriever_max_len: usize,
    /// Validation fold: not trained on; the best epoch is chosen on it.
    pub fold: i32,
    /// More folds not trained on (the one held out for evaluation).
    pub exclude_folds: Vec<i32>,
    /// At most this many training topics (a fixed draw; 0: all).
    pub max_topics: usize,
    /// At most this many validation topics (a fixed draw; 0: all).
    pub max_val_topics: usize,
    /// Candidates per training topic that negatives are drawn from.
    pub k: usize,
    /// Candidates re-scored per validation topic.
    pub top: usize,
    pub positives: usize,
    pub negatives: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub lr_end: f64,
    pub warmup_share: f64,
    pub weight_decay: f64,
    pub dropout: f64,
    pub max_len: usize,
    pub seed: u64,
    /// `f32` or `bf16` (the products of each step in bf16, f32 weights and sums).
    pub precision: String,
    /// A service store or `lecr feedback export` folder: rejected contents become negatives.
    pub feedback: String,
    pub output: String,
}

impl Default for CrossConfig {
    fn default() -> Self {
        CrossConfig {
            data: String::new(),
            base: String::new(),
            retrievers: Vec::new(),
            retriever_max_len: crate::pipeline::EMBED_MAX_LEN,
            fold: 0,
            exclude_folds: Vec::new(),
            max_topics: 0,
            max_val_topics: 500,
            k: 20,
            top: super::DEFAULT_TOP,
            positives: 4,
            negatives: 4,
            epochs: 2,
            batch_size: 16,
            lr: 3e-5,
            lr_end: 0.0,
            warmup_share: 0.1,
            weight_decay: 0.01,
            dropout: 0.1,
            max_len: super::model::DEFAULT_MAX_LEN,
            seed: 42,
            precision: "f32".into(),
            feedback: String::new(),
            output: String::new(),
        }
    }
}

impl CrossConfig {
    pub fn check(&self) -> Result<()> {
        anyhow::ensure!(!self.data.is_empty(), "cross train: give --data");
        anyhow::ensure!(
            !self.base.is_empty(),
            "cross train: give --base (an encoder folder)"
        );
        anyhow::ensure!(
            !self.retrievers.is_empty(),
            "cross train: give at least one --model"
        );
        anyhow::ensure!(!self.output.is_empty(), "cross train: give --output");
        anyhow::ensure!(self.epochs >= 1, "cross train: --epochs must be at least 1");
        anyhow::ensure!(
            self.batch_size >= 1,
            "cross train: --batch-size must be at least 1"
        );
        anyhow::ensure!(
            self.k >= 1 && self.top >= 1,
            "cross train: --k and --top must be at least 1"
        );
        anyhow::ensure!(
            self.positives >= 1 && self.negatives >= 1,
            "cross train: --positives and --negatives must be at least 1"
        );
        anyhow::ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "cross train: --lr must be a positive number"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.warmup_share) && (0.0..1.0).contains(&self.dropout),
            "cross train: warm-up share and dropout must be in [0, 1)"
        );
        anyhow::ensure!(
            self.precision == "f32" || self.precision == "bf16",
            "cross train: --precision is f32 or bf16, not `{}`",
            self.precision
        );
        anyhow::ensure!(
            self.max_len >= 8,
            "cross train: --max-len must be at least 8 tokens"
        );
        Ok(())
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CrossEpoch {
    pub epoch: usize,
    pub pairs: usize,
    pub positives: usize,
    pub loss: f64,
    pub lr: f64,
    /// Validation F2 of the re-scored top candidates at the best selection (−1: none).
    pub val_f2: f64,
    pub seconds: f64,
    pub pairs_per_s: f64,
}

/// Where a run stands (saved in `last/`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CrossState {
    pub epochs_done: usize,
    pub step: usize,
    pub steps_per_epoch: usize,
    pub best_f2: f64,
    pub best_epoch: usize,
    /// Validation F2 of the retriever's own order of the same candidates.
    pub retriever_f2: f64,
    pub history: Vec<CrossEpoch>,
}

const CONFIG: &str = "cross.toml";

pub struct CrossTrainer {
    pub cfg: CrossConfig,
    pub run: PathBuf,
    ds: Dataset,
    pub model: CrossEncoder,
    opt: AdamW,
    pub state: CrossState,
    train: CandidateLists,
    val: CandidateLists,
    /// Rejected contents per training topic position.
    rejected: Vec<Vec<u32>>,
    topic_texts: Vec<String>,
}

/// A fixed draw of at most `max` of `items` (all when `max` is 0), in their order.
fn fixed_draw(mut items: Vec<usize>, max: usize, seed: u64) -> Vec<usize> {
    if max == 0 || items.len() <= max {
        return items;
    }
    items.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    items.truncate(max);
    items.sort_unstable();
    items
}

impl CrossTrainer {
    /// A new run (refused where a run already is).
    pub fn new(cfg: CrossConfig) -> Result<Self> {
        cfg.check()?;
        let run = PathBuf::from(&cfg.output);
        anyhow::ensure!(
            !run.join(checkpoint::LAST).join(STATE).exists(),
            "{} already holds a run: resume it with `lecr cross train --resume {}` or choose another --output",
            run.display(),
            run.display()
        );
        std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
        let text = toml::to_string_pretty(&cfg)?;
        crate::io::write_atomic(&run.join(CONFIG), |w| Ok(w.write_all(text.as_bytes())?))?;
        let model = CrossEncoder::load(
            &crate::model::hub::resolve_model(&cfg.base)?,
            &CrossOptions {
                max_len: Some(cfg.max_len),
                seed: cfg.seed,
                ..Default::default()
            },
        )?;
        Self::assemble(cfg, run, model, CrossState::default(), None)
    }

    /// Continues the run in `run` after its last finished epoch.
    pub fn resume(run: &Path) -> Result<Self> {
        let p = run.join(CONFIG);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!("{} is not a cross-encoder run (no {CONFIG})", run.display())
        })?;
        let cfg: CrossConfig =
            toml::from_str(&text).with_context(|| format!("reading {}", p.display()))?;
        let last = run.join(checkpoint::LAST);
        let sp = last.join(STATE);
        let state: CrossState = crate::model::config::read_json(&sp).with_context(|| {
            format!(
                "{} has no finished epoch to resume from ({} is missing)",
                run.display(),
                sp.display()
            )
        })?;
        let model = CrossEncoder::load(
            &last,
            &CrossOptions {
                max_len: Some(cfg.max_len),
                seed: cfg.seed,
                ..Default::default()
            },
        )?;
        let moments = checkpoint::read_optimizer(run)?;
        Self::assemble(cfg, run.to_path_buf(), model, state, Some(moments))
    }

    fn assemble(
        cfg: CrossConfig,
        run: PathBuf,
        mut model: CrossEncoder,
        state: CrossState,
        moments: Option<std::collections::HashMap<String, Vec<f32>>>,
    ) -> Result<Self> {
        model.model.set_dropout(cfg.dropout);
        if cfg.precision == "bf16" {
            model.model.set_train_bf16(true);
        }
        let ds = load_dataset(Path::new(&cfg.data))?;
        anyhow::ensure!(
            ds.topics.iter().any(|t| t.fold.is_some()),
            "{}: topics.csv has no fold column; run `lecr split` first",
            cfg.data
        );
        let truth = crate::select::truth(&ds);
        let linked = |t: &usize| truth.contains_key(t);
        let held: HashSet<i32> = std::iter::once(cfg.fold)
            .chain(cfg.exclude_folds.iter().copied())
            .collect();
        let train_topics: Vec<usize> = (0..ds.topics.len())
            .filter(|t| linked(t) && ds.topics[*t].fold.is_some_and(|f| !held.contains(&f)))
            .collect();
        let val_topics: Vec<usize> = (0..ds.topics.len())
            .filter(|t| linked(t) && ds.topics[*t].fold == Some(cfg.fold))
            .collect();
        let train_topics = fixed_draw(train_topics, cfg.max_topics, cfg.seed);
        let val_topics = fixed_draw(val_topics, cfg.max_val_topics, cfg.seed ^ 1);
        anyhow::ensure!(
            !train_topics.is_empty(),
            "{}: no topic with links outside folds {held:?} to train on",
            cfg.data
        );
        let sources: Vec<Source> = cfg
            .retrievers
            .iter()
            .map(|m| Source::from_model_arg(m))
            .collect();
        let settings = EmbedSettings {
            max_len: cfg.retriever_max_len,
            ..Default::default()
        };
        let mut all = train_topics.clone();
        all.extend(&val_topics);
        let lists = candidate_lists(&ds, &sources, &settings, &all, cfg.k.max(cfg.top))?;
        let (tl, vl) = lists.ranked.split_at(train_topics.len());
        let train = CandidateLists {
            topics: train_topics,
            ranked: tl
                .iter()
                .map(|r| r[..r.len().min(cfg.k)].to_vec())
                .collect(),
        };
        let val = CandidateLists {
            topics: val_topics,
            ranked: vl
                .iter()
                .map(|r| r[..r.len().min(cfg.top)].to_vec())
                .collect(),
        };
        let rejected = if cfg.feedback.is_empty() {
            vec![Vec::new(); train.topics.len()]
        } else {
            let cur = crate::train::curated::load(Path::new(&cfg.feedback), &ds)
                .with_context(|| format!("--feedback {}", cfg.feedback))?;
            train
                .topics
                .iter()
                .map(|t| {
                    cur.rejected
                        .get(t)
                        .map(|v| v.iter().map(|&c| c as u32).collect())
                        .unwrap_or_default()
                })
                .collect()
        };
        let vars: Vec<candle_core::Var> =
            model.named_vars().iter().map(|(_, v)| v.clone()).collect();
        let mut opt = AdamW::new(
            vars,
            AdamWParams {
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        );
        if let Some(m) = moments {
            checkpoint::restore_moments(&mut opt, &var_names(&model), &m, state.step)?;
        }
        let topic_texts = crate::text::topic_texts(&ds.topics);
        Ok(CrossTrainer {
            cfg,
            run,
            ds,
            model,
            opt,
            state,
            train,
            val,
            rejected,
            topic_texts,
        })
    }

    /// The (topic, content, label) examples of an epoch, shuffled.
    pub fn examples(&self, epoch: usize) -> Vec<(usize, u32, f32)> {
        let truth = crate::select::truth(&self.ds);
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut out = Vec::new();
        let empty = HashSet::new();
        for (p, &t) in self.train.topics.iter().enumerate() {
            let tr = truth.get(&t).unwrap_or(&empty);
            let mut pos: Vec<u32> = tr.iter().copied().collect();
            pos.sort_unstable();
            pos.shuffle(&mut rng);
            pos.truncate(self.cfg.positives);
            let mut neg: Vec<u32> = self.train.ranked[p]
                .iter()
                .map(|x| x.0)
                .filter(|c| !tr.contains(c))
                .collect();
            neg.shuffle(&mut rng);
            neg.truncate(self.cfg.negatives);
            for &c in &self.rejected[p] {
                if !tr.contains(&c) && !neg.contains(&c) {
                    neg.push(c);
                }
            }
            out.extend(pos.into_iter().map(|c| (t, c, 1.0)));
            out.extend(neg.into_iter().map(|c| (t, c, 0.0)));
        }
        out.shuffle(&mut rng);
        out
    }

    /// Validation F2 of the re-scored candidates (the cross-encoder's order and probability).
    fn validate(&self) -> Result<f64> {
        if self.val.topics.is_empty() {
            return Ok(-1.0);
        }
        let ranked = rescore(
            &self.model,
            &self.ds,
            &self.topic_texts,
            &self.val,
            self.cfg.batch_size * 4,
        )?;
        let truth = crate::select::truth(&self.ds);
        Ok(crate::select::sweep::best_selection(&ranked, &self.val.topics, &truth).1)
    }

    /// Validation F2 of the retriever's own order of the same candidates, at its best margin.
    fn retriever_f2(&self) -> f64 {
        if self.val.topics.is_empty() {
            return -1.0;
        }
        let truth = crate::select::truth(&self.ds);
        crate::select::sweep::best_margin(&self.val.ranked, &self.val.topics, &truth).1
    }

    /// Trains the remaining epochs (at most `max_epochs` in this call).
    pub fn fit(&mut self, max_epochs: Option<usize>) -> Result<Vec<CrossEpoch>> {
        if self.state.steps_per_epoch == 0 {
            self.state.steps_per_epoch =
                self.examples(1).len().div_ceil(self.cfg.batch_size).max(1);
            self.state.retriever_f2 = self.retriever_f2();
        }
        let total = self.state.steps_per_epoch * self.cfg.epochs;
        let warmup = (self.cfg.warmup_share * total as f64).round() as usize;
        log_line(
            &self.run,
            &format!(
                "cross-encoder from {} ({} head): {} training topics (top {} candidates of {}), \
                 {} validation topics (top {}); {} steps/epoch; validation F2 of the retriever's \
                 own order {:.4}",
                self.cfg.base,
                if self.model.head_loaded {
                    "its own"
                } else {
                    "a fresh"
                },
                self.train.topics.len(),
                self.cfg.k,
                self.cfg.retrievers.join(" + "),
                self.val.topics.len(),
                self.cfg.top,
                self.state.steps_per_epoch,
                self.state.retriever_f2
            ),
        );
        let first = self.state.epochs_done + 1;
        let last = match max_epochs {
            Some(n) => (first + n).saturating_sub(1).min(self.cfg.epochs),
            None => self.cfg.epochs,
        };
        let mut out = Vec::new();
        for epoch in first..=last {
            let t0 = Instant::now();
            self.model
                .model
                .encoder
                .dropout()
                .reseed(self.cfg.seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let examples = self.examples(epoch);
            let batches: Vec<&[(usize, u32, f32)]> = examples.chunks(self.cfg.batch_size).collect();
            let bar = crate::progress::bar(batches.len() as u64, &format!("epoch {epoch}"));
            let (mut loss_sum, mut n) = (0f64, 0usize);
            let mut lr = 0.0;
            for batch in &batches {
                let pairs: Vec<(usize, u32)> = batch.iter().map(|e| (e.0, e.1)).collect();
                let texts = pair_texts(&self.ds, &self.topic_texts, &pairs);
                let refs: Vec<(&str, &str)> = texts
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                let enc = self.model.tokenize(&refs)?;
                let logits = self.model.forward(&enc, true)?;
                let labels: Vec<f32> = batch.iter().map(|e| e.2).collect();
                let y = Tensor::from_vec(labels, batch.len(), logits.device())?;
                let loss = bce_with_logits(&logits, &y)?;
                let grads = loss.backward()?;
                lr = learning_rate(
                    self.state.step,
                    total,
                    warmup,
                    self.cfg.lr,
                    self.cfg.lr_end,
                    1.0,
                );
                self.opt.params.lr = lr;
                self.opt.step(&grads)?;
                self.state.step += 1;
                loss_sum += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
                n += batch.len();
                bar.inc(1);
                bar.set_prefix(format!(
                    "loss {:.4} lr {lr:.2e} {:.1} pairs/s",
                    loss_sum / n as f64,
                    n as f64 / t0.elapsed().as_secs_f64()
                ));
            }
            bar.finish_and_clear();
            let train_secs = t0.elapsed().as_secs_f64();
            let f2 = self.validate()?;
            let improved = self.state.best_epoch == 0 || f2 > self.state.best_f2;
            if improved {
                self.state.best_f2 = f2;
                self.state.best_epoch = epoch;
                self.model
                    .save_with(&self.run.join("best"), &self.cfg.base, |_| Ok(()))?;
            }
            let m = CrossEpoch {
                epoch,
                pairs: n,
                positives: examples.iter().filter(|e| e.2 > 0.5).count(),
                loss: loss_sum / n.max(1) as f64,
                lr,
                val_f2: f2,
                seconds: t0.elapsed().as_secs_f64(),
                pairs_per_s: n as f64 / train_secs.max(1e-9),
            };
            log_line(
                &self.run,
                &format!(
                    "epoch {epoch}/{}: {} pairs ({} positive) loss {:.4} lr {:.2e} val F2 {:.4} \
                     (retriever order {:.4}) {:.1}s {:.1} pairs/s{}",
                    self.cfg.epochs,
                    m.pairs,
                    m.positives,
                    m.loss,
                    m.lr,
                    m.val_f2,
                    self.state.retriever_f2,
                    m.seconds,
                    m.pairs_per_s,
                    if improved { " *best*" } else { "" }
                ),
            );
            self.state.epochs_done = epoch;
            self.state.history.push(m.clone());
            let names = var_names(&self.model);
            let (opt, state) = (&self.opt, &self.state);
            self.model
                .save_with(&self.run.join(checkpoint::LAST), &self.cfg.base, |dir| {
                    checkpoint::write_moments(dir, opt, &names)?;
                    crate::model::save::write_json(&dir.join(STATE), state)
                })?;
            crate::io::write_atomic(&self.run.join("metrics.jsonl"), |w| {
                for h in &self.state.history {
                    writeln!(w, "{}", serde_json::to_string(h)?)?;
                }
                Ok(())
            })?;
            out.push(m);
        }
        Ok(out)
    }
}

/// The state file inside `last/`.
const STATE: &str = checkpoint::STATE;

fn var_names(m: &CrossEncoder) -> Vec<String> {
    m.named_vars().iter().map(|(n, _)| n.clone()).collect()
}

/// Mean binary cross-entropy of logits `x` against labels `y` in {0, 1}, computed stably:
/// max(x, 0) − x·y + ln(1 + e^(−|x|)).
pub fn bce_with_logits(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let soft = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok(x.relu()?.sub(&x.mul(y)?)?.add(&soft)?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bce_matches_its_definition_and_stays_finite() {
        let dev = candle_core::Device::Cpu;
        let xs = [-3.0f32, -0.5, 0.0, 0.7, 4.0];
        let ys = [0.0f32, 1.0, 1.0, 0.0, 1.0];
        let x = Tensor::new(&xs[..], &dev).unwrap();
        let y = Tensor::new(&ys[..], &dev).unwrap();
        let got = bce_with_logits(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        let want: f32 = xs
            .iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                let p = 1.0 / (1.0 + (-x).exp());
                -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            })
            .sum::<f32>()
            / xs.len() as f32;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Where the naive form overflows, the stable one gives |x| for a wrong sign.
        let x = Tensor::new(&[200.0f32, -200.0], &dev).unwrap();
        let y = Tensor::new(&[0.0f32, 1.0], &dev).unwrap();
        let v = bce_with_logits(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        assert!((v - 200.0).abs() < 1e-3, "{v}");
    }

    #[test]
    fn a_fixed_draw_keeps_order_and_repeats() {
        let items: Vec<usize> = (0..50).collect();
        let a = fixed_draw(items.clone(), 10, 7);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, fixed_draw(items.clone(), 10, 7));
        assert_ne!(a, fixed_draw(items.clone(), 10, 8));
        assert_eq!(fixed_draw(items.clone(), 0, 7), items);
    }
}

//! The training loop (method §4–§7): per epoch, build batches with the sampler (language pool
//! by the schedule), run InfoNCE steps, validate on the fold, keep the best checkpoint (reload
//! it when F2 falls below 0.8 × best), evaluate the training set for the next epoch's hard
//! negatives, write metrics and a resumable checkpoint.
//!
//! Run folder: `config.toml` (resolved settings), `train.log`, `metrics.csv`, `metrics.jsonl`,
//! `metrics.svg`, `best/` and `last/` (model folders), `checkpoint/` (optimizer, state).

use super::adamw::{AdamW, AdamWParams};
use super::checkpoint::{self, TrainState};
use super::config::TrainConfig;
use super::loss::{distill_loss, info_nce, DistillWeights};
use super::sampler::{epoch_batches, PairSet, SamplerSettings};
use super::schedule::{learning_rate, pool_for_epoch};
use crate::data::{load::load_pool, load_dataset, Dataset};
mod validation;

use crate::model::prompts::Role;
use crate::model::trained;
use crate::model::{LoadOptions, SentenceModel};
use anyhow::{Context, Result};
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of one invocation (not part of the run's settings).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many epochs in this invocation (a resumable pause).
    pub max_epochs_this_run: Option<usize>,
}

/// Metrics of one epoch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub pool: usize,
    pub batches: usize,
    pub pairs: usize,
    pub loss: f64,
    pub lr: f64,
    pub val_f2: f64,
    pub val_precision: f64,
    pub val_recall: f64,
    pub seconds: f64,
    pub pairs_per_s: f64,
    pub per_language: Vec<crate::select::score::GroupScore>,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub run: PathBuf,
    ds: Dataset,
    pub model: SentenceModel,
    /// The frozen teacher when distilling.
    teacher: Option<SentenceModel>,
    logit_scale: Var,
    opt: AdamW,
    pairs: PairSet,
    train_topics: Vec<usize>,
    val_topics: Vec<usize>,
    /// Topic and content texts per pool (index 0: the original data).
    topic_texts: Vec<Vec<String>>,
    content_texts: Vec<Vec<String>>,
    pools: Vec<usize>,
    pub state: TrainState,
    /// Curators' rejections (`feedback`): hard negatives of their topic in every epoch.
    curated_wrong: HashMap<usize, Vec<usize>>,
}

/// Prints a line and appends it to the run's `train.log`.
pub(crate) fn log_line(run: &Path, line: &str) {
    eprintln!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.join("train.log"))
    {
        let _ = writeln!(f, "{line}");
    }
}

impl Trainer {
    /// A new run from settings (the run folder is created; an existing checkpoint is refused).
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        let run = PathBuf::from(&cfg.output);
        anyhow::ensure!(
            !run.join(checkpoint::LAST).join(checkpoint::STATE).exists(),
            "{} already holds a run: resume it with `lecr train --resume {}` or choose another output",
            run.display(),
            run.display()
        );
        std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
        crate::io::write_atomic(&run.join("config.toml"), |w| {
            Ok(w.write_all(cfg.to_toml().as_bytes())?)
        })?;
        let distilling = !cfg.teacher.is_empty();
        let opts = LoadOptions {
            max_len: Some(cfg.max_len),
            pooling: if cfg.pooling.is_empty() {
                None
            } else {
                Some(cfg.pooling.parse()?)
            },
            // A student keeps the teacher's head as it is.
            projection_dim: (cfg.projection > 0 && !distilling).then_some(cfg.projection),
            layers: distilling.then(|| cfg.student_layers.clone()),
            seed: cfg.seed,
            topic_prompt: cfg.topic_prompt.clone(),
            content_prompt: cfg.content_prompt.clone(),
            ..Default::default()
        };
        let source = if distilling { &cfg.teacher } else { &cfg.model };
        let model = SentenceModel::load(source, &opts)?;
        let scale = Var::new(&[(1.0f32 / 0.07).ln()], &model.device)?;
        Self::assemble(cfg, run, model, scale, TrainState::default(), None)
    }

    /// Continues the run in `run` after its last finished epoch.
    pub fn resume(run: &Path) -> Result<Self> {
        let cfg = TrainConfig::load(Some(&run.join("config.toml")), &[])?;
        let (state, scale_value) = checkpoint::read_state(run)?;
        let model = SentenceModel::load_folder(
            &run.join(checkpoint::LAST),
            &LoadOptions {
                max_len: Some(cfg.max_len),
                topic_prompt: cfg.topic_prompt.clone(),
                content_prompt: cfg.content_prompt.clone(),
                ..Default::default()
            },
        )?;
        let scale = Var::new(&[scale_value], &model.device)?;
        let opt_state = checkpoint::read_optimizer(run)?;
        Self::assemble(cfg, run.to_path_buf(), model, scale, state, Some(opt_state))
    }

    fn assemble(
        cfg: TrainConfig,
        run: PathBuf,
        mut model: SentenceModel,
        logit_scale: Var,
        state: TrainState,
        opt_state: Option<HashMap<String, Vec<f32>>>,
    ) -> Result<Self> {
        anyhow::ensure!(
            !model.is_int8(),
            "{}: an int8-quantized model cannot be trained; train or distil the float model, then `lecr quantize`",
            cfg.model
        );
        model.set_dropout(cfg.dropout);
        if cfg.precision == "bf16" {
            model.set_train_bf16(true);
            let kernel = crate::kernels::bf16::Bf16Kernel::detect();
            if kernel == crate::kernels::bf16::Bf16Kernel::Portable {
                tracing::warn!(
                    "precision = \"bf16\" on a CPU without AVX512_BF16 (or with LECR_ISA below \
                     avx512): the portable bf16 kernel is much slower than f32 training here"
                );
            } else {
                tracing::info!("training products in bf16 ({} kernel)", kernel.name());
            }
        }
        let teacher = if cfg.teacher.is_empty() {
            None
        } else {
            // Frozen and without dropout: only its inference path runs.
            let t = SentenceModel::load(
                &cfg.teacher,
                &LoadOptions {
                    max_len: Some(cfg.max_len),
                    pooling: Some(model.pooling),
                    ..Default::default()
                },
            )?;
            anyhow::ensure!(
                t.tokenizer.inner().get_vocab_size(true)
                    == model.tokenizer.inner().get_vocab_size(true)
                    && t.encoder.cfg.hidden_size == model.encoder.cfg.hidden_size
                    && t.dim() == model.dim(),
                "the student and the teacher {} must share tokenizer, hidden size and output size",
                cfg.teacher
            );
            Some(t)
        };
        let mut ds = load_dataset(Path::new(&cfg.data))?;
        // Curators' decisions, with the Studio topics and contents they name added to the data.
        let curated = if cfg.feedback.is_empty() {
            None
        } else {
            let dir = Path::new(&cfg.feedback);
            let load = |ds: &mut crate::data::Dataset| -> Result<_> {
                let added = super::curated::add_decided_items(dir, ds)?;
                Ok((super::curated::load(dir, ds)?, added))
            };
            Some(load(&mut ds).with_context(|| format!("feedback = {}", cfg.feedback))?)
        };
        let langs: HashSet<&str> = cfg.languages.iter().map(String::as_str).collect();
        let keep = |t: usize| langs.is_empty() || langs.contains(ds.topics[t].language.as_str());
        let with: HashSet<usize> = ds.pairs().iter().map(|p| p.0).collect();
        if !cfg.train_on_all {
            anyhow::ensure!(
                ds.topics.iter().any(|t| t.fold.is_some()),
                "{}: no fold column; run `lecr split` first or set train_on_all = true",
                cfg.data
            );
        }
        let is_train = |t: usize| {
            with.contains(&t)
                && keep(t)
                && (cfg.train_on_all || ds.topics[t].fold.is_some_and(|f| f >= 0 && f != cfg.fold))
        };
        let train_topics: Vec<usize> = (0..ds.topics.len()).filter(|&t| is_train(t)).collect();
        let val_topics: Vec<usize> = if cfg.train_on_all {
            Vec::new()
        } else {
            (0..ds.topics.len())
                .filter(|&t| with.contains(&t) && keep(t) && ds.topics[t].fold == Some(cfg.fold))
                .collect()
        };
        let train_set: HashSet<usize> = train_topics.iter().copied().collect();
        let mut pair_list: Vec<(usize, usize)> = ds
            .pairs()
            .into_iter()
            .filter(|(t, _)| train_set.contains(t))
            .collect();
        let mut val_topics = val_topics;
        let mut curated_wrong = HashMap::new();
        if let Some((c, (new_topics, new_contents))) = curated {
            let known: HashSet<(usize, usize)> = pair_list.iter().copied().collect();
            let added = c.accepted.iter().filter(|p| !known.contains(p)).count();
            pair_list.extend(c.accepted.iter().filter(|p| !known.contains(p)));
            let before = val_topics.len();
            val_topics.retain(|t| !c.topics.contains(t));
            log_line(
                &run,
                &format!(
                    "feedback {}: {} accepted pairs ({added} new), rejections for {} topics; \
                     {} topics with decisions left out of validation; {new_topics} topics and \
                     {new_contents} contents added from it; {} decisions name ids not in {} \
                     or in it",
                    cfg.feedback,
                    c.accepted.len(),
                    c.rejected.len(),
                    before - val_topics.len(),
                    c.unknown,
                    cfg.data
                ),
            );
            curated_wrong = c.rejected;
        }
        let pairs = PairSet::new(pair_list);
        anyhow::ensure!(pairs.pairs.len() >= 2, "fewer than two training pairs");

        let mut topic_texts = vec![crate::text::topic_texts(&ds.topics)];
        let mut content_texts = vec![ds
            .contents
            .iter()
            .map(crate::text::content_text)
            .collect::<Vec<_>>()];
        let mut pools = Vec::new();
        for &k in &cfg.pools {
            if k > ds.pool_count() {
                continue;
            }
            let p = load_pool(&ds.dir, k)?;
            let tt = crate::text::topic_texts(&p.topics);
            let by_id: HashMap<&str, usize> = p
                .topics
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id.as_str(), i))
                .collect();
            topic_texts.push(
                ds.topics
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        by_id
                            .get(t.id.as_str())
                            .map(|&j| tt[j].clone())
                            .unwrap_or_else(|| topic_texts[0][i].clone())
                    })
                    .collect(),
            );
            let cid: HashMap<&str, usize> = p
                .contents
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.as_str(), i))
                .collect();
            content_texts.push(
                ds.contents
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        cid.get(c.id.as_str())
                            .map(|&j| crate::text::content_text(&p.contents[j]))
                            .unwrap_or_else(|| content_texts[0][i].clone())
                    })
                    .collect(),
            );
            pools.push(topic_texts.len() - 1);
        }

        let mut vars = model.vars();
        vars.push(logit_scale.clone());
        let mut opt = AdamW::new(
            vars,
            AdamWParams {
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                clip_value: (cfg.clip_value > 0.0).then_some(cfg.clip_value),
                ..Default::default()
            },
        );
        if let Some(st) = opt_state {
            checkpoint::restore_moments(&mut opt, &var_names(&model), &st, state.step)?;
        }
        Ok(Trainer {
            cfg,
            run,
            ds,
            model,
            teacher,
            logit_scale,
            opt,
            pairs,
            train_topics,
            val_topics,
            topic_texts,
            content_texts,
            pools,
            state,
            curated_wrong,
        })
    }

    fn sampler_settings(&self) -> SamplerSettings {
        SamplerSettings {
            batch_size: self.cfg.batch_size,
            max_rejections: self.cfg.max_rejections,
            max_wrong: self.cfg.max_wrong,
            hard_negatives: self.cfg.hard_negatives,
            missing_pairs: self.cfg.missing_pairs,
        }
    }

    /// The batches of `epoch` (1-based): the sampler with the last training-set feedback
    /// (from epoch 2) and the curators' rejections (every epoch) as hard negatives.
    pub fn batches(&self, epoch: usize) -> Vec<Vec<(usize, usize)>> {
        let fb = if epoch >= 2 {
            self.state.feedback.as_ref()
        } else {
            None
        };
        epoch_batches(
            &self.pairs,
            fb,
            &self.curated_wrong,
            &self.sampler_settings(),
            &mut self.epoch_rng(epoch),
        )
    }

    /// Training pairs (with curators' accepted links) and validation topics.
    pub fn sizes(&self) -> (usize, usize) {
        (self.pairs.pairs.len(), self.val_topics.len())
    }

    fn epoch_rng(&self, epoch: usize) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(
            self.cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }

    /// Trains until `epochs` (or the per-run limit), returning the metrics of this run's epochs.
    pub fn fit(&mut self, opts: &RunOptions) -> Result<Vec<EpochMetrics>> {
        if self.state.steps_per_epoch == 0 {
            let n = self.batches(1).len();
            self.state.steps_per_epoch = n.div_ceil(self.cfg.grad_accumulation).max(1);
        }
        let spe = self.state.steps_per_epoch;
        let total = spe * self.cfg.epochs;
        let warmup = (self.cfg.warmup_epochs * spe as f64).round() as usize;
        let what = if self.cfg.teacher.is_empty() {
            format!("training {}", self.cfg.model)
        } else {
            format!(
                "distilling {} into its layers {:?}",
                self.cfg.teacher, self.cfg.student_layers
            )
        };
        log_line(
            &self.run,
            &format!(
                "{what} on {} pairs ({} topics), validating on {} topics; {} pools; {} steps/epoch",
                self.pairs.pairs.len(),
                self.train_topics.len(),
                self.val_topics.len(),
                self.pools.len(),
                spe
            ),
        );
        if !self.cfg.train_on_all {
            log_line(
                &self.run,
                &format!(
                    "validation F2: fold {}, max_len {}, margin {}, pool 0 texts; saved in \
                     best/{f} and last/{f}, which `lecr eval --fold {} --model {}/best` takes \
                     as its defaults",
                    self.cfg.fold,
                    self.cfg.max_len,
                    self.cfg.margin,
                    self.cfg.fold,
                    self.run.display(),
                    f = trained::FILE,
                ),
            );
        }
        let mut out = Vec::new();
        let first = self.state.epochs_done + 1;
        let last = match opts.max_epochs_this_run {
            Some(n) => (first + n).saturating_sub(1).min(self.cfg.epochs),
            None => self.cfg.epochs,
        };
        for epoch in first..=last {
            let t0 = Instant::now();
            let pool_slot = pool_for_epoch(epoch, self.cfg.switch_until_epoch, &self.pools);
            self.model
                .encoder
                .dropout()
                .reseed(self.cfg.seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let batches = self.batches(epoch);
            let bar = crate::progress::bar(batches.len() as u64, &format!("epoch {epoch}"));
            let (mut loss_sum, mut n_pairs) = (0f64, 0usize);
            let mut acc: Vec<Option<Tensor>> = Vec::new();
            let mut lr = 0.0;
            for (bi, batch) in batches.iter().enumerate() {
                // Topics then contents, each with the model's prompt for its side.
                let prompts = &self.model.prompts;
                let mut texts: Vec<std::borrow::Cow<str>> = batch
                    .iter()
                    .map(|&(t, _)| prompts.apply_one(Role::Topic, &self.topic_texts[pool_slot][t]))
                    .collect();
                texts.extend(batch.iter().map(|&(_, c)| {
                    prompts.apply_one(Role::Content, &self.content_texts[pool_slot][c])
                }));
                let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
                let ids = self.model.tokenizer.encode(&texts)?;
                let n = batch.len();
                let k = self.cfg.grad_accumulation as f64;
                let (value, grads) = match &self.teacher {
                    None if self.cfg.grad_cache > 0 => {
                        let (value, store) = super::grad_cache::info_nce_grad_cache(
                            &self.model,
                            &ids,
                            n,
                            &self.logit_scale,
                            self.cfg.label_smoothing,
                            self.cfg.grad_cache,
                            None,
                        )?;
                        // Scaled as the one-pass path scales its loss.
                        let grads = self
                            .opt
                            .collect(&store)
                            .into_iter()
                            .map(|g| g.map(|g| g / k).transpose())
                            .collect::<candle_core::Result<Vec<_>>>()?;
                        (value as f64, grads)
                    }
                    teacher => {
                        let loss = match teacher {
                            Some(teacher) => {
                                let student = self.model.forward_full(&ids, None, true)?;
                                let target = teacher.forward_full(&ids, None, false)?;
                                let [t, c, h] = self.cfg.distill_weights;
                                let w = DistillWeights {
                                    topics: t,
                                    contents: c,
                                    hidden: h,
                                };
                                distill_loss(&student, &target, n, w)?
                            }
                            None => {
                                let emb = self.model.forward_ids(&ids, None, true)?;
                                info_nce(
                                    &emb.narrow(0, 0, n)?,
                                    &emb.narrow(0, n, n)?,
                                    self.logit_scale.as_tensor(),
                                    self.cfg.label_smoothing,
                                )?
                            }
                        };
                        let value = loss.to_scalar::<f32>()? as f64;
                        (value, self.opt.collect(&(loss / k)?.backward()?))
                    }
                };
                acc = if acc.is_empty() {
                    grads
                } else {
                    acc.into_iter()
                        .zip(grads)
                        .map(|(a, g)| match (a, g) {
                            (Some(a), Some(g)) => a.add(&g).ok(),
                            (a, g) => a.or(g),
                        })
                        .collect()
                };
                if (bi + 1) % self.cfg.grad_accumulation == 0 || bi + 1 == batches.len() {
                    lr = learning_rate(
                        self.state.step,
                        total,
                        warmup,
                        self.cfg.lr,
                        self.cfg.lr_end,
                        self.cfg.power,
                    );
                    self.opt.params.lr = lr;
                    self.opt.step_with(&acc)?;
                    acc.clear();
                    self.state.step += 1;
                }
                loss_sum += value * n as f64;
                n_pairs += n;
                bar.inc(1);
                bar.set_prefix(format!(
                    "loss {:.4} lr {:.2e} {:.1} pairs/s",
                    loss_sum / n_pairs as f64,
                    lr,
                    n_pairs as f64 / t0.elapsed().as_secs_f64()
                ));
            }
            bar.finish_and_clear();
            let train_secs = t0.elapsed().as_secs_f64();
            let report = self.validate()?;
            // −1 stands for "no validation fold" (train_on_all).
            let f2 = report.as_ref().map(|r| r.overall.f2).unwrap_or(-1.0);
            // Keep the best; fall back to it after a collapse.
            let improved =
                report.is_none() || self.state.best_epoch == 0 || f2 > self.state.best_f2;
            // What these weights were validated with (lecr.json: `lecr eval`'s defaults).
            let mut trained = self.trained_with(epoch, report.as_ref().map(|r| r.overall.f2));
            if improved {
                self.state.best_f2 = f2;
                self.state.best_epoch = epoch;
                self.model
                    .save_with(&self.run.join("best"), |d| trained::write(d, &trained))?;
            } else if f2 < 0.8 * self.state.best_f2 {
                log_line(&self.run, &format!("epoch {epoch}: F2 {f2:.4} < 0.8 x best {:.4}: reloading the best checkpoint", self.state.best_f2));
                self.model.load_weights_from(&self.run.join("best"))?;
                trained = self.trained_with(
                    self.state.best_epoch,
                    report.as_ref().map(|_| self.state.best_f2),
                );
            }
            if epoch < self.cfg.epochs && (self.cfg.hard_negatives || self.cfg.missing_pairs) {
                self.state.feedback = Some(self.training_feedback()?);
            }
            let m = EpochMetrics {
                epoch,
                pool: if pool_slot == 0 {
                    0
                } else {
                    self.cfg
                        .pools
                        .get(pool_slot - 1)
                        .copied()
                        .unwrap_or(pool_slot)
                },
                batches: batches.len(),
                pairs: n_pairs,
                loss: loss_sum / n_pairs.max(1) as f64,
                lr,
                val_f2: f2,
                val_precision: report.as_ref().map(|r| r.overall.precision).unwrap_or(-1.0),
                val_recall: report.as_ref().map(|r| r.overall.recall).unwrap_or(-1.0),
                seconds: t0.elapsed().as_secs_f64(),
                pairs_per_s: n_pairs as f64 / train_secs,
                per_language: report
                    .as_ref()
                    .map(|r| r.groups.clone())
                    .unwrap_or_default(),
            };
            log_line(&self.run, &format!(
                "epoch {epoch}/{}: pool {} loss {:.4} lr {:.2e} val F2 {:.4} (P {:.4} R {:.4}) {:.1}s {:.1} pairs/s{}",
                self.cfg.epochs, m.pool, m.loss, m.lr, m.val_f2, m.val_precision, m.val_recall, m.seconds, m.pairs_per_s,
                if improved { " *best*" } else { "" }
            ));
            if let Some(r) = &report {
                log_line(&self.run, r.render("language").trim_end());
            }
            self.state.epochs_done = epoch;
            self.state.history.push(m.clone());
            let scale = self.logit_scale.as_tensor().to_vec1::<f32>()?[0];
            checkpoint::write(
                &self.run,
                &self.model,
                &self.state,
                &self.opt,
                &var_names(&self.model),
                scale,
                &trained,
            )?;
            checkpoint::write_metrics(&self.run, &self.state.history)?;
            out.push(m);
        }
        Ok(out)
    }
}

/// Names of the optimizer's variables: the model's, then `logit_scale`.
fn var_names(model: &SentenceModel) -> Vec<String> {
    let mut v: Vec<String> = model.params.vars.iter().map(|(n, _)| n.clone()).collect();
    v.push("logit_scale".into());
    v
}

//! Every training setting in one TOML file (method §7 defaults), overridable with
//! `--set key=value`. `lecr train --print-config` prints the defaults.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Data folder written by `lecr split` (fold columns), optionally with translated pools.
    pub data: String,
    /// Model folder or Hugging Face name.
    pub model: String,
    /// `cls` or `mean`; empty: the folder's pooling.
    pub pooling: String,
    /// Add a bias-free projection to this many dimensions (0: none).
    pub projection: usize,
    pub max_len: usize,
    /// Pairs per batch (the original used 512 on a GPU).
    pub batch_size: usize,
    pub epochs: usize,
    pub lr: f64,
    pub lr_end: f64,
    pub warmup_epochs: f64,
    pub power: f64,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    /// Clip every gradient element to ±clip_value (0: off).
    pub clip_value: f64,
    /// Batches whose gradients are summed before one optimizer step.
    pub grad_accumulation: usize,
    /// Sequences per forward pass when > 0: the batch is embedded in chunks of this many
    /// topics or contents and the InfoNCE gradient is back-propagated chunk by chunk (exact
    /// gradients, one chunk's activations in memory, a second forward pass). 0: one pass.
    pub grad_cache: usize,
    pub dropout: f64,
    /// Selection margin for validation (method §8). f64 so that the written config shows the
    /// value as given (0.16, not 0.1599999964237213).
    pub margin: f64,
    pub fold: i32,
    pub train_on_all: bool,
    /// Train and validate on these topic languages only (empty: all).
    pub languages: Vec<String>,
    /// Translated pools to switch between (method §6), used when their files exist.
    pub pools: Vec<usize>,
    /// From this epoch on, pool 0 only.
    pub switch_until_epoch: usize,
    pub max_wrong: usize,
    pub hard_negatives: bool,
    pub missing_pairs: bool,
    /// Consecutive rejected pairs that end an epoch's batch building.
    pub max_rejections: usize,
    pub seed: u64,
    /// Run folder (checkpoints, metrics, logs).
    pub output: String,
    /// Batch size when embedding for evaluation.
    pub eval_batch_size: usize,
    /// Distillation (`lecr distill`): the frozen teacher model; empty for normal training.
    /// The student starts as the teacher with only `student_layers`, and learns to match the
    /// teacher's embeddings and last hidden states instead of the InfoNCE loss (method §9).
    pub teacher: String,
    /// The teacher's layers the student keeps, in order (e.g. [0, 2, 4, 7, 9, 11]).
    pub student_layers: Vec<usize>,
    /// Distillation loss weights: topic embeddings, content embeddings, masked hidden states.
    pub distill_weights: [f64; 3],
    /// Curators' decisions: a service store folder or a `lecr feedback export` folder. Accepted
    /// links join the training pairs; rejected contents are hard negatives of their topic from
    /// the first epoch; topics with decisions leave the validation set. Empty: none.
    pub feedback: String,
    /// The prompt topic texts get: a prompt name of the model folder
    /// (config_sentence_transformers.json) or the text itself, "" for none. Unset: the
    /// folder's query prompt, if any. Saved models carry the prompts they were trained with.
    pub topic_prompt: Option<String>,
    /// The prompt content texts get, likewise (unset: the folder's passage prompt).
    pub content_prompt: Option<String>,
    /// The matrix products of a training step: `f32`, or `bf16` (mixed precision: operands
    /// rounded to bf16 and summed in f32, on AVX512_BF16 where the CPU has it; the weights,
    /// optimizer state, loss and reductions stay f32, and the saved model is f32).
    pub precision: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: "out/demo/split".into(),
            model: "sentence-transformers/LaBSE".into(),
            pooling: String::new(),
            projection: 0,
            max_len: 96,
            batch_size: 512,
            epochs: 40,
            lr: 2e-4,
            lr_end: 5e-5,
            warmup_epochs: 2.0,
            power: 1.5,
            weight_decay: 0.01,
            label_smoothing: 0.1,
            clip_value: 100.0,
            grad_accumulation: 1,
            grad_cache: 0,
            dropout: 0.1,
            margin: 0.16,
            fold: 0,
            train_on_all: false,
            languages: Vec::new(),
            pools: vec![1, 2, 3],
            switch_until_epoch: 36,
            max_wrong: 128,
            hard_negatives: true,
            missing_pairs: true,
            max_rejections: 512,
            seed: 42,
            output: "runs/train".into(),
            eval_batch_size: 64,
            teacher: String::new(),
            student_layers: Vec::new(),
            distill_weights: [0.25, 0.25, 0.5],
            feedback: String::new(),
            topic_prompt: None,
            content_prompt: None,
            precision: "f32".into(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file (or the defaults when `path` is None) and applies `key=value`
    /// overrides; values are TOML (`lr=1e-4`, `languages=["en","es"]`), bare words are strings.
    pub fn load(path: Option<&Path>, sets: &[String]) -> Result<Self> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                text.parse()
                    .with_context(|| format!("parsing {}", p.display()))?
            }
            None => toml::Table::new(),
        };
        for s in sets {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("--set `{s}`: expected key=value"))?;
            let k = k.trim();
            let value: toml::Value = format!("v = {}", v.trim())
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.trim().to_string()));
            table.insert(k.to_string(), value);
        }
        let cfg: TrainConfig =
            toml::Value::Table(table)
                .try_into()
                .with_context(|| match path {
                    Some(p) => format!("invalid setting in {} or --set", p.display()),
                    None => "invalid --set".to_string(),
                })?;
        cfg.check()?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<()> {
        anyhow::ensure!(self.batch_size >= 2, "batch_size must be at least 2");
        anyhow::ensure!(
            matches!(self.precision.as_str(), "f32" | "bf16"),
            "precision must be \"f32\" or \"bf16\", not {:?}",
            self.precision
        );
        anyhow::ensure!(self.epochs >= 1, "epochs must be at least 1");
        anyhow::ensure!(
            self.grad_accumulation >= 1,
            "grad_accumulation must be at least 1"
        );
        anyhow::ensure!(
            self.grad_cache == 0 || self.teacher.is_empty(),
            "grad_cache applies to InfoNCE training, not to distillation"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "dropout must be in [0, 1)"
        );
        anyhow::ensure!(
            self.pools.iter().all(|&p| (1..=3).contains(&p)),
            "pools are among 1, 2, 3"
        );
        if !self.pooling.is_empty() {
            self.pooling.parse::<crate::model::config::Pooling>()?;
        }
        anyhow::ensure!(
            self.teacher.is_empty() || !self.student_layers.is_empty(),
            "distillation needs student_layers (the teacher's layers to keep)"
        );
        anyhow::ensure!(
            self.student_layers.windows(2).all(|w| w[0] < w[1]),
            "student_layers must be increasing and without repeats: {:?}",
            self.student_layers
        );
        anyhow::ensure!(
            self.distill_weights.iter().all(|w| *w >= 0.0)
                && self.distill_weights.iter().sum::<f64>() > 0.0,
            "distill_weights must be non-negative and not all zero"
        );
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_original_settings_and_sets_override() {
        let d = TrainConfig::default();
        assert_eq!(
            (d.lr, d.lr_end, d.power, d.epochs, d.max_len, d.max_wrong),
            (2e-4, 5e-5, 1.5, 40, 96, 128)
        );
        let c = TrainConfig::load(
            None,
            &[
                "lr=1e-3".into(),
                "languages=[\"en\",\"es\"]".into(),
                "model=some/model".into(),
                "hard_negatives=false".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.lr, 1e-3);
        assert_eq!(c.languages, vec!["en", "es"]);
        assert_eq!(c.model, "some/model");
        assert!(!c.hard_negatives);
        assert!(TrainConfig::load(None, &["no_such_key=1".into()]).is_err());
        assert!(TrainConfig::load(None, &["batch_size=1".into()]).is_err());
        assert_eq!(d.precision, "f32");
        let bf16 = TrainConfig::load(None, &["precision=\"bf16\"".into()]).unwrap();
        assert_eq!(bf16.precision, "bf16");
        let e = TrainConfig::load(None, &["precision=\"fp16\"".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("\"f32\" or \"bf16\""), "{e:#}");
        // The printed defaults parse back to the same config.
        let back: TrainConfig = toml::from_str(&d.to_toml()).unwrap();
        assert_eq!(back, d);
    }
}

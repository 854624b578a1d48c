//! The reranker: gradient-boosted trees (the pure-Rust `forust-ml` GBM) over the candidate
//! features, binary log-loss on "is this candidate a true link". A reranker folder holds
//!
//! - `booster.json`: trained on every topic of the reranker's training fold, used for new topics;
//! - `booster-a.json`, `booster-b.json`: each trained on one channel half of that fold, used for
//!   the topics of the *other* half, so that scoring the training fold again (`lecr eval
//!   --reranker` on it) gives out-of-fold scores instead of remembered ones;
//! - `reranker.json`: retrievers, K, feature names, the selection setting, and the topic ids
//!   of each half;
//! - `importances.csv`: each feature's share of the total split gain.

use super::features::FeatureMatrix;
use anyhow::{Context, Result};
use forust_ml::gradientbooster::ImportanceMethod;
use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

pub const META_FILE: &str = "reranker.json";
pub const BOOSTER_FILE: &str = "booster.json";
pub const HALF_FILES: [&str; 2] = ["booster-a.json", "booster-b.json"];
pub const IMPORTANCE_FILE: &str = "importances.csv";

pub use crate::select::sweep::Selection;

/// What a reranker folder records besides its boosters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// The `--model` arguments it was trained with, in order (`lexical` included).
    pub retrievers: Vec<String>,
    pub k: usize,
    pub max_len: usize,
    pub features: Vec<String>,
    pub selection: Selection,
    /// The fold of `--data` it was trained on.
    pub fold: Option<i32>,
    /// Topic ids of each channel half (the topics `booster-a` / `booster-b` were trained on).
    pub halves: [Vec<String>; 2],
    pub boost: BoostSettings,
    /// Share of topics also trained in their cold (no tree context) form.
    #[serde(default)]
    pub cold_share: f64,
    /// The cross-encoder whose logit is a feature (`cross_logit`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross: Option<CrossFeature>,
}

/// A cross-encoder read by the reranker: its folder, how many candidates per topic it reads
/// (the retrievers' best first; the others' `cross_logit` is missing) and the precision of its
/// dense layers. Training, `eval`, `predict` and `serve` all read it the same way, so the
/// feature has the same values wherever it is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossFeature {
    pub dir: String,
    pub top: usize,
    /// Saved since the service runs it; a reranker saved before reads it in f32, as it was
    /// trained.
    #[serde(default)]
    pub precision: crate::cross::model::Precision,
    /// SHA-256 of the folder's weights, config and tokenizer when the reranker was trained
    /// ([`crate::cross::model::fingerprint`]): a folder changed since is refused, since its
    /// logits are not the ones the trees learned. Rerankers saved before it have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// The booster's settings (`lecr rerank train --trees --learning-rate --depth`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoostSettings {
    pub trees: usize,
    pub learning_rate: f32,
    pub max_depth: usize,
    /// Share of rows and of features each tree sees.
    pub subsample: f32,
    pub seed: u64,
}

impl Default for BoostSettings {
    fn default() -> Self {
        BoostSettings {
            trees: 300,
            learning_rate: 0.05,
            max_depth: 6,
            subsample: 0.8,
            seed: 42,
        }
    }
}

/// A loaded or freshly trained reranker.
pub struct Reranker {
    pub meta: Meta,
    pub full: GradientBooster,
    pub halves: [GradientBooster; 2],
    half_sets: [HashSet<String>; 2],
}

/// Trains one booster on `x` with 0/1 labels `y`.
pub fn fit(x: &FeatureMatrix, y: &[f64], b: &BoostSettings) -> Result<GradientBooster> {
    anyhow::ensure!(x.rows == y.len() && x.rows > 0, "no training rows");
    anyhow::ensure!(
        y.iter().any(|&v| v > 0.5) && y.iter().any(|&v| v < 0.5),
        "the training rows need both true and false candidates"
    );
    let m = Matrix::new(&x.data, x.rows, x.names.len());
    let mut g = GradientBooster::default()
        .set_objective_type(ObjectiveType::LogLoss)
        .set_iterations(b.trees)
        .set_learning_rate(b.learning_rate)
        .set_max_depth(b.max_depth)
        .set_subsample(b.subsample)
        .set_colsample_bytree(b.subsample as f64)
        .set_seed(b.seed);
    g.fit_unweighted(&m, y, None)
        .map_err(|e| anyhow::anyhow!("training the booster: {e}"))?;
    Ok(g)
}

/// Probabilities of `x`'s rows.
pub fn predict(b: &GradientBooster, x: &FeatureMatrix) -> Vec<f32> {
    if x.rows == 0 {
        return Vec::new();
    }
    let m = Matrix::new(&x.data, x.rows, x.names.len());
    // The booster predicts log-odds.
    b.predict(&m, true)
        .into_iter()
        .map(|z| (1.0 / (1.0 + (-z).exp())) as f32)
        .collect()
}

/// Each feature's share of the total split gain, highest first.
pub fn importances(b: &GradientBooster, names: &[String]) -> Vec<(String, f32)> {
    let imp = b.calculate_feature_importance(ImportanceMethod::TotalGain, true);
    let mut v: Vec<(String, f32)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), imp.get(&i).copied().unwrap_or(0.0)))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

impl Reranker {
    pub fn new(meta: Meta, full: GradientBooster, halves: [GradientBooster; 2]) -> Reranker {
        let half_sets = [
            meta.halves[0].iter().cloned().collect(),
            meta.halves[1].iter().cloned().collect(),
        ];
        Reranker {
            meta,
            full,
            halves,
            half_sets,
        }
    }

    /// The booster to score topic `id` with: the one that did not train on it.
    pub fn booster_for(&self, id: &str) -> &GradientBooster {
        if self.half_sets[0].contains(id) {
            &self.halves[1]
        } else if self.half_sets[1].contains(id) {
            &self.halves[0]
        } else {
            &self.full
        }
    }

    /// Whether any of `ids` was a training topic (scored out of fold).
    pub fn trained_on_any<'a>(&self, mut ids: impl Iterator<Item = &'a str>) -> bool {
        ids.any(|id| self.half_sets[0].contains(id) || self.half_sets[1].contains(id))
    }

    pub fn save(&self, out: &Path) -> Result<()> {
        let dump = |b: &GradientBooster| {
            b.json_dump()
                .map_err(|e| anyhow::anyhow!("serialising the booster: {e}"))
        };
        let full = dump(&self.full)?;
        let halves = [dump(&self.halves[0])?, dump(&self.halves[1])?];
        let imp = importances(&self.full, &self.meta.features);
        crate::io::write_dir_atomic(out, |dir| {
            std::fs::write(dir.join(BOOSTER_FILE), full)?;
            for (f, j) in HALF_FILES.iter().zip(&halves) {
                std::fs::write(dir.join(f), j)?;
            }
            crate::model::save::write_json(&dir.join(META_FILE), &self.meta)?;
            let mut csv = String::from("feature,gain_share\n");
            for (n, v) in &imp {
                csv.push_str(&format!("{n},{v:.6}\n"));
            }
            std::fs::write(dir.join(IMPORTANCE_FILE), csv)?;
            Ok(())
        })
    }

    /// The retriever arguments to draw candidates with: `given` when there are as many as it
    /// was trained with (say an int8 copy of the same model), the recorded ones when none are
    /// given. The rule `eval`, `predict` and `serve` share.
    pub fn retrievers_for(&self, dir: &Path, given: &[String]) -> Result<Vec<String>> {
        if given.is_empty() {
            return Ok(self.meta.retrievers.clone());
        }
        anyhow::ensure!(
            given.len() == self.meta.retrievers.len(),
            "{} was trained with {} retriever(s) ({}); {} --model given",
            dir.display(),
            self.meta.retrievers.len(),
            self.meta.retrievers.join(", "),
            given.len()
        );
        Ok(given.to_vec())
    }

    /// A warning when the similarities will be computed at another max_len than the one it
    /// was trained on.
    pub fn max_len_warning(&self, dir: &Path, max_len: usize) -> Option<String> {
        (max_len != self.meta.max_len).then(|| {
            format!(
                "--max-len {max_len}: {} was trained on similarities at max_len {}; its \
                 similarity features will be off",
                dir.display(),
                self.meta.max_len
            )
        })
    }

    pub fn load(dir: &Path) -> Result<Reranker> {
        let meta_path = dir.join(META_FILE);
        let meta: Meta = serde_json::from_str(
            &std::fs::read_to_string(&meta_path)
                .with_context(|| format!("{}: not a reranker folder", dir.display()))?,
        )
        .with_context(|| format!("{}", meta_path.display()))?;
        anyhow::ensure!(
            meta.format == 1,
            "{}: format {} (this lecr reads 1)",
            meta_path.display(),
            meta.format
        );
        let read = |f: &str| -> Result<GradientBooster> {
            let p = dir.join(f);
            let s = std::fs::read_to_string(&p).with_context(|| format!("{}", p.display()))?;
            GradientBooster::from_json(&s).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        let full = read(BOOSTER_FILE)?;
        let halves = [read(HALF_FILES[0])?, read(HALF_FILES[1])?];
        Ok(Reranker::new(meta, full, halves))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_keeps_threshold_or_near_best_and_always_one() {
        let s = Selection {
            threshold: 0.5,
            margin: 0.0,
        };
        assert_eq!(s.count(&[0.9, 0.6, 0.5, 0.4], 128), 3);
        // Nothing reaches the threshold: the best is kept.
        assert_eq!(s.count(&[0.3, 0.2], 128), 1);
        let s = Selection {
            threshold: 0.5,
            margin: 0.5,
        };
        // Best 0.3: the relative cut 0.15 is below the absolute one.
        assert_eq!(s.count(&[0.3, 0.2, 0.15, 0.1], 128), 3);
        assert_eq!(s.count(&[], 128), 0);
        assert_eq!(s.count(&[0.9, 0.9, 0.9], 2), 2);
    }
}

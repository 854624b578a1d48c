//! Sweeps of a selection rule over ranked lists: the setting with the best mean F2, fast
//! enough to try a whole grid (the margin of similarity lists, method §8; the threshold and
//! margin of probabilities, the reranker's and the cross-encoder's).

use super::Ranked;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// How the reranker's probabilities become a selection (method §8's spirit on a new score):
/// keep every candidate with probability ≥ `threshold`, or ≥ `(1 − margin)·best`; the topic's
/// best candidate is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub threshold: f32,
    pub margin: f32,
}

impl Selection {
    /// How many of `scores` (sorted high to low) are selected.
    pub fn count(&self, scores: &[f32], cap: usize) -> usize {
        let Some(&best) = scores.first() else {
            return 0;
        };
        let cut = self.threshold.min((1.0 - self.margin) * best);
        scores.partition_point(|&s| s >= cut).clamp(1, cap.max(1))
    }

    /// The settings `lecr rerank train` and `lecr eval --reranker` sweep.
    pub fn grid() -> Vec<Selection> {
        // Hundredths as integer ratios, so sweeps elsewhere meet the same f32 values.
        let thresholds = (1..10)
            .chain((10..=80).step_by(2))
            .map(|i| i as f32 / 100.0);
        let mut v = Vec::new();
        for t in thresholds {
            for m in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5] {
                let m: f32 = m;
                v.push(Selection {
                    threshold: t,
                    margin: m,
                });
            }
        }
        v
    }
}

/// The rule in words, as every command and the page print it: `probability ≥ 0.04 or ≥ 70% of
/// the best`.
impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As typed (0.04), not as f32 widens it (0.03999999910).
        let t = (self.threshold as f64 * 1e6).round() / 1e6;
        write!(
            f,
            "probability ≥ {t} or ≥ {:.0}% of the best",
            (1.0 - self.margin as f64) * 100.0
        )
    }
}

/// Mean F2 over topics of ranked lists cut by `count`, fast enough to sweep a grid.
struct Sweep {
    /// Per topic: hits among the first i of its list (prefix counts), and its truth size.
    hits: Vec<(Vec<u32>, usize)>,
}

impl Sweep {
    fn new(ranked: &[Ranked], topics: &[usize], truth: &HashMap<usize, HashSet<u32>>) -> Sweep {
        let empty = HashSet::new();
        let hits = ranked
            .iter()
            .zip(topics)
            .map(|(r, t)| {
                let tr = truth.get(t).unwrap_or(&empty);
                let mut acc = vec![0u32];
                for (c, _) in r {
                    acc.push(acc.last().copied().unwrap_or(0) + tr.contains(c) as u32);
                }
                (acc, tr.len())
            })
            .collect();
        Sweep { hits }
    }
    fn f2(&self, counts: impl Iterator<Item = usize>) -> f64 {
        let mut sum = 0.0;
        for ((acc, truth), n) in self.hits.iter().zip(counts) {
            if n == 0 || *truth == 0 {
                continue;
            }
            let h = acc[n] as f64;
            let p = h / n as f64;
            let r = h / *truth as f64;
            if p + r > 0.0 {
                sum += 5.0 * p * r / (4.0 * p + r);
            }
        }
        sum / self.hits.len().max(1) as f64
    }
}

/// The setting of `settings` with the best mean F2 when each list is cut by `count`.
fn sweep_best<S: Copy>(
    ranked: &[Ranked],
    topics: &[usize],
    truth: &HashMap<usize, HashSet<u32>>,
    settings: impl IntoIterator<Item = S>,
    count: impl Fn(&S, &[f32]) -> usize,
) -> Option<(S, f64)> {
    let sweep = Sweep::new(ranked, topics, truth);
    let scores: Vec<Vec<f32>> = ranked
        .iter()
        .map(|r| r.iter().map(|x| x.1).collect())
        .collect();
    settings
        .into_iter()
        .map(|s| (s, sweep.f2(scores.iter().map(|v| count(&s, v)))))
        .fold(None, |best: Option<(S, f64)>, x| match best {
            Some(b) if b.1 >= x.1 => Some(b),
            _ => Some(x),
        })
}

/// The best reranker selection of the grid on `ranked` (probabilities), with its F2.
pub fn best_selection(
    ranked: &[Ranked],
    topics: &[usize],
    truth: &HashMap<usize, HashSet<u32>>,
) -> (Selection, f64) {
    sweep_best(ranked, topics, truth, Selection::grid(), |s, v| {
        s.count(v, super::threshold::MAX_SELECTED)
    })
    .expect("a non-empty grid")
}

/// The best margin (method §8) in 0.00..0.60 for similarity lists, with its F2.
pub fn best_margin(
    ranked: &[Ranked],
    topics: &[usize],
    truth: &HashMap<usize, HashSet<u32>>,
) -> (f32, f64) {
    let margins = (0..=60).map(|i| i as f32 / 100.0);
    sweep_best(ranked, topics, truth, margins, |&m, v| {
        super::threshold::selected_len(v, m, super::threshold::MAX_SELECTED)
    })
    .expect("a non-empty sweep")
}

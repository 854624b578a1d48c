//! F2, precision and recall per topic (method §8), ranking metrics, and the per-language /
//! per-channel report.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Precision, recall and F2 of one topic's prediction against its ground truth.
pub fn f2(pred: &[u32], truth: &HashSet<u32>) -> (f64, f64, f64) {
    if pred.is_empty() || truth.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let hit = pred.iter().filter(|p| truth.contains(p)).count() as f64;
    let p = hit / pred.len() as f64;
    let r = hit / truth.len() as f64;
    let f = if p + r == 0.0 {
        0.0
    } else {
        5.0 * p * r / (4.0 * p + r)
    };
    (p, r, f)
}

/// One evaluated topic: its group (language or channel), ranked candidates, how many are
/// selected, and the ground truth.
pub struct TopicResult<'a> {
    pub group: &'a str,
    pub ranked: &'a [u32],
    pub selected: usize,
    pub truth: &'a HashSet<u32>,
    /// Contents this topic was ranked against (its language's).
    pub pool: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupScore {
    pub group: String,
    pub topics: usize,
    pub contents: usize,
    pub f2: f64,
    pub precision: f64,
    pub recall: f64,
    pub mean_selected: f64,
    pub recall_at_k: f64,
    pub precision_at_k: f64,
    pub mrr: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub k: usize,
    pub groups: Vec<GroupScore>,
    pub overall: GroupScore,
}

#[derive(Default)]
struct Acc {
    n: usize,
    contents: usize,
    f2: f64,
    p: f64,
    r: f64,
    sel: f64,
    rk: f64,
    pk: f64,
    mrr: f64,
}

impl Acc {
    fn add(&mut self, t: &TopicResult, k: usize) {
        let (p, r, f) = f2(&t.ranked[..t.selected], t.truth);
        self.n += 1;
        self.contents = self.contents.max(t.pool);
        self.f2 += f;
        self.p += p;
        self.r += r;
        self.sel += t.selected as f64;
        let top = &t.ranked[..k.min(t.ranked.len())];
        let hits = top.iter().filter(|c| t.truth.contains(c)).count() as f64;
        if !t.truth.is_empty() {
            self.rk += hits / t.truth.len() as f64;
        }
        self.pk += hits / k.max(1) as f64;
        if let Some(pos) = t.ranked.iter().position(|c| t.truth.contains(c)) {
            self.mrr += 1.0 / (pos + 1) as f64;
        }
    }
    fn finish(&self, group: String) -> GroupScore {
        let n = self.n.max(1) as f64;
        GroupScore {
            group,
            topics: self.n,
            contents: self.contents,
            f2: self.f2 / n,
            precision: self.p / n,
            recall: self.r / n,
            mean_selected: self.sel / n,
            recall_at_k: self.rk / n,
            precision_at_k: self.pk / n,
            mrr: self.mrr / n,
        }
    }
}

/// Scores by group (most topics first), then overall. `k` is the cut-off of recall@k and
/// precision@k. Scores are means over topics.
pub fn report(results: &[TopicResult], k: usize) -> Report {
    let mut by: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut all = Acc::default();
    for t in results {
        by.entry(t.group).or_default().add(t, k);
        all.add(t, k);
    }
    let mut groups: Vec<GroupScore> = by
        .into_iter()
        .map(|(g, a)| a.finish(g.to_string()))
        .collect();
    groups.sort_by(|a, b| b.topics.cmp(&a.topics).then(a.group.cmp(&b.group)));
    let mut overall = all.finish("overall".into());
    overall.contents = groups.iter().map(|g| g.contents).sum();
    Report { k, groups, overall }
}

impl Report {
    /// The method §8 table plus the ranking columns.
    pub fn render(&self, title: &str) -> String {
        let mut s = format!(
            "{:<10} {:>7} {:>9} {:>7} {:>8}  {:>18}  {:>6} {:>6} {:>6}\n",
            title,
            "F2",
            "precision",
            "recall",
            "selected",
            "topics x contents",
            format!("R@{}", self.k),
            format!("P@{}", self.k),
            "MRR"
        );
        for g in self.groups.iter().chain(std::iter::once(&self.overall)) {
            s.push_str(&format!(
                "{:<10} {:>7.4} {:>9.4} {:>7.4} {:>8.2}  {:>18}  {:>6.3} {:>6.3} {:>6.3}\n",
                g.group,
                g.f2,
                g.precision,
                g.recall,
                g.mean_selected,
                format!("{} x {}", g.topics, g.contents),
                g.recall_at_k,
                g.precision_at_k,
                g.mrr
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u32]) -> HashSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn f2_by_hand() {
        // 1 hit of 2 predicted, 1 of 4 true: P = .5, R = .25, F2 = 5·.125/(2+.25) = 0.2778
        let (p, r, f) = f2(&[1, 9], &set(&[1, 2, 3, 4]));
        assert_eq!((p, r), (0.5, 0.25));
        assert!((f - 0.625 / 2.25).abs() < 1e-12);
        assert_eq!(f2(&[1, 2], &set(&[1, 2])), (1.0, 1.0, 1.0));
        assert_eq!(f2(&[5], &set(&[1])), (0.0, 0.0, 0.0));
        // Empty ground truth scores 0 whatever is predicted.
        assert_eq!(f2(&[5], &HashSet::new()), (0.0, 0.0, 0.0));
    }

    #[test]
    fn report_groups_and_ranks() {
        let t1 = set(&[1, 2]);
        let t2 = set(&[7]);
        let r1 = [1u32, 5, 2];
        let r2 = [3u32, 7];
        let results = vec![
            TopicResult {
                group: "en",
                ranked: &r1,
                selected: 1,
                truth: &t1,
                pool: 10,
            },
            TopicResult {
                group: "fr",
                ranked: &r2,
                selected: 2,
                truth: &t2,
                pool: 4,
            },
        ];
        let rep = report(&results, 2);
        let en = &rep.groups.iter().find(|g| g.group == "en").unwrap();
        // en: pred [1] -> P 1, R .5, F2 = 5·.5/(4+.5) = .5556; R@2 = .5; MRR 1.
        assert!((en.f2 - 2.5 / 4.5).abs() < 1e-12);
        assert_eq!(en.recall_at_k, 0.5);
        assert_eq!(en.mrr, 1.0);
        let fr = &rep.groups.iter().find(|g| g.group == "fr").unwrap();
        // fr: pred [3,7] -> P .5 R 1 F2 = 5·.5/(2+1) = .8333; MRR 1/2.
        assert!((fr.f2 - 2.5 / 3.0).abs() < 1e-12);
        assert_eq!(fr.mrr, 0.5);
        assert!((rep.overall.f2 - (en.f2 + fr.f2) / 2.0).abs() < 1e-12);
        assert_eq!(rep.overall.contents, 14);
        assert!(rep.render("language").contains("overall"));
    }
}

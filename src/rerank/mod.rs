//! The second stage: rerank the retrievers' candidates with gradient-boosted trees.
//!
//! [`candidates`] draws each topic's candidates (top K of every retriever, unioned),
//! [`features`] describes each (topic, content) pair, [`model`] trains, saves and applies the
//! booster and selects on its probability. This module ties them to a dataset: training on a
//! fold the retrievers did not train on (cross-fitted by channel halves), and scoring topics
//! for `eval`, `predict` and `serve`.

pub mod candidates;
pub mod features;
pub mod model;

use crate::data::Dataset;
use crate::pipeline::{EmbedSettings, Source};
use crate::select::similarity::Similarity;
use crate::select::{GroupBy, Ranked};
use anyhow::Result;
use candidates::TopicCandidates;
use features::{FeatureMatrix, LinkContext};
use model::{Meta, Reranker};
use std::collections::{BTreeMap, HashSet};

/// Candidates drawn per retriever by default.
pub const DEFAULT_K: usize = 50;

/// Candidates and features of a set of topics.
pub struct Prepared {
    pub topics: Vec<usize>,
    pub candidates: Vec<TopicCandidates>,
    pub features: FeatureMatrix,
    /// First feature row of each topic (and the total at the end).
    pub offsets: Vec<usize>,
}

impl Prepared {
    /// 1 for candidates that are true links of their topic, else 0.
    pub fn labels(&self, ds: &Dataset) -> Vec<f64> {
        let truth = crate::select::truth(ds);
        let empty = HashSet::new();
        self.candidates
            .iter()
            .flat_map(|tc| {
                let tr = truth.get(&tc.topic).unwrap_or(&empty);
                tc.candidates
                    .iter()
                    .map(|c| tr.contains(&c.content) as u8 as f64)
            })
            .collect()
    }

    /// Feature rows of the topics at `positions` (indices into `topics`).
    fn rows_of(&self, positions: &[usize]) -> Vec<usize> {
        positions
            .iter()
            .flat_map(|&p| self.offsets[p]..self.offsets[p + 1])
            .collect()
    }

    /// Each topic's candidates ordered by `scores` (one per feature row), best first.
    pub fn ranked_by(&self, scores: &[f32]) -> Vec<Ranked> {
        self.candidates
            .iter()
            .enumerate()
            .map(|(p, tc)| {
                let mut r: Ranked = tc
                    .candidates
                    .iter()
                    .zip(&scores[self.offsets[p]..self.offsets[p + 1]])
                    .map(|(c, &s)| (c.content, s))
                    .collect();
                r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                r
            })
            .collect()
    }

    /// Each topic's candidates ordered by column `c`'s similarity, cut to the column's own
    /// top `k` (exactly that retriever's top-k list).
    pub fn ranked_by_column(&self, c: usize, k: usize) -> Vec<Ranked> {
        self.candidates
            .iter()
            .map(|tc| {
                let mut r: Ranked = tc
                    .candidates
                    .iter()
                    .map(|x| (x.content, x.sims[c]))
                    .collect();
                r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                r.truncate(k);
                r
            })
            .collect()
    }
}

/// Loads each source as its own similarity, embedding `topics` and their languages' contents.
pub fn retrievers(
    ds: &Dataset,
    sources: &[Source],
    topics: &[usize],
    settings: &EmbedSettings,
) -> Result<Vec<Box<dyn Similarity>>> {
    sources
        .iter()
        .map(|s| crate::pipeline::similarity(ds, std::slice::from_ref(s), topics, settings))
        .collect()
}

/// The topics to embed for scoring `topics`: themselves and their parents.
pub fn with_parents(ds: &Dataset, topics: &[usize]) -> (Vec<Option<usize>>, Vec<usize>) {
    let forest = crate::data::tree::Forest::build(&ds.topics, &ds.topic_index);
    let parents: Vec<Option<usize>> = topics.iter().map(|&t| forest.parent[t]).collect();
    let mut all: Vec<usize> = topics.to_vec();
    let mut seen: HashSet<usize> = all.iter().copied().collect();
    for p in parents.iter().flatten() {
        if seen.insert(*p) {
            all.push(*p);
        }
    }
    (parents, all)
}

/// Candidates and features of `topics`; the links of `topics` themselves stay hidden.
pub fn prepare(
    ds: &Dataset,
    retrievers: &[Box<dyn Similarity>],
    topics: &[usize],
    parents: &[Option<usize>],
    k: usize,
) -> Result<Prepared> {
    let candidates = candidates::generate(ds, retrievers, topics, parents, k)?;
    let ctx = LinkContext::new(ds, topics);
    let features = features::compute(ds, &ctx, &candidates);
    let mut offsets = vec![0];
    for tc in &candidates {
        offsets.push(offsets.last().copied().unwrap_or(0) + tc.candidates.len());
    }
    Ok(Prepared {
        topics: topics.to_vec(),
        candidates,
        features,
        offsets,
    })
}

/// The name of the cross-encoder's feature.
pub const CROSS_FEATURE: &str = "cross_logit";

/// The positions of the candidates of `tc` whose pair the cross-encoder reads: the best `top`
/// by the last similarity column (the retrievers' mean when several), ties by content.
pub fn cross_positions(tc: &candidates::TopicCandidates, top: usize) -> Vec<usize> {
    let Some(col) = tc
        .candidates
        .first()
        .map(|c| c.sims.len().saturating_sub(1))
    else {
        return Vec::new();
    };
    let mut order: Vec<usize> = (0..tc.candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&tc.candidates[a], &tc.candidates[b]);
        y.sims[col]
            .total_cmp(&x.sims[col])
            .then(x.content.cmp(&y.content))
    });
    order.truncate(top);
    order
}

/// Adds the cross-encoder's logit as a feature: read for each topic's best `top` candidates
/// by the retrievers (the last column: their mean when several), missing (NaN) for the rest,
/// which the trees send down their own branch.
pub fn add_cross_column(
    ds: &Dataset,
    prep: &mut Prepared,
    cross: &crate::cross::model::CrossEncoder,
    top: usize,
    batch_size: usize,
) -> Result<()> {
    let mut rows = Vec::new();
    let mut pairs = Vec::new();
    for (p, tc) in prep.candidates.iter().enumerate() {
        for i in cross_positions(tc, top) {
            rows.push(prep.offsets[p] + i);
            pairs.push((tc.topic, tc.candidates[i].content));
        }
    }
    let texts = crate::text::topic_texts(&ds.topics);
    let logits = crate::cross::logits_of(cross, ds, &texts, &pairs, batch_size)?;
    let mut values = vec![f64::NAN; prep.features.rows];
    for (r, l) in rows.into_iter().zip(logits) {
        values[r] = l as f64;
    }
    prep.features.push_column(CROSS_FEATURE, &values);
    Ok(())
}

/// Loads the reranker's cross-encoder (if it has one) and adds its feature to `prep`.
pub fn add_cross_feature(rr: &Reranker, ds: &Dataset, prep: &mut Prepared) -> Result<()> {
    let Some(c) = &rr.meta.cross else {
        return Ok(());
    };
    let model = load_cross(c)?;
    add_cross_column(ds, prep, &model, c.top, CROSS_BATCH)
}

/// Pairs per transformer call of the cross-encoder feature (batch and service alike).
pub const CROSS_BATCH: usize = 32;

/// Loads the cross-encoder of a reranker's feature, in its precision.
pub fn load_cross(c: &model::CrossFeature) -> Result<crate::cross::model::CrossEncoder> {
    if let Some(want) = &c.fingerprint {
        let dir = std::path::Path::new(&c.dir);
        let got = crate::cross::model::fingerprint(dir)
            .map_err(|e| e.context(format!("the reranker's cross-encoder {}", c.dir)))?;
        anyhow::ensure!(
            &got == want,
            "the reranker's cross-encoder {} changed since the reranker was trained (its \
             weights, config or tokenizer differ: SHA-256 {got}, trained with {want}); its \
             logits are not the ones the trees learned: put the trained folder back, or train \
             the reranker again with this one",
            c.dir
        );
    }
    crate::cross::model::CrossEncoder::load(std::path::Path::new(&c.dir), &c.precision.options())
        .map_err(|e| e.context(format!("the reranker's cross-encoder {}", c.dir)))
}

/// Scores every candidate of `prep`, each topic with the booster that did not train on it.
pub fn score(rr: &Reranker, ds: &Dataset, prep: &Prepared) -> Result<Vec<f32>> {
    anyhow::ensure!(
        prep.features.names == rr.meta.features,
        "the candidates' features do not match the reranker's ({} against {} columns): \
         give the same number of --model retrievers it was trained with ({})",
        prep.features.names.len(),
        rr.meta.features.len(),
        rr.meta.retrievers.join(", ")
    );
    let mut groups: Vec<(&forust_ml::GradientBooster, Vec<usize>)> = Vec::new();
    for (p, &t) in prep.topics.iter().enumerate() {
        let b = rr.booster_for(&ds.topics[t].id);
        match groups.iter_mut().find(|g| std::ptr::eq(g.0, b)) {
            Some(g) => g.1.push(p),
            None => groups.push((b, vec![p])),
        }
    }
    let mut scores = vec![0f32; prep.features.rows];
    for (b, positions) in groups {
        let rows = prep.rows_of(&positions);
        let s = model::predict(b, &prep.features.select_rows(&rows));
        for (r, v) in rows.into_iter().zip(s) {
            scores[r] = v;
        }
    }
    Ok(scores)
}

/// Splits `topics` into two halves by channel (whole channels, sizes balanced, largest
/// channels first); with a single channel, alternate topics instead.
pub fn channel_halves(ds: &Dataset, topics: &[usize]) -> [Vec<usize>; 2] {
    let mut by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (p, &t) in topics.iter().enumerate() {
        by.entry(ds.topics[t].channel.as_str()).or_default().push(p);
    }
    let mut halves = [Vec::new(), Vec::new()];
    if by.len() < 2 {
        for p in 0..topics.len() {
            halves[p % 2].push(p);
        }
        return halves;
    }
    let mut chans: Vec<Vec<usize>> = by.into_values().collect();
    chans.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    for c in chans {
        let h = if halves[0].len() <= halves[1].len() {
            0
        } else {
            1
        };
        halves[h].extend(c);
    }
    halves.iter_mut().for_each(|h| h.sort_unstable());
    halves
}

pub use crate::select::sweep::{best_margin, best_selection};

/// Options of `lecr rerank train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub k: usize,
    pub boost: model::BoostSettings,
    /// Share of the training topics whose rows are also given in their cold form (the tree
    /// context of a channel nobody has linked yet), so the trees learn to rank without it.
    pub cold_share: f64,
    /// A cross-encoder whose logit becomes a feature (it must not have trained on the fold).
    pub cross: Option<model::CrossFeature>,
}

/// Default of [`TrainOptions::cold_share`].
pub const DEFAULT_COLD_SHARE: f64 = 0.0;

/// A booster's training rows: the topics at `positions`, plus the cold form of those whose
/// id hashes below `share` (a fixed choice per topic, so runs repeat).
fn training_rows(
    ds: &Dataset,
    prep: &Prepared,
    cold: &FeatureMatrix,
    y: &[f64],
    positions: &[usize],
    share: f64,
) -> (FeatureMatrix, Vec<f64>) {
    let rows = prep.rows_of(positions);
    let mut yy: Vec<f64> = rows.iter().map(|&r| y[r]).collect();
    let x = prep.features.select_rows(&rows);
    if share <= 0.0 {
        return (x, yy);
    }
    let chosen: Vec<usize> = positions
        .iter()
        .copied()
        .filter(|&p| unit_hash(&ds.topics[prep.topics[p]].id) < share)
        .collect();
    let cold_rows = prep.rows_of(&chosen);
    yy.extend(cold_rows.iter().map(|&r| y[r]));
    (x.stacked(&cold.select_rows(&cold_rows)), yy)
}

/// A topic id hashed to [0, 1) (FNV-1a), the same on every run and machine.
fn unit_hash(id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One row of the training comparison: a method scored on the same topics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MethodScore {
    pub method: String,
    pub setting: String,
    pub report: crate::select::score::Report,
}

/// What `lecr rerank train` reports besides the reranker itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    pub topics: usize,
    pub rows: usize,
    pub positives: usize,
    /// (language, true links among the candidates, true links).
    pub candidate_recall: Vec<(String, usize, usize)>,
    pub methods: Vec<MethodScore>,
    pub importances: Vec<(String, f32)>,
    pub halves: [usize; 2],
}

/// Trains a reranker on the topics of `fold` (with links) of `ds`: the retrievers must not
/// have trained on them. Two boosters are fitted on channel halves and scored on the other
/// half (out of fold) to choose the selection setting and report; the saved main booster is
/// fitted on all of them.
pub fn train(
    ds: &Dataset,
    sources: &[Source],
    retriever_args: &[String],
    settings: &EmbedSettings,
    fold: i32,
    opts: &TrainOptions,
) -> Result<(Reranker, TrainReport)> {
    let truth = crate::select::truth(ds);
    let topics: Vec<usize> = (0..ds.topics.len())
        .filter(|&t| ds.topics[t].fold == Some(fold) && truth.contains_key(&t))
        .collect();
    anyhow::ensure!(
        topics.len() >= 4,
        "{}: fold {fold} has {} topic(s) with links; the reranker needs at least 4 \
         (run `lecr split` first, and use a fold the retrievers did not train on)",
        ds.dir.display(),
        topics.len()
    );
    let (parents, embed) = with_parents(ds, &topics);
    let rets = retrievers(ds, sources, &embed, settings)?;
    let mut prep = prepare(ds, &rets, &topics, &parents, opts.k)?;
    if let Some(c) = &opts.cross {
        let model = load_cross(c)?;
        eprintln!(
            "cross-encoder {} ({}): the best {} candidates of each topic",
            c.dir, c.precision, c.top
        );
        add_cross_column(ds, &mut prep, &model, c.top, CROSS_BATCH)?;
    }
    let y = prep.labels(ds);
    let halves = channel_halves(ds, &topics);
    let cold = prep.features.cold();
    let mut oof = vec![0f32; prep.features.rows];
    let mut oof_cold = vec![0f32; prep.features.rows];
    let mut half_boosters = Vec::new();
    for (h, train_half) in halves.iter().enumerate() {
        let (x, yy) = training_rows(ds, &prep, &cold, &y, train_half, opts.cold_share);
        eprintln!(
            "training the booster of half {} ({} topics, {} rows)",
            h + 1,
            train_half.len(),
            x.rows
        );
        let b = model::fit(&x, &yy, &opts.boost)?;
        let other = prep.rows_of(&halves[1 - h]);
        let s = model::predict(&b, &prep.features.select_rows(&other));
        let sc = model::predict(&b, &cold.select_rows(&other));
        for ((r, v), vc) in other.into_iter().zip(s).zip(sc) {
            oof[r] = v;
            oof_cold[r] = vc;
        }
        half_boosters.push(b);
    }
    let all: Vec<usize> = (0..topics.len()).collect();
    let (x, yy) = training_rows(ds, &prep, &cold, &y, &all, opts.cold_share);
    eprintln!(
        "training the main booster ({} topics, {} rows)",
        topics.len(),
        x.rows
    );
    let full = model::fit(&x, &yy, &opts.boost)?;
    let ranked = prep.ranked_by(&oof);
    let (selection, _) = best_selection(&ranked, &topics, &truth);

    let report_at = |r: &[Ranked], count: &dyn Fn(&[f32]) -> usize| {
        crate::select::evaluate_with(ds, &topics, r, 10, GroupBy::Language, count)
    };
    let mut methods = Vec::new();
    let names = candidates::column_names(&rets);
    for (c, name) in names.iter().enumerate() {
        let r = prep.ranked_by_column(c, opts.k);
        let (m, _) = best_margin(&r, &topics, &truth);
        methods.push(MethodScore {
            method: if c == rets.len() {
                format!("ensemble (mean of {})", rets.len())
            } else {
                name.clone()
            },
            setting: format!("margin {m:.2}"),
            report: report_at(&r, &|s| {
                crate::select::threshold::selected_len(s, m, crate::select::threshold::MAX_SELECTED)
            }),
        });
    }
    methods.push(MethodScore {
        method: "reranker (out of fold)".into(),
        setting: selection.to_string(),
        report: report_at(&ranked, &|s| {
            selection.count(s, crate::select::threshold::MAX_SELECTED)
        }),
    });
    // What a topic of a channel with no links yet gets (Studio's new channels).
    methods.push(MethodScore {
        method: "reranker (out of fold), new-channel context".into(),
        setting: "the same selection".into(),
        report: report_at(&prep.ranked_by(&oof_cold), &|s| {
            selection.count(s, crate::select::threshold::MAX_SELECTED)
        }),
    });
    let feature_names = prep.features.names.clone();
    let importances = model::importances(&full, &feature_names);
    let id = |p: &usize| ds.topics[topics[*p]].id.clone();
    let meta = Meta {
        format: 1,
        retrievers: retriever_args.to_vec(),
        k: opts.k,
        max_len: settings.max_len,
        features: feature_names,
        selection,
        fold: Some(fold),
        halves: [
            halves[0].iter().map(id).collect(),
            halves[1].iter().map(id).collect(),
        ],
        boost: opts.boost,
        cold_share: opts.cold_share,
        cross: match &opts.cross {
            Some(c) => Some(model::CrossFeature {
                fingerprint: Some(crate::cross::model::fingerprint(std::path::Path::new(
                    &c.dir,
                ))?),
                ..c.clone()
            }),
            None => None,
        },
    };
    let mut hb = half_boosters.into_iter();
    let (a, b) = (
        hb.next().expect("two halves"),
        hb.next().expect("two halves"),
    );
    let report = TrainReport {
        topics: topics.len(),
        rows: prep.features.rows,
        positives: y.iter().filter(|&&v| v > 0.5).count(),
        candidate_recall: candidates::recall_by_language(ds, &prep.candidates, &truth),
        methods,
        importances,
        halves: [halves[0].len(), halves[1].len()],
    };
    Ok((Reranker::new(meta, full, [a, b]), report))
}

impl TrainReport {
    /// Markdown: candidate recall, the per-language comparison, the top importances.
    pub fn render(&self, k: usize) -> String {
        let mut s = format!(
            "{} topics, {} candidates ({} true links); channel halves of {} and {} topics\n\n",
            self.topics, self.rows, self.positives, self.halves[0], self.halves[1]
        );
        s.push_str(&format!(
            "candidate recall@{k} (true links among the candidates):\n\n| language | recall | found / true |\n| --- | --- | --- |\n"
        ));
        let (mut f, mut t) = (0, 0);
        for (l, found, total) in &self.candidate_recall {
            s.push_str(&format!(
                "| {l} | {:.4} | {found} / {total} |\n",
                *found as f64 / (*total).max(1) as f64
            ));
            f += found;
            t += total;
        }
        s.push_str(&format!(
            "| all | {:.4} | {f} / {t} |\n\n",
            f as f64 / t.max(1) as f64
        ));
        s.push_str("| method | setting | language | F2 | precision | recall | selected |\n| --- | --- | --- | --- | --- | --- | --- |\n");
        for m in &self.methods {
            for g in m.report.groups.iter().chain([&m.report.overall]) {
                s.push_str(&format!(
                    "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.1} |\n",
                    m.method, m.setting, g.group, g.f2, g.precision, g.recall, g.mean_selected
                ));
            }
        }
        s.push_str("\nfeature importances (share of total split gain, main booster):\n\n");
        for (n, v) in self.importances.iter().take(15) {
            s.push_str(&format!("  {n:<26} {v:.4}\n"));
        }
        s
    }
}

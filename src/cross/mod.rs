//! The cross-encoder stage: a transformer reads a topic and one of its candidate contents in
//! one sequence and gives one relevance logit. Where the bi-encoder compares two vectors made
//! apart, this one lets every token of the topic attend to every token of the content; it
//! costs one transformer pass per pair, so only each topic's top candidates are read.
//!
//! [`model`] loads, runs and saves it (Hugging Face sequence-classification folders);
//! [`train`] fits it on the retrievers' candidates of the training folds; this module ties it
//! to a dataset: candidate lists, re-scoring, and the F2 / cost comparison of `cross eval`.

pub mod model;
pub mod train;

use crate::data::Dataset;
use crate::pipeline::{EmbedSettings, Source};
use crate::select::Ranked;
use anyhow::Result;
use model::CrossEncoder;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Candidates read per topic unless told otherwise (`--top`).
pub const DEFAULT_TOP: usize = 20;

/// Each topic's candidates from the retrievers, best first (their similarity).
#[derive(Debug, Clone)]
pub struct CandidateLists {
    pub topics: Vec<usize>,
    pub ranked: Vec<Ranked>,
}

/// The top `n` contents of each of `topics` by the retrievers (their mean when several).
pub fn candidate_lists(
    ds: &Dataset,
    sources: &[Source],
    settings: &EmbedSettings,
    topics: &[usize],
    n: usize,
) -> Result<CandidateLists> {
    let sim = crate::pipeline::similarity(ds, sources, topics, settings)?;
    Ok(CandidateLists {
        topics: topics.to_vec(),
        ranked: crate::select::rank(ds, topics, sim.as_ref(), n)?,
    })
}

/// The (topic text, content text) of each (dataset topic, dataset content) pair: the texts the
/// retrievers embed (`text::topic_text`, `text::content_text`).
pub fn pair_texts(
    ds: &Dataset,
    topic_texts: &[String],
    pairs: &[(usize, u32)],
) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|&(t, c)| {
            (
                topic_texts[t].clone(),
                crate::text::content_text(&ds.contents[c as usize]),
            )
        })
        .collect()
}

/// The logistic function: a logit as a probability.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Each list re-scored by the cross-encoder (probabilities) and re-ordered, best first; ties
/// keep the content order.
pub fn rescore(
    model: &CrossEncoder,
    ds: &Dataset,
    topic_texts: &[String],
    lists: &CandidateLists,
    batch_size: usize,
) -> Result<Vec<Ranked>> {
    let pairs: Vec<(usize, u32)> = lists
        .topics
        .iter()
        .zip(&lists.ranked)
        .flat_map(|(&t, r)| r.iter().map(move |&(c, _)| (t, c)))
        .collect();
    let probs = logits_of(model, ds, topic_texts, &pairs, batch_size)?;
    let mut at = 0;
    Ok(lists
        .ranked
        .iter()
        .map(|r| {
            let mut out: Ranked = r
                .iter()
                .zip(&probs[at..at + r.len()])
                .map(|(&(c, _), &p)| (c, sigmoid(p)))
                .collect();
            at += r.len();
            sort_ranked(&mut out);
            out
        })
        .collect())
}

/// Best first, ties by content index.
fn sort_ranked(r: &mut Ranked) {
    r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// Logits of (topic, content) pairs in order.
pub fn logits_of(
    model: &CrossEncoder,
    ds: &Dataset,
    topic_texts: &[String],
    pairs: &[(usize, u32)],
    batch_size: usize,
) -> Result<Vec<f32>> {
    let texts = pair_texts(ds, topic_texts, pairs);
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let bar = crate::progress::bar(refs.len() as u64, "cross-encoder");
    let mut out = Vec::with_capacity(refs.len());
    // Chunks keep the bar moving and memory bounded on many topics.
    for chunk in refs.chunks(batch_size.max(1) * 16) {
        out.extend(model.logits(chunk, batch_size)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// One row of `cross eval`: the retriever's order or the cross-encoder's at a budget.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetRow {
    pub method: String,
    /// Candidates read per topic.
    pub top: usize,
    pub setting: String,
    pub f2: f64,
    pub precision: f64,
    pub recall: f64,
    /// True links among the candidates read, over all true links.
    pub recall_at_top: f64,
    /// Cross-encoder seconds for these topics (0 for the retriever).
    pub seconds: f64,
}

/// F2 of the retriever's order and of the cross-encoder's re-ordering of the top `n` of each
/// topic, for every `n` of `budgets` (at most the lists' length). The cross-encoder reads the
/// largest budget once; a smaller one re-orders the first `n` of the retriever's list with
/// the same scores, and its time is the largest one's, scaled by the pairs read.
pub fn evaluate_budgets(
    model: &CrossEncoder,
    ds: &Dataset,
    lists: &CandidateLists,
    budgets: &[usize],
    batch_size: usize,
) -> Result<Vec<BudgetRow>> {
    let truth = crate::select::truth(ds);
    let topic_texts = crate::text::topic_texts(&ds.topics);
    let t0 = Instant::now();
    let scored = rescore(model, ds, &topic_texts, lists, batch_size)?;
    let secs = t0.elapsed().as_secs_f64();
    let total_pairs: usize = lists.ranked.iter().map(Vec::len).sum();
    let prob: Vec<HashMap<u32, f32>> = scored.iter().map(|r| r.iter().copied().collect()).collect();
    let mut rows = Vec::new();
    let mut budgets: Vec<usize> = budgets.to_vec();
    budgets.sort_unstable();
    budgets.dedup();
    for &n in &budgets {
        let cut: Vec<Ranked> = lists
            .ranked
            .iter()
            .map(|r| r[..r.len().min(n)].to_vec())
            .collect();
        let pairs: usize = cut.iter().map(Vec::len).sum();
        let found = recall_of(&cut, &lists.topics, &truth);
        let (m, _) = crate::select::sweep::best_margin(&cut, &lists.topics, &truth);
        let report = crate::select::evaluate(
            ds,
            &lists.topics,
            &cut,
            m,
            10,
            crate::select::GroupBy::Language,
        );
        rows.push(BudgetRow {
            method: "retriever order".into(),
            top: n,
            setting: format!("margin {m:.2}"),
            f2: report.overall.f2,
            precision: report.overall.precision,
            recall: report.overall.recall,
            recall_at_top: found,
            seconds: 0.0,
        });
        let mut re: Vec<Ranked> = cut
            .iter()
            .zip(&prob)
            .map(|(r, p)| {
                let mut v: Ranked = r.iter().map(|&(c, _)| (c, p[&c])).collect();
                sort_ranked(&mut v);
                v
            })
            .collect();
        re.iter_mut().for_each(|r| r.truncate(n));
        let (sel, _) = crate::select::sweep::best_selection(&re, &lists.topics, &truth);
        let report = crate::select::evaluate_with(
            ds,
            &lists.topics,
            &re,
            10,
            crate::select::GroupBy::Language,
            |s| sel.count(s, crate::select::threshold::MAX_SELECTED),
        );
        rows.push(BudgetRow {
            method: "cross-encoder".into(),
            top: n,
            setting: sel.to_string(),
            f2: report.overall.f2,
            precision: report.overall.precision,
            recall: report.overall.recall,
            recall_at_top: found,
            seconds: secs * pairs as f64 / total_pairs.max(1) as f64,
        });
    }
    Ok(rows)
}

/// True links among the lists' contents over all true links of their topics.
fn recall_of(lists: &[Ranked], topics: &[usize], truth: &HashMap<usize, HashSet<u32>>) -> f64 {
    let (mut found, mut all) = (0usize, 0usize);
    let empty = HashSet::new();
    for (r, t) in lists.iter().zip(topics) {
        let tr = truth.get(t).unwrap_or(&empty);
        found += r.iter().filter(|(c, _)| tr.contains(c)).count();
        all += tr.len();
    }
    found as f64 / all.max(1) as f64
}

/// Markdown table of [`evaluate_budgets`]' rows.
pub fn render_budgets(rows: &[BudgetRow], topics: usize) -> String {
    let mut s = String::from(
        "| method | top | setting | F2 | precision | recall | recall@top | cross s | ms/topic |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1} | {:.1} |\n",
            r.method,
            r.top,
            r.setting,
            r.f2,
            r.precision,
            r.recall,
            r.recall_at_top,
            r.seconds,
            1000.0 * r.seconds / topics.max(1) as f64
        ));
    }
    s
}

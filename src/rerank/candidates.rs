//! Candidate generation for the second stage: for each topic, the union of the top-K contents
//! of every retriever (and of their mean when there are several), same language only. Each
//! candidate keeps what the features need from every retriever: its similarity, its rank, and
//! the similarity of the topic's parent to it; each topic keeps each retriever's best and k-th
//! best similarity.

use crate::data::Dataset;
use crate::select::similarity::Similarity;
use crate::select::threshold::top_r;
use crate::select::{contents_by_language, positions_by_language, BLOCK_ELEMENTS};
use anyhow::Result;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// Ranks are recorded this deep (times K); deeper candidates get rank `depth + 1`.
const RANK_DEPTH_FACTOR: usize = 4;
/// How deep ranks are recorded for candidates of the top `k`: what each column's row must
/// hold exactly.
pub fn rank_depth(k: usize) -> usize {
    k * RANK_DEPTH_FACTOR
}

/// The "k-th best" reference similarity of each retriever (features `gap_k`).
pub const KTH: usize = 10;

/// One candidate content of a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Dataset content index.
    pub content: u32,
    /// Similarity per column (retrievers, then their mean when there are several).
    pub sims: Vec<f32>,
    /// 1-based rank per column among the topic's language contents (capped, see `depth`).
    pub ranks: Vec<u32>,
    /// Similarity of the topic's parent to this content per column (NaN: no parent).
    pub parent_sims: Vec<f32>,
    /// How many retrievers (not the mean) have it in their top K.
    pub proposed_by: u32,
}

/// A topic's candidates and its per-column reference similarities.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicCandidates {
    pub topic: usize,
    pub candidates: Vec<Candidate>,
    /// Best similarity per column.
    pub best: Vec<f32>,
    /// [`KTH`]-best similarity per column (the worst one when the language has fewer contents).
    pub kth: Vec<f32>,
}

/// Column names: the retrievers' names, then `mean` when there are several.
pub fn column_names(retrievers: &[Box<dyn Similarity>]) -> Vec<String> {
    let mut v: Vec<String> = retrievers.iter().map(|r| r.name()).collect();
    if v.len() > 1 {
        v.push("mean".into());
    }
    v
}

/// Candidates of `topics` (dataset indices): the top `k` of every column, unioned. `parents`
/// gives each topic's parent (dataset index) whose similarities are recorded too; the parent
/// must be scorable by every retriever (embedded, for models).
pub fn generate(
    ds: &Dataset,
    retrievers: &[Box<dyn Similarity>],
    topics: &[usize],
    parents: &[Option<usize>],
    k: usize,
) -> Result<Vec<TopicCandidates>> {
    anyhow::ensure!(
        !retrievers.is_empty(),
        "no retriever to draw candidates from"
    );
    anyhow::ensure!(k >= 1, "K must be at least 1");
    let by_lang = contents_by_language(ds);
    let groups = positions_by_language(ds, topics);
    let n_ret = retrievers.len();
    let cols = if n_ret > 1 { n_ret + 1 } else { n_ret };
    let mut out: Vec<Option<TopicCandidates>> = vec![None; topics.len()];
    let bar = crate::progress::bar(topics.len() as u64, "candidates");
    for (lang, positions) in groups {
        let Some(contents) = by_lang.get(lang) else {
            for &p in &positions {
                out[p] = Some(TopicCandidates {
                    topic: topics[p],
                    candidates: Vec::new(),
                    best: vec![f32::NAN; cols],
                    kth: vec![f32::NAN; cols],
                });
            }
            bar.inc(positions.len() as u64);
            continue;
        };
        let scorers = retrievers
            .iter()
            .map(|r| r.against(contents))
            .collect::<Result<Vec<_>>>()?;
        let n = contents.len();
        // Topic rows and parent rows for every column are held at once.
        let block = (BLOCK_ELEMENTS / (n * 2 * cols)).max(1);
        for chunk in positions.chunks(block) {
            let ts: Vec<usize> = chunk.iter().map(|&p| topics[p]).collect();
            // A topic without a parent is scored in its parent's place; the result is unused.
            let ps: Vec<usize> = chunk
                .iter()
                .map(|&p| parents[p].unwrap_or(topics[p]))
                .collect();
            let both: Vec<usize> = ts.iter().chain(&ps).copied().collect();
            let mut rows: Vec<Vec<f32>> = scorers
                .iter()
                .map(|s| s.block(&both))
                .collect::<Result<_>>()?;
            if n_ret > 1 {
                let mut mean = rows[0].clone();
                for r in &rows[1..] {
                    mean.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                }
                let inv = 1.0 / n_ret as f32;
                mean.iter_mut().for_each(|v| *v *= inv);
                rows.push(mean);
            }
            let m = ts.len();
            let built: Vec<TopicCandidates> = (0..m)
                .into_par_iter()
                .map(|i| {
                    let topic_rows: Vec<&[f32]> =
                        (0..cols).map(|c| &rows[c][i * n..(i + 1) * n]).collect();
                    let parent_rows: Vec<&[f32]> = (0..cols)
                        .map(|c| &rows[c][(m + i) * n..(m + i + 1) * n])
                        .collect();
                    let has_parent = parents[chunk[i]].is_some();
                    let mut tc = from_rows(
                        ts[i],
                        &topic_rows,
                        has_parent.then_some(parent_rows.as_slice()),
                        n_ret,
                        k,
                    );
                    for c in &mut tc.candidates {
                        c.content = contents[c.content as usize] as u32;
                    }
                    tc
                })
                .collect();
            for (&p, tc) in chunk.iter().zip(built) {
                out[p] = Some(tc);
            }
            bar.inc(chunk.len() as u64);
        }
    }
    bar.finish_and_clear();
    Ok(out
        .into_iter()
        .map(|t| t.expect("every topic is in one language group"))
        .collect())
}

/// One topic's candidates from its similarity rows over one language's contents: one row per
/// column (the `n_ret` retrievers, then their mean when there are several), and its parent's
/// rows (`None`: no parent). Each candidate's `content` is its position in the rows. The
/// batch pipeline and the service both build candidates here, so they get the same ones.
pub fn from_rows(
    topic: usize,
    topic_rows: &[&[f32]],
    parent_rows: Option<&[&[f32]]>,
    n_ret: usize,
    k: usize,
) -> TopicCandidates {
    let cols = topic_rows.len();
    let depth = rank_depth(k);
    let tops: Vec<Vec<(u32, f32)>> = topic_rows.iter().map(|row| top_r(row, depth)).collect();
    if tops.iter().any(|t| t.is_empty()) {
        return TopicCandidates {
            topic,
            candidates: Vec::new(),
            best: vec![f32::NAN; cols],
            kth: vec![f32::NAN; cols],
        };
    }
    let rank_of: Vec<HashMap<u32, u32>> = tops
        .iter()
        .map(|t| {
            t.iter()
                .enumerate()
                .map(|(r, &(j, _))| (j, r as u32 + 1))
                .collect()
        })
        .collect();
    // Union of each column's top k, in first-seen order (stable across runs).
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let mut order: Vec<u32> = Vec::new();
    let mut proposed: Vec<u32> = Vec::new();
    for (c, t) in tops.iter().enumerate() {
        for &(j, _) in t.iter().take(k) {
            let slot = *seen.entry(j).or_insert_with(|| {
                order.push(j);
                proposed.push(0);
                order.len() - 1
            });
            if c < n_ret {
                proposed[slot] += 1;
            }
        }
    }
    let candidates = order
        .iter()
        .zip(&proposed)
        .map(|(&j, &by)| Candidate {
            content: j,
            sims: (0..cols).map(|c| topic_rows[c][j as usize]).collect(),
            ranks: (0..cols)
                .map(|c| rank_of[c].get(&j).copied().unwrap_or(depth as u32 + 1))
                .collect(),
            parent_sims: (0..cols)
                .map(|c| parent_rows.map_or(f32::NAN, |p| p[c][j as usize]))
                .collect(),
            proposed_by: by,
        })
        .collect();
    TopicCandidates {
        topic,
        candidates,
        best: tops.iter().map(|t| t[0].1).collect(),
        kth: tops
            .iter()
            .map(|t| t[(KTH - 1).min(t.len() - 1)].1)
            .collect(),
    }
}

/// Share of each language's true links that are among the candidates (the second stage's
/// ceiling), as (language, found, total).
pub fn recall_by_language(
    ds: &Dataset,
    cands: &[TopicCandidates],
    truth: &HashMap<usize, std::collections::HashSet<u32>>,
) -> Vec<(String, usize, usize)> {
    let mut acc: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for tc in cands {
        let Some(tr) = truth.get(&tc.topic) else {
            continue;
        };
        let e = acc.entry(ds.topics[tc.topic].language.clone()).or_default();
        e.0 += tc
            .candidates
            .iter()
            .filter(|c| tr.contains(&c.content))
            .count();
        e.1 += tr.len();
    }
    acc.into_iter().map(|(l, (f, t))| (l, f, t)).collect()
}

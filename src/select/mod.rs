//! Selection and score (method §8): rank each topic's language contents by similarity, select
//! with the dynamic threshold, score F2 / precision / recall and ranking metrics.

pub mod lexical;
pub mod postings;
pub mod score;
pub mod similarity;
pub mod sweep;
pub mod threshold;

use crate::data::Dataset;
use anyhow::Result;
use rayon::prelude::*;
use similarity::Similarity;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Similarity values held at once while scoring one block of topics (32 MiB of f32).
pub const BLOCK_ELEMENTS: usize = 1 << 23;

/// A topic's candidates, best first: (dataset content index, similarity).
pub type Ranked = Vec<(u32, f32)>;

/// Content indices by language.
pub fn contents_by_language(ds: &Dataset) -> HashMap<&str, Vec<usize>> {
    let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in ds.contents.iter().enumerate() {
        m.entry(c.language.as_str()).or_default().push(i);
    }
    m
}

/// Positions in `topics` (dataset indices) grouped by the topic's language, languages sorted.
pub fn positions_by_language<'a>(
    ds: &'a Dataset,
    topics: &[usize],
) -> BTreeMap<&'a str, Vec<usize>> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (pos, &t) in topics.iter().enumerate() {
        groups
            .entry(ds.topics[t].language.as_str())
            .or_default()
            .push(pos);
    }
    groups
}

/// Ranks the contents of each topic's language for `topics` (dataset indices), keeping the
/// best `r`. Topics whose language has no content get an empty list.
pub fn rank(ds: &Dataset, topics: &[usize], sim: &dyn Similarity, r: usize) -> Result<Vec<Ranked>> {
    rank_blocked(ds, topics, sim, r, BLOCK_ELEMENTS)
}

/// [`rank`] holding at most about `block_elements` similarities at once (at least one row).
pub fn rank_blocked(
    ds: &Dataset,
    topics: &[usize],
    sim: &dyn Similarity,
    r: usize,
    block_elements: usize,
) -> Result<Vec<Ranked>> {
    let by_lang = contents_by_language(ds);
    let groups = positions_by_language(ds, topics);
    let mut out: Vec<Ranked> = vec![Vec::new(); topics.len()];
    let bar = crate::progress::bar(topics.len() as u64, "ranking");
    for (lang, positions) in groups {
        let Some(contents) = by_lang.get(lang) else {
            bar.inc(positions.len() as u64);
            continue;
        };
        let scorer = sim.against(contents)?;
        let n = contents.len();
        let block = (block_elements / n).max(1);
        for chunk in positions.chunks(block) {
            let ts: Vec<usize> = chunk.iter().map(|&p| topics[p]).collect();
            let sims = scorer.block(&ts)?;
            let ranked: Vec<Ranked> = sims
                .par_chunks(n)
                .map(|row| {
                    threshold::top_r(row, r)
                        .into_iter()
                        .map(|(j, s)| (contents[j as usize] as u32, s))
                        .collect()
                })
                .collect();
            for (&p, rk) in chunk.iter().zip(ranked) {
                out[p] = rk;
            }
            bar.inc(chunk.len() as u64);
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Ground-truth content sets per dataset topic index.
pub fn truth(ds: &Dataset) -> HashMap<usize, HashSet<u32>> {
    let mut m: HashMap<usize, HashSet<u32>> = HashMap::new();
    for (t, c) in ds.pairs() {
        m.entry(t).or_default().insert(c as u32);
    }
    m
}

/// How to group topics in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    Language,
    Channel,
}

/// Scores ranked lists at one margin.
pub fn evaluate(
    ds: &Dataset,
    topics: &[usize],
    ranked: &[Ranked],
    margin: f32,
    k: usize,
    by: GroupBy,
) -> score::Report {
    evaluate_with(ds, topics, ranked, k, by, |sims| {
        threshold::selected_len(sims, margin, threshold::MAX_SELECTED)
    })
}

/// Scores ranked lists, selecting with `selected_len` (scores high to low → how many).
pub fn evaluate_with(
    ds: &Dataset,
    topics: &[usize],
    ranked: &[Ranked],
    k: usize,
    by: GroupBy,
    selected_len: impl Fn(&[f32]) -> usize,
) -> score::Report {
    let truth = truth(ds);
    let empty = HashSet::new();
    let pools: HashMap<&str, usize> = contents_by_language(ds)
        .into_iter()
        .map(|(l, v)| (l, v.len()))
        .collect();
    let ids: Vec<Vec<u32>> = ranked
        .iter()
        .map(|r| r.iter().map(|x| x.0).collect())
        .collect();
    let results: Vec<score::TopicResult> = topics
        .iter()
        .zip(ranked)
        .zip(&ids)
        .map(|((&t, r), ids)| {
            let sims: Vec<f32> = r.iter().map(|x| x.1).collect();
            let topic = &ds.topics[t];
            score::TopicResult {
                group: match by {
                    GroupBy::Language => &topic.language,
                    GroupBy::Channel => &topic.channel,
                },
                ranked: ids,
                selected: selected_len(&sims),
                truth: truth.get(&t).unwrap_or(&empty),
                pool: pools.get(topic.language.as_str()).copied().unwrap_or(0),
            }
        })
        .collect();
    score::report(&results, k)
}

/// The selected contents of each ranked list at `margin`.
pub fn select(ranked: &[Ranked], margin: f32) -> Vec<Vec<u32>> {
    ranked
        .iter()
        .map(|r| {
            let sims: Vec<f32> = r.iter().map(|x| x.1).collect();
            let n = threshold::selected_len(&sims, margin, threshold::MAX_SELECTED);
            r[..n].iter().map(|x| x.0).collect()
        })
        .collect()
}

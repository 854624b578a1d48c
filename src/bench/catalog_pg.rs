//! `lecr bench catalog --index postgres`: how much of the exact answer pgvector's HNSW search
//! finds. Queries are random unit vectors (as the catalog's random vectors are), each in a
//! language drawn in proportion to the catalog, or given (`--vectors model`: topics as the
//! model embeds them); the exact top 100 is a full scan of that language's stored f32
//! vectors, the approximate one is [`Store::nearest`] as the server asks it. Which plan the
//! database ran is reported too: on a small language the planner may scan exactly.

use crate::store::search::SearchSettings;
use crate::store::{Location, Store};
use anyhow::Result;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// How many of the exact nearest contents the search finds.
pub const DEPTH: usize = 100;

/// Scores this close to the exact 100th count as ties ([`Recall::near`]).
pub const TIE: f32 = 1e-4;

#[derive(Debug, Clone, Default)]
pub struct Recall {
    /// Mean over the queries of |approximate top 100 ∩ exact top 100| / 100 (or the
    /// language's size when smaller).
    pub recall: f64,
    /// The same, counting a returned content whose exact score is within [`TIE`] of the
    /// exact 100th's as found: near the 100th the scores lie closer together than halfvec's
    /// rounding, so which of two near-equal contents comes back is close to a coin toss.
    pub near: f64,
    pub queries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The search table with its indexes, on the server.
    pub table_bytes: u64,
    /// The database server and its pgvector ([`Store::search_engine`]).
    pub engine: String,
    /// How the database ran the searches: in how many languages through their HNSW graph,
    /// and which languages (of how many contents) it scanned exactly.
    pub plan: String,
}

/// Measures recall@100 of `given` queries (language, vector), or of `queries` random ones.
pub fn recall(
    store: &Location,
    settings: SearchSettings,
    given: Option<Vec<(String, Vec<f32>)>>,
    queries: usize,
    seed: u64,
) -> Result<Recall> {
    let st = Store::open_at(store)?;
    // Every recommendable content's exact vector, by language (read once).
    let mut by_lang: BTreeMap<String, (Vec<String>, Vec<f32>)> = BTreeMap::new();
    let mut dim = 0;
    st.each(|c| {
        if let Some(l) = c.meta.language {
            dim = c.vector.len();
            let e = by_lang.entry(l).or_default();
            e.0.push(c.meta.id);
            e.1.extend_from_slice(&c.vector);
        }
        Ok::<(), anyhow::Error>(())
    })?;
    anyhow::ensure!(dim > 0, "{store}: no recommendable content to search");
    let total: usize = by_lang.values().map(|v| v.0.len()).sum();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x7ec4);
    let (mut found, mut near, mut wanted) = (0usize, 0usize, 0usize);
    let given = given.map(|g| g.into_iter());
    let queries = given.as_ref().map_or(queries, |g| g.len());
    let mut given = given;
    let mut times = Vec::with_capacity(queries);
    let mut exact_plans = BTreeMap::new();
    let mut planned = HashSet::new();
    for _ in 0..queries {
        let (lang, q) = match given.as_mut().and_then(Iterator::next) {
            Some(g) => g,
            None => {
                let mut pick = rng.gen_range(0..total);
                let lang = by_lang
                    .iter()
                    .find(|(_, v)| {
                        let hit = pick < v.0.len();
                        if !hit {
                            pick -= v.0.len();
                        }
                        hit
                    })
                    .expect("pick < total")
                    .0
                    .clone();
                (lang, super::catalog::random_unit(&mut rng, dim))
            }
        };
        let Some((ids, vecs)) = by_lang.get(&lang) else {
            continue;
        };
        let lang = lang.as_str();
        anyhow::ensure!(
            q.len() == dim,
            "a query of {} values, the store's {dim}",
            q.len()
        );
        if planned.insert(lang.to_string())
            && !st.search_plan(lang, &q, DEPTH, settings)?.uses_hnsw()
        {
            exact_plans.insert(lang.to_string(), ids.len());
        }
        let mut exact: Vec<(f32, usize)> = vecs
            .chunks_exact(dim)
            .enumerate()
            .map(|(j, v)| (crate::kernels::quantized::chain_dot(v, &q), j))
            .collect();
        let k = DEPTH.min(exact.len());
        exact.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        let kth = exact[k - 1].0;
        let truth: HashSet<&str> = exact[..k].iter().map(|&(_, j)| ids[j].as_str()).collect();
        let t0 = Instant::now();
        let got = st.nearest(lang, &q, DEPTH, settings)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        found += got
            .iter()
            .filter(|(id, _)| truth.contains(id.as_str()))
            .count();
        // Ranked on exact scores, as the server does.
        let mut scores: Vec<f32> = got
            .iter()
            .map(|(_, v)| crate::kernels::quantized::chain_dot(v, &q))
            .collect();
        scores.sort_by(|a, b| b.total_cmp(a));
        near += scores.iter().take(k).filter(|&&s| s >= kth - TIE).count();
        wanted += k;
    }
    anyhow::ensure!(
        !times.is_empty(),
        "{store}: no query in a language of the store"
    );
    times.sort_by(f64::total_cmp);
    let mut plan = format!(
        "HNSW graphs in {} of {} languages",
        planned.len() - exact_plans.len(),
        planned.len()
    );
    if !exact_plans.is_empty() {
        plan += &format!(
            "; exact scans in {}",
            exact_plans
                .iter()
                .map(|(l, n)| format!("{l} ({n} contents)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    Ok(Recall {
        recall: found as f64 / wanted.max(1) as f64,
        near: near as f64 / wanted.max(1) as f64,
        queries: times.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        table_bytes: st.search_bytes()?,
        engine: st.search_engine()?,
        plan,
    })
}

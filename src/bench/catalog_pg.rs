//! `lecr bench catalog --index postgres`: how much of the exact answer pgvector's HNSW search
//! finds. Queries are random unit vectors (as the catalog's vectors are), each in a language
//! drawn in proportion to the catalog; the exact top 100 is a full scan of that language's
//! stored f32 vectors, the approximate one is [`Store::nearest`] as the server asks it.

use crate::store::search::SearchSettings;
use crate::store::{Location, Store};
use anyhow::Result;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// How many of the exact nearest contents the search finds.
pub const DEPTH: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct Recall {
    /// Mean over the queries of |approximate top 100 ∩ exact top 100| / 100 (or the
    /// language's size when smaller).
    pub recall: f64,
    pub queries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The search table with its indexes, on the server.
    pub table_bytes: u64,
}

/// Measures recall@100 of `queries` random queries.
pub fn recall(
    store: &Location,
    settings: SearchSettings,
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
    let (mut found, mut wanted) = (0usize, 0usize);
    let mut times = Vec::with_capacity(queries);
    for _ in 0..queries {
        let mut pick = rng.gen_range(0..total);
        let (lang, (ids, vecs)) = by_lang
            .iter()
            .find(|(_, v)| {
                let hit = pick < v.0.len();
                if !hit {
                    pick -= v.0.len();
                }
                hit
            })
            .expect("pick < total");
        let q = super::catalog::random_unit(&mut rng, dim);
        let mut exact: Vec<(f32, usize)> = vecs
            .chunks_exact(dim)
            .enumerate()
            .map(|(j, v)| (crate::kernels::quantized::chain_dot(v, &q), j))
            .collect();
        let k = DEPTH.min(exact.len());
        exact.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        let truth: HashSet<&str> = exact[..k].iter().map(|&(_, j)| ids[j].as_str()).collect();
        let t0 = Instant::now();
        let got = st.nearest(lang, &q, DEPTH, settings)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        found += got
            .iter()
            .filter(|(id, _)| truth.contains(id.as_str()))
            .count();
        wanted += k;
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    Ok(Recall {
        recall: found as f64 / wanted.max(1) as f64,
        queries,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        table_bytes: st.search_bytes()?,
    })
}

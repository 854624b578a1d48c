//! The PostgreSQL index mode (`lecr serve --index postgres`): the contents' vectors and the
//! nearest-neighbour search live in the shared store (pgvector, HNSW; see
//! [`crate::store::search`]), so a replica holds no vectors. A topic's answer asks the
//! database for its language's nearest contents (as deep as the ranking needs: `r` hits, or
//! the second stage's rank depth), gets their exact f32 vectors with them, and ranks those on
//! exact scores with the same `top_r` and candidate builder as the in-memory index. What can
//! differ from the in-memory index is only recall: a content the HNSW graph misses is not
//! ranked (`lecr bench catalog --index postgres` measures recall@100 against exact search).
//!
//! With the lexical retriever, each replica keeps its languages' lexical indexes in memory
//! (as the in-memory mode does; the vectors stay in the store) and a topic's pool is the
//! union of two exact lists asked in one transaction: the store's nearest contents and the
//! lexical index's best (whose exact vectors come back with them). A content in neither list
//! scores at most the ensemble of the two lists' last scores (the ensemble is non-decreasing
//! in both; the vectors' last is raised by the half-precision rounding the store ranks by),
//! and since the replica holds every content's lexical similarity to the topic, the contents
//! that can still enter the top are known by name: those outside the pool whose own bound,
//! the ensemble of the vectors' last score and their lexical similarity, reaches the pool's
//! `depth`-th best score. They are read back (their exact vectors, a second round trip on the
//! same connection), and then the pool's top is the whole language's. Both lists start at
//! twice the depth (at least 32); the vectors' list is deepened 4× at a time only while those
//! contents are more than [`POOL_CAP`]× the depth (or a content with no lexical similarity
//! could still enter), at most to that cap (and at least three deepenings). Within that cap,
//! what can differ from the in-memory index is again only the vectors' recall; an answer
//! given at the cap without that certainty is counted (`lecr_search_uncertain_total`).

use super::index::{ensemble, mean, Column, Hit, Parent, ServedCandidates};
use crate::kernels::quantized::chain_dot;
use crate::rerank::candidates::{from_rows, rank_depth};
use crate::select::threshold;
use crate::store::search::SearchSettings;
use crate::store::{Location, Store, StoreError};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

/// With the lexical retriever, both lists' first depth per content ranked ...
const POOL_FIRST: usize = 2;
/// ... and at least this deep (a shallow ranking's bound is loose) ...
const POOL_FLOOR: usize = 32;
/// ... deepened this many times over while uncertain ...
const POOL_GROWTH: usize = 4;
/// ... up to this depth per content ranked (and at least three deepenings past the floor).
pub const POOL_CAP: usize = 64;
/// How far above the lowest exact similarity of the store's nearest list one outside it may
/// lie: the store ranks by half-precision vectors (rounding each factor by at most 2^-11
/// of itself), for unit-length vectors at most about 1e-3.
const HALF_SLACK: f32 = 2e-3;

/// What the PostgreSQL index mode ranks against besides the store's nearest contents when
/// the lexical retriever is on (built by the index, which holds the lexical indexes).
pub struct LexicalSide<'a> {
    /// How many models the vectors average.
    pub models: usize,
    /// The language's ids in row order.
    pub ids: &'a [String],
    /// Each content's row in its language's order.
    pub row_of: &'a HashMap<String, usize>,
    /// Each topic's lexical similarity to every row (`None`: the language is not fitted yet,
    /// every content scores 0).
    pub rows: Option<Vec<Vec<f32>>>,
    /// Each topic's parent's lexical similarity to every row (empty: none asked).
    pub parent_rows: Vec<Option<Vec<f32>>>,
}

impl LexicalSide<'_> {
    /// `id`'s row in the language, when this replica's index holds it there.
    fn row(&self, id: &str) -> Option<usize> {
        self.row_of
            .get(id)
            .copied()
            .filter(|&r| self.ids.get(r).is_some_and(|x| x == id))
    }
}

/// Connections to the store for searching (apart from the engine's own, which writes), one
/// per concurrent search.
pub struct RemoteSearch {
    pool: Vec<Mutex<Store>>,
    settings: SearchSettings,
    /// Answers given at the lexical cap without certainty (`lecr_search_uncertain_total`).
    uncertain: prometheus::IntCounter,
}

/// One topic's pool: ids, exact vectors, exact similarities to the topic (vectors and
/// lexical) and rows in the language (`None`: not in this replica's index yet), in row order
/// (so that ties rank as in the in-memory index), the others last.
struct Pool {
    ids: Vec<String>,
    vectors: Vec<Vec<f32>>,
    sims: Vec<f32>,
    lexical: Vec<f32>,
    rows: Vec<Option<usize>>,
}

impl Pool {
    fn new(
        found: HashMap<String, Vec<f32>>,
        t: &[f32],
        side: Option<(&LexicalSide, usize)>,
    ) -> Pool {
        let mut items: Vec<(Option<usize>, String, Vec<f32>)> = found
            .into_iter()
            .map(|(id, x)| (side.and_then(|(s, _)| s.row(&id)), id, x))
            .collect();
        items.sort_unstable_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        let lexical_row = side.and_then(|(s, i)| s.rows.as_ref().map(|r| &r[i][..]));
        let mut pool = Pool {
            ids: Vec::with_capacity(items.len()),
            vectors: Vec::with_capacity(items.len()),
            sims: Vec::with_capacity(items.len()),
            lexical: Vec::with_capacity(items.len()),
            rows: Vec::with_capacity(items.len()),
        };
        for (row, id, x) in items {
            pool.sims.push(chain_dot(&x, t));
            pool.lexical
                .push(row.zip(lexical_row).map_or(0.0, |(r, l)| l[r]));
            pool.rows.push(row);
            pool.ids.push(id);
            pool.vectors.push(x);
        }
        pool
    }
}

impl RemoteSearch {
    /// Opens `connections` connections to the store at `loc` (a PostgreSQL URL); answers
    /// given without certainty are counted in `uncertain`.
    pub fn open(
        loc: &Location,
        connections: usize,
        settings: SearchSettings,
        uncertain: prometheus::IntCounter,
    ) -> Result<Self, StoreError> {
        let pool = (0..connections.max(1))
            .map(|_| Store::open_at(loc).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RemoteSearch {
            pool,
            settings,
            uncertain,
        })
    }

    pub fn settings(&self) -> SearchSettings {
        self.settings
    }

    /// Answers given so far at the lexical cap without certainty that they are the whole
    /// language's top.
    pub fn uncertain(&self) -> u64 {
        self.uncertain.get()
    }

    /// A free connection (the first one when all are busy).
    fn connection(&self) -> io::Result<std::sync::MutexGuard<'_, Store>> {
        self.pool
            .iter()
            .find_map(|c| c.try_lock().ok())
            .map_or_else(|| self.pool[0].lock(), Ok)
            .map_err(|_| io::Error::other("a search connection's lock is poisoned"))
    }

    /// Topic `t`'s pool in `lang` for a ranking `depth` deep: its nearest contents and, with
    /// `side` (the lexical side and the topic's number), the lexical best, deep enough that
    /// the pool's top `depth` by `rank` (a content's similarities, vectors then lexical, to
    /// its ranked score; non-decreasing in both) is the language's (see the module's note).
    fn pool(
        &self,
        lang: &str,
        t: &[f32],
        depth: usize,
        side: Option<(&LexicalSide, usize)>,
        rank: &dyn Fn(f32, f32) -> f32,
    ) -> io::Result<Pool> {
        // The store's error travels inside (the queue tells its unavailability apart).
        let lexical_row = side.and_then(|(s, i)| s.rows.as_ref().map(|r| &r[i][..]));
        let (Some((s, _)), Some(row)) = (side, lexical_row) else {
            // No lexical list: the nearest contents alone (every lexical score is 0, and
            // `rank` is non-decreasing in the vectors' similarity).
            let near = self
                .connection()?
                .nearest(lang, t, depth, self.settings)
                .map_err(io::Error::other)?;
            return Ok(Pool::new(near.into_iter().collect(), t, side));
        };
        let n = s.ids.len();
        let cap = (POOL_CAP * depth).max(POOL_FLOOR * POOL_GROWTH.pow(3));
        let mut kv = (POOL_FIRST * depth).max(POOL_FLOOR);
        let mut d = kv.min(n);
        let mut found: HashMap<String, Vec<f32>> = HashMap::new();
        let mut rounds = 0;
        let mut fetched = 0;
        loop {
            rounds += 1;
            let lexical = threshold::top_r(row, d);
            let ids: Vec<&str> = lexical
                .iter()
                .map(|&(j, _)| s.ids[j as usize].as_str())
                .filter(|id| !found.contains_key(*id))
                .collect();
            let conn = self.connection()?;
            let (near, more) = conn
                .nearest_and(lang, t, kv, &ids, self.settings)
                .map_err(io::Error::other)?;
            // Fewer than asked: the language has no more, all are here. The store orders by
            // half-precision similarity, so one outside the list may lie a rounding above.
            let v_last = if near.len() < kv {
                f32::NEG_INFINITY
            } else {
                near.iter()
                    .map(|(_, x)| chain_dot(x, t))
                    .fold(f32::INFINITY, f32::min)
                    + HALF_SLACK
            };
            found.extend(near.into_iter().chain(more));
            if v_last == f32::NEG_INFINITY || depth == 0 {
                break;
            }
            let score =
                |id: &str, x: &[f32]| rank(chain_dot(x, t), s.row(id).map_or(0.0, |r| row[r]));
            let mut scores: Vec<f32> = found.iter().map(|(id, x)| score(id, x)).collect();
            let kth = if scores.len() >= depth {
                *scores
                    .select_nth_unstable_by(depth - 1, |a, b| b.total_cmp(a))
                    .1
            } else {
                f32::NEG_INFINITY
            };
            // A content outside the pool scores at most `rank(v_last, l)`, its own lexical
            // similarity `l` known here (0 for one this replica's index does not hold). When
            // even `l = 0` stays below the k-th, only the contents whose own bound reaches it
            // can enter the top: all of them, read back, make the pool's top the language's.
            if rank(v_last, 0.0) < kth {
                let need: Vec<&str> = (0..n)
                    .filter(|&j| rank(v_last, row[j]) >= kth)
                    .map(|j| s.ids[j].as_str())
                    .filter(|id| !found.contains_key(*id))
                    .collect();
                fetched = need.len();
                if need.len() <= cap {
                    let got = conn
                        .vectors_of(&need, self.settings)
                        .map_err(io::Error::other)?;
                    found.extend(got);
                    break;
                }
            }
            if kv >= cap && d >= cap.min(n) {
                self.uncertain.inc();
                break;
            }
            kv = (POOL_GROWTH * kv).min(cap);
            d = (POOL_GROWTH * d).min(cap).min(n);
        }
        tracing::debug!(
            "pool of {} in `{lang}` for depth {depth}: {rounds} round(s), vectors {kv}, lexical {d}, \
             {fetched} read back by name",
            found.len()
        );
        Ok(Pool::new(found, t, side))
    }

    /// The `r` most similar contents of `lang` for each topic vector (rows of `topics`, `dim`
    /// values each), best first, on exact similarities; with `side`, by the ensemble with
    /// the lexical similarity, as the in-memory index ranks.
    pub fn search(
        &self,
        lang: &str,
        topics: &[f32],
        dim: usize,
        side: Option<&LexicalSide>,
        r: usize,
    ) -> io::Result<Vec<Vec<Hit>>> {
        let rank = |v: f32, l: f32| side.map_or(v, |s| ensemble(s.models, v, l));
        topics
            .par_chunks(dim.max(1))
            .enumerate()
            .map(|(i, t)| {
                let p = self.pool(lang, t, r, side.map(|s| (s, i)), &rank)?;
                let row: Vec<f32> = p
                    .sims
                    .iter()
                    .zip(&p.lexical)
                    .map(|(&v, &l)| rank(v, l))
                    .collect();
                Ok(threshold::top_r(&row, r)
                    .into_iter()
                    .map(|(j, s)| Hit {
                        content: p.ids[j as usize].clone(),
                        similarity: s,
                    })
                    .collect())
            })
            .collect()
    }

    /// The second stage's candidates of each topic, built as the in-memory index builds them
    /// from the `rank_depth(k)` nearest contents (the vectors' column) and, with `side`, the
    /// lexical best (the lexical column, and the columns' mean certified as in
    /// [`search`](Self::search)).
    #[allow(clippy::too_many_arguments)]
    pub fn candidates(
        &self,
        lang: &str,
        topics: &[f32],
        dim: usize,
        side: Option<&LexicalSide>,
        parents: &[Option<Parent>],
        columns: &[Column],
        k: usize,
    ) -> io::Result<Vec<ServedCandidates>> {
        let n_ret = columns.len();
        let pick = |v: f32, l: f32| -> Vec<f32> {
            columns
                .iter()
                .map(|c| match c {
                    Column::Vectors => v,
                    Column::Lexical => l,
                })
                .collect()
        };
        // The ranked row that needs the bound: the columns' mean (or the one column).
        let rank = |v: f32, l: f32| {
            let cols: Vec<[f32; 1]> = pick(v, l).into_iter().map(|x| [x]).collect();
            mean(&cols)[0]
        };
        topics
            .par_chunks(dim.max(1))
            .enumerate()
            .map(|(i, t)| {
                let p = self.pool(lang, t, rank_depth(k), side.map(|s| (s, i)), &rank)?;
                let mut rows: Vec<&[f32]> = columns
                    .iter()
                    .map(|c| match c {
                        Column::Vectors => &p.sims[..],
                        Column::Lexical => &p.lexical[..],
                    })
                    .collect();
                let average = (n_ret > 1).then(|| mean(&rows));
                if let Some(m) = &average {
                    rows.push(m);
                }
                let mut tc = from_rows(0, &rows, None, n_ret, k);
                if let Some(parent) = parents.get(i).and_then(Option::as_ref) {
                    let plex = side
                        .and_then(|s| s.parent_rows.get(i))
                        .and_then(Option::as_ref);
                    for c in &mut tc.candidates {
                        let j = c.content as usize;
                        let l = match (plex, p.rows[j]) {
                            (Some(pl), Some(r)) => pl[r],
                            _ => 0.0,
                        };
                        let mut ps = pick(chain_dot(&p.vectors[j], parent.vector), l);
                        if n_ret > 1 {
                            let cols: Vec<&[f32]> = ps.iter().map(std::slice::from_ref).collect();
                            ps.push(mean(&cols)[0]);
                        }
                        c.parent_sims = ps;
                    }
                }
                let ids = tc
                    .candidates
                    .iter()
                    .map(|c| p.ids[c.content as usize].clone())
                    .collect();
                Ok(ServedCandidates { topic: tc, ids })
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;

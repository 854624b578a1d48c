//! The PostgreSQL index mode (`lecr serve --index postgres`): the contents' vectors and the
//! nearest-neighbour search live in the shared store (pgvector, HNSW; see
//! [`crate::store::search`]), so a replica holds no vectors. A topic's answer asks the
//! database for its language's nearest contents (as deep as the ranking needs: `r` hits, or
//! the second stage's rank depth), gets their exact f32 vectors with them, and ranks those on
//! exact scores with the same `top_r` and candidate builder as the in-memory index. What can
//! differ from the in-memory index is only recall: a content the HNSW graph misses is not
//! ranked (`lecr bench catalog --index postgres` measures recall@100 against exact search).

use super::index::{mean, Column, Hit, Parent, ServedCandidates};
use crate::kernels::quantized::chain_dot;
use crate::rerank::candidates::{from_rows, rank_depth};
use crate::select::threshold;
use crate::store::search::SearchSettings;
use crate::store::{Location, Store, StoreError};
use rayon::prelude::*;
use std::io;
use std::sync::Mutex;

/// Connections to the store for searching (apart from the engine's own, which writes), one
/// per concurrent search.
pub struct RemoteSearch {
    pool: Vec<Mutex<Store>>,
    settings: SearchSettings,
}

impl RemoteSearch {
    /// Opens `connections` connections to the store at `loc` (a PostgreSQL URL).
    pub fn open(
        loc: &Location,
        connections: usize,
        settings: SearchSettings,
    ) -> Result<Self, StoreError> {
        let pool = (0..connections.max(1))
            .map(|_| Store::open_at(loc).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RemoteSearch { pool, settings })
    }

    pub fn settings(&self) -> SearchSettings {
        self.settings
    }

    /// The nearest `k` contents of `lang` to `t` with their exact vectors, on a free
    /// connection (the first one when all are busy).
    fn nearest(&self, lang: &str, t: &[f32], k: usize) -> io::Result<Vec<(String, Vec<f32>)>> {
        let store = self
            .pool
            .iter()
            .find_map(|c| c.try_lock().ok())
            .map_or_else(|| self.pool[0].lock(), Ok)
            .map_err(|_| io::Error::other("a search connection's lock is poisoned"))?;
        // The store's error travels inside (the queue tells its unavailability apart).
        store
            .nearest(lang, t, k, self.settings)
            .map_err(io::Error::other)
    }

    /// The `r` most similar contents of `lang` for each topic vector (rows of `topics`, `dim`
    /// values each), best first, on exact similarities.
    pub fn search(
        &self,
        lang: &str,
        topics: &[f32],
        dim: usize,
        r: usize,
    ) -> io::Result<Vec<Vec<Hit>>> {
        topics
            .par_chunks(dim.max(1))
            .map(|t| {
                let found = self.nearest(lang, t, r)?;
                let row: Vec<f32> = found.iter().map(|(_, x)| chain_dot(x, t)).collect();
                Ok(threshold::top_r(&row, r)
                    .into_iter()
                    .map(|(j, s)| Hit {
                        content: found[j as usize].0.clone(),
                        similarity: s,
                    })
                    .collect())
            })
            .collect()
    }

    /// The second stage's candidates of each topic, built as the in-memory index builds them
    /// from the `rank_depth(k)` nearest contents (the vectors' column; a lexical column
    /// scores 0, and the engine refuses that combination at start).
    pub fn candidates(
        &self,
        lang: &str,
        topics: &[f32],
        dim: usize,
        parents: &[Option<Parent>],
        columns: &[Column],
        k: usize,
    ) -> io::Result<Vec<ServedCandidates>> {
        let n_ret = columns.len();
        topics
            .par_chunks(dim.max(1))
            .enumerate()
            .map(|(i, t)| {
                let found = self.nearest(lang, t, rank_depth(k))?;
                let sims: Vec<f32> = found.iter().map(|(_, x)| chain_dot(x, t)).collect();
                let zeros = vec![0.0; found.len()];
                let mut rows: Vec<&[f32]> = columns
                    .iter()
                    .map(|c| match c {
                        Column::Vectors => &sims[..],
                        Column::Lexical => &zeros[..],
                    })
                    .collect();
                let average = (n_ret > 1).then(|| mean(&rows));
                if let Some(m) = &average {
                    rows.push(m);
                }
                let mut tc = from_rows(0, &rows, None, n_ret, k);
                if let Some(p) = parents.get(i).and_then(Option::as_ref) {
                    for c in &mut tc.candidates {
                        let x = &found[c.content as usize].1;
                        let mut ps: Vec<f32> = columns
                            .iter()
                            .map(|col| match col {
                                Column::Vectors => chain_dot(x, p.vector),
                                Column::Lexical => 0.0,
                            })
                            .collect();
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
                    .map(|c| found[c.content as usize].0.clone())
                    .collect();
                Ok(ServedCandidates { topic: tc, ids })
            })
            .collect()
    }
}

//! PostgreSQL does the search (`lecr serve --index postgres`): every recommendable content's
//! vector is also kept in a pgvector column, `content_search.embedding` (`halfvec`, 2 bytes a
//! value), under an HNSW graph for inner product per language ([`graphs`]), so a replica asks
//! the database for a topic's nearest contents instead of holding the catalog's vectors.
//!
//! - The table is made by [`Store::enable_search`] (a server that starts in this mode), which
//!   also fills in every content the table misses and then builds the graph of each language
//!   that needs one and has none (building after the rows is several times faster than
//!   inserting under an index); every later start builds those of languages grown past
//!   [`INDEXED_FROM`] rows since.
//! - From then on every writer of the store ([`Store::apply`]: servers in either mode,
//!   `feedback import`, ...) keeps the table (and so the graphs) in step in the same
//!   transaction as the content, because the store itself checks whether the table exists.
//! - [`Store::nearest`] asks for a language's nearest contents (its graph, with pgvector's
//!   iterative scan so `k` rows come back, or an exact scan of a small language) and returns
//!   them with their exact f32 vectors from `contents`: the caller ranks on exact scores; only
//!   recall is approximate (and measured by `lecr bench catalog --index postgres`).
//!
//! SQLite stores have no such table: asking for it there is an error that says so.

use super::{Db, Result, Store, StoreError};
use pgvector::HalfVector;

mod graphs;
pub use graphs::{Graphs, INDEXED_FROM};

/// The table of the search rows.
pub const TABLE: &str = "content_search";

/// How an HNSW search runs: `ef_search` candidates kept per query (pgvector's
/// `hnsw.ef_search`; at most 1,000), and how long the database may take over one query
/// before it cancels it (`statement_timeout`; the caller gets [`StoreError::is_unavailable`]);
/// and from how many contents a language gets a graph of its own at a server's start
/// (smaller ones are scanned exactly).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSettings {
    pub ef_search: usize,
    pub timeout: std::time::Duration,
    pub indexed_from: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            // recall@100 0.98 on MiniLM vectors at LECR's size, p50 7.6 ms (README, "PostgreSQL
            // does the search"); 200 found 0.95.
            ef_search: 800,
            // A query hundreds of times slower than that waits on something else (a lock, an
            // overloaded server) and should give way.
            timeout: std::time::Duration::from_secs(5),
            indexed_from: INDEXED_FROM,
        }
    }
}

impl SearchSettings {
    /// The settings of one search's transaction.
    fn sql(&self) -> String {
        // relaxed_order: the graph is walked further until `k` rows are found; their order
        // may be slightly off, which exact rescoring makes up for. force_custom_plan: each
        // search is planned with its language, so the planner picks that language's graph
        // (a partial index) or, for a small language, its exact scan.
        format!(
            "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {};
             SET LOCAL statement_timeout = {};
             SET LOCAL plan_cache_mode = force_custom_plan",
            self.ef_search.clamp(1, 1000),
            self.timeout.as_millis().clamp(1, i32::MAX as u128)
        )
    }
}

/// The nearest-neighbour query ($1 language, $2 the query halfvec, $3 k).
const NEAREST: &str = "SELECT id FROM content_search WHERE language = $1
     ORDER BY embedding <#> $2 LIMIT $3";

/// The database's plan of a search ([`Store::search_plan`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan(pub String);

impl SearchPlan {
    /// Whether the search walks the HNSW graph (approximate) rather than scanning the
    /// language's rows (exact).
    pub fn uses_hnsw(&self) -> bool {
        self.0.contains(graphs::PREFIX)
    }
}

/// What [`Store::enable_search`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSetup {
    /// Rows written because the table missed them.
    pub filled: usize,
    /// The languages' HNSW graphs: which were built now, which languages have one, which are
    /// scanned exactly.
    pub graphs: Graphs,
    /// Rows in the table.
    pub rows: usize,
}

/// The stored exact vectors of a set of ids (`$1`, a text array).
const VECTORS_OF: &str = "SELECT id, vector FROM contents WHERE id = ANY($1)";

/// Contents' ids with their stored exact vectors.
pub type IdVectors = Vec<(String, Vec<f32>)>;

/// `(id, exact vector)` of each row of a query selecting `id, vector`.
fn id_vectors(rows: &[postgres::Row]) -> Result<IdVectors> {
    rows.iter()
        .map(|r| {
            let blob: Vec<u8> = r.try_get(1)?;
            Ok((r.try_get(0)?, super::contents::from_blob(&blob)))
        })
        .collect()
}

/// The advisory lock key under which the search table is made and filled ("lecs").
const SEARCH_LOCK: i64 = 0x6c65_6373;

fn to_half(v: &[f32]) -> HalfVector {
    HalfVector::from_f32_slice(v)
}

impl Store {
    /// Whether this store keeps search rows (a PostgreSQL store whose `content_search` table
    /// exists). Once seen, remembered for the connection.
    pub(crate) fn search_on(&self) -> Result<bool> {
        if self.search.get() {
            return Ok(true);
        }
        let Db::Postgres(c) = &self.db else {
            return Ok(false);
        };
        let on: bool = c
            .borrow_mut()?
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&TABLE])?
            .get(0);
        self.search.set(on);
        Ok(on)
    }

    /// Makes the search table for vectors of `dim` values (with the `vector` extension),
    /// fills in the contents it misses and builds the HNSW graph of every language of at
    /// least `indexed_from` rows that has none ([`INDEXED_FROM`] for a server), under an
    /// advisory lock so replicas starting together do it once. A table of another dimension (the model
    /// changed) is made again. Calls `progress(done)` while filling.
    pub fn enable_search(
        &mut self,
        dim: usize,
        indexed_from: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<SearchSetup> {
        let place = self.place.clone();
        let Db::Postgres(pg) = &self.db else {
            return Err(StoreError::Invalid(format!(
                "{place}: the PostgreSQL index mode needs a PostgreSQL store (--store \
                 postgres://...); this store is SQLite"
            )));
        };
        let mut c = pg.borrow_mut()?;
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEARCH_LOCK])?;
        let has_vector: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')",
                &[],
            )?
            .get(0);
        if !has_vector {
            return Err(StoreError::Invalid(format!(
                "{place}: this PostgreSQL server has no pgvector extension (`vector`), which \
                 the PostgreSQL index mode needs; run a server that bundles it \
                 (scripts/fetch-pgvector.sh fetches one; see README, \"PostgreSQL does the \
                 search\")"
            )));
        }
        tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector")?;
        // The column's declared dimension, when the table exists.
        let found: Option<i32> = tx
            .query_opt(
                "SELECT a.atttypmod FROM pg_attribute a
                 WHERE a.attrelid = to_regclass($1) AND a.attname = 'embedding'",
                &[&TABLE],
            )?
            .map(|r| r.get(0));
        if let Some(d) = found.filter(|&d| d != dim as i32) {
            tracing::info!(
                "{place}: the search table holds vectors of {d} values, the model gives {dim}: \
                 made again"
            );
            tx.batch_execute(&format!("DROP TABLE {TABLE}"))?;
        }
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (
                 id TEXT PRIMARY KEY REFERENCES contents (id) ON DELETE CASCADE,
                 language TEXT NOT NULL,
                 embedding halfvec({dim}) NOT NULL
             )"
        ))?;
        // Contents with a language whose row is missing or stale (another writer changed the
        // content before the table existed), streamed.
        let insert = tx.prepare(&format!(
            "INSERT INTO {TABLE} (id, language, embedding)
             SELECT * FROM unnest($1::text[], $2::text[], $3::halfvec[])
             ON CONFLICT (id) DO UPDATE SET language = excluded.language,
                 embedding = excluded.embedding"
        ))?;
        let missing = tx.prepare(&format!(
            "SELECT c.id, c.language, c.vector FROM contents c
             WHERE c.language IS NOT NULL AND NOT EXISTS
                 (SELECT 1 FROM {TABLE} s WHERE s.id = c.id AND s.language = c.language)"
        ))?;
        // A portal, read 2,000 rows at a time: the catalog is never held here.
        let portal = tx.bind(&missing, &[])?;
        let mut filled = 0;
        loop {
            let chunk = tx.query_portal(&portal, 2_000)?;
            if chunk.is_empty() {
                break;
            }
            let mut ids = Vec::with_capacity(chunk.len());
            let mut langs = Vec::with_capacity(chunk.len());
            let mut vecs = Vec::with_capacity(chunk.len());
            for r in &chunk {
                let id: String = r.try_get(0)?;
                let blob: Vec<u8> = r.try_get(2)?;
                if blob.len() != dim * 4 {
                    return Err(StoreError::Invalid(format!(
                        "{place}: content {id} has a vector of {} values, the model gives {dim}",
                        blob.len() / 4
                    )));
                }
                vecs.push(to_half(&super::contents::from_blob(&blob)));
                langs.push(r.try_get::<_, String>(1)?);
                ids.push(id);
            }
            tx.execute(&insert, &[&ids, &langs, &vecs])?;
            filled += chunk.len();
            progress(filled);
        }
        // Closed before the index is built (an open portal holds the table).
        drop(portal);
        let rows: i64 = tx
            .query_one(&format!("SELECT COUNT(*) FROM {TABLE}"), &[])?
            .get(0);
        let graphs = graphs::ensure(&mut tx, &place, dim, indexed_from, filled)?;
        tx.commit()?;
        drop(c);
        self.search.set(true);
        Ok(SearchSetup {
            filled,
            graphs,
            rows: rows as usize,
        })
    }

    /// The (about) `k` contents of `language` nearest to `query` by inner product, from the
    /// language's HNSW graph (or an exact scan of a small language), each with its exact
    /// stored vector, in no particular order (rank them on exact scores).
    pub fn nearest(
        &self,
        language: &str,
        query: &[f32],
        k: usize,
        settings: SearchSettings,
    ) -> Result<IdVectors> {
        Ok(self.nearest_and(language, query, k, &[], settings)?.0)
    }

    /// [`nearest`](Self::nearest), and in the same transaction the stored exact vectors of
    /// those of `also` that exist (the PostgreSQL index mode's lexical candidates): one round
    /// trip for both.
    pub fn nearest_and(
        &self,
        language: &str,
        query: &[f32],
        k: usize,
        also: &[&str],
        settings: SearchSettings,
    ) -> Result<(IdVectors, IdVectors)> {
        let (near, more) = self.in_search(settings, |tx| {
            let near = tx.query(
                &format!(
                    "SELECT c.id, c.vector FROM ({NEAREST}) s
                     JOIN contents c ON c.id = s.id"
                ),
                &[&language, &to_half(query), &(k as i64)],
            )?;
            let more = if also.is_empty() {
                Vec::new()
            } else {
                tx.query(VECTORS_OF, &[&also])?
            };
            Ok((near, more))
        })?;
        Ok((id_vectors(&near)?, id_vectors(&more)?))
    }

    /// The stored exact vectors of those of `ids` that exist, in one query run as searches
    /// run (`settings`' time limit): the PostgreSQL index mode's deeper lexical candidates.
    pub fn vectors_of(&self, ids: &[&str], settings: SearchSettings) -> Result<IdVectors> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        id_vectors(&self.in_search(settings, |tx| Ok(tx.query(VECTORS_OF, &[&ids])?))?)
    }

    /// How the database runs [`nearest`](Self::nearest)'s search for `language` (its
    /// `EXPLAIN`): whether through the language's HNSW graph ([`SearchPlan::uses_hnsw`]) or
    /// an exact scan.
    pub fn search_plan(
        &self,
        language: &str,
        query: &[f32],
        k: usize,
        settings: SearchSettings,
    ) -> Result<SearchPlan> {
        let rows = self.in_search(settings, |tx| {
            Ok(tx.query(
                &format!("EXPLAIN {NEAREST}"),
                &[&language, &to_half(query), &(k as i64)],
            )?)
        })?;
        let lines: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        Ok(SearchPlan(lines.join("\n")))
    }

    /// Runs `f` in a transaction with `settings` applied, as every search runs (an error on
    /// a SQLite store, which has no search table).
    fn in_search<T>(
        &self,
        settings: SearchSettings,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let Db::Postgres(pg) = &self.db else {
            return Err(StoreError::Invalid(format!(
                "{}: no search table in a SQLite store (the search needs PostgreSQL)",
                self.place
            )));
        };
        let mut c = pg.borrow_mut()?;
        let mut tx = c.transaction()?;
        tx.batch_execute(&settings.sql())?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Drops the search table (all vectors are about to change: `--reembed`); the next
    /// server in the PostgreSQL index mode makes it again.
    pub fn forget_search(&mut self) -> Result<()> {
        if let Db::Postgres(c) = &self.db {
            c.borrow_mut()?
                .batch_execute(&format!("DROP TABLE IF EXISTS {TABLE}"))?;
        }
        self.search.set(false);
        Ok(())
    }

    /// The database server and the pgvector it runs, for the start line and the benches:
    /// `PostgreSQL 15.18, pgvector 0.8.0` (empty where the store is not PostgreSQL).
    pub fn search_engine(&self) -> Result<String> {
        let Db::Postgres(c) = &self.db else {
            return Ok(String::new());
        };
        let row = c.borrow_mut()?.query_one(
            "SELECT current_setting('server_version'),
                    (SELECT extversion FROM pg_extension WHERE extname = 'vector')",
            &[],
        )?;
        let server: String = row.get(0);
        let vector: Option<String> = row.get(1);
        Ok(format!(
            "PostgreSQL {}, pgvector {}",
            server.split_whitespace().next().unwrap_or(&server),
            vector.as_deref().unwrap_or("not installed")
        ))
    }

    /// Rows in the search table (0 where there is none).
    pub fn search_rows(&self) -> Result<usize> {
        let sql = format!("SELECT COUNT(*) FROM {TABLE}");
        Ok(self.search_figure(&sql)? as usize)
    }

    /// Bytes the search table and its indexes take on the server.
    pub fn search_bytes(&self) -> Result<u64> {
        let sql = format!("SELECT pg_total_relation_size(to_regclass('{TABLE}'))");
        Ok(self.search_figure(&sql)? as u64)
    }

    /// One `bigint` about the search table (0 where there is none).
    fn search_figure(&self, sql: &str) -> Result<i64> {
        match &self.db {
            Db::Postgres(c) if self.search_on()? => Ok(c.borrow_mut()?.query_one(sql, &[])?.get(0)),
            _ => Ok(0),
        }
    }
}

/// The search rows' part of [`Store::apply`] on PostgreSQL, in its transaction: written
/// contents with a language get their row, others (and deleted ones, by the foreign key's
/// cascade) lose it.
pub(crate) fn apply_pg(
    tx: &mut postgres::Transaction<'_>,
    upserts: &[super::StoredContent],
) -> Result<()> {
    let up = tx.prepare(&format!(
        "INSERT INTO {TABLE} (id, language, embedding) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET language = excluded.language,
             embedding = excluded.embedding"
    ))?;
    let gone = tx.prepare(&format!("DELETE FROM {TABLE} WHERE id = $1"))?;
    for c in upserts {
        match &c.meta.language {
            Some(lang) => {
                tx.execute(&up, &[&c.meta.id, lang, &to_half(&c.vector)])?;
            }
            None => {
                tx.execute(&gone, &[&c.meta.id])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

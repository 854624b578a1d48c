//! PostgreSQL does the search (`lecr serve --index postgres`): every recommendable content's
//! vector is also kept in a pgvector column, `content_search.embedding` (`halfvec`, 2 bytes a
//! value), under an HNSW index for inner product, so a replica asks the database for a
//! topic's nearest contents instead of holding the catalog's vectors.
//!
//! - The table is made by [`Store::enable_search`] (a server that starts in this mode), which
//!   also fills in every content the table misses and then builds the index (building after
//!   the rows is several times faster than inserting under an index).
//! - From then on every writer of the store ([`Store::apply`]: servers in either mode,
//!   `feedback import`, ...) keeps the table in step in the same transaction as the content,
//!   because the store itself checks whether the table exists.
//! - [`Store::nearest`] asks the index for a language's nearest contents (pgvector's iterative
//!   scan, so the language filter still returns `k` rows) and returns them with their exact
//!   f32 vectors from `contents`: the caller ranks on exact scores; only recall is approximate
//!   (and measured by `lecr bench catalog --index postgres`).
//!
//! SQLite stores have no such table: asking for it there is an error that says so.

use super::{Db, Result, Store, StoreError};
use pgvector::HalfVector;

/// The table of the search rows.
pub const TABLE: &str = "content_search";

/// How an HNSW search runs: `ef_search` candidates kept per query (pgvector's
/// `hnsw.ef_search`; at most 1,000), and how long the database may take over one query
/// before it cancels it (`statement_timeout`; the caller gets [`StoreError::is_unavailable`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSettings {
    pub ef_search: usize,
    pub timeout: std::time::Duration,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            ef_search: 200,
            // One nearest-100 query takes about 50 ms at LECR's size, 100 ms at its p99: a
            // query a hundred times slower waits on something else (a lock, an overloaded
            // server) and should give way.
            timeout: std::time::Duration::from_secs(5),
        }
    }
}

impl SearchSettings {
    /// The settings of one search's transaction.
    fn sql(&self) -> String {
        // relaxed_order: the index is scanned further until `k` rows of the language are
        // found; their order may be slightly off, which exact rescoring makes up for.
        format!(
            "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {};
             SET LOCAL statement_timeout = {}",
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
        self.0.contains("content_search_hnsw")
    }
}

/// Memory the HNSW build may use, per row of `dim` values: the half-precision vector and its
/// neighbour lists (pgvector keeps the graph in `maintenance_work_mem` while it fits, and
/// builds several times slower once it does not).
fn build_memory(rows: usize, dim: usize) -> u64 {
    const MIN: u64 = 64 << 20;
    (rows as u64 * (2 * dim as u64 + 1024)).clamp(MIN, MAX_BUILD_MEMORY)
}

/// The most the HNSW build asks for (about 2.7 million MiniLM-size rows).
const MAX_BUILD_MEMORY: u64 = 4 << 30;

/// What [`Store::enable_search`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSetup {
    /// Rows written because the table missed them.
    pub filled: usize,
    /// Whether the HNSW index was built now (else it was there).
    pub built_index: bool,
    /// Rows in the table.
    pub rows: usize,
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
    /// fills in the contents it misses and builds its HNSW index, under an advisory lock so
    /// replicas starting together do it once. A table of another dimension (the model
    /// changed) is made again. Calls `progress(done)` while filling.
    pub fn enable_search(
        &mut self,
        dim: usize,
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
        let built_index: bool = tx
            .query_one("SELECT to_regclass('content_search_hnsw') IS NULL", &[])?
            .get(0);
        let rows: i64 = tx
            .query_one(&format!("SELECT COUNT(*) FROM {TABLE}"), &[])?
            .get(0);
        if built_index {
            // Memory for the build, sized so the graph stays in memory (the server's parallel
            // maintenance workers share it).
            let memory = build_memory(rows as usize, dim);
            if memory == MAX_BUILD_MEMORY {
                tracing::warn!(
                    "{place}: the HNSW graph of {rows} rows may not fit in the {} MiB the build \
                     asks for; it goes on more slowly on disk",
                    memory >> 20
                );
            }
            tx.batch_execute(&format!(
                "SET LOCAL maintenance_work_mem = '{}MB';
                 CREATE INDEX content_search_hnsw ON {TABLE}
                     USING hnsw (embedding halfvec_ip_ops);
                 CREATE INDEX IF NOT EXISTS content_search_language ON {TABLE} (language);
                 ANALYZE {TABLE}",
                memory >> 20
            ))?;
            // ANALYZE: without the table's statistics the planner guesses a language holds a
            // handful of rows and scans it exactly, until autovacuum's first ANALYZE switches
            // the same query to the HNSW index: the plan (and its recall) would change under
            // a running server.
        }
        tx.commit()?;
        drop(c);
        self.search.set(true);
        Ok(SearchSetup {
            filled,
            built_index,
            rows: rows as usize,
        })
    }

    /// The (about) `k` contents of `language` nearest to `query` by inner product, from the
    /// HNSW index, each with its exact stored vector, in no particular order (rank them on
    /// exact scores).
    pub fn nearest(
        &self,
        language: &str,
        query: &[f32],
        k: usize,
        settings: SearchSettings,
    ) -> Result<Vec<(String, Vec<f32>)>> {
        let Db::Postgres(pg) = &self.db else {
            return Err(StoreError::Invalid(format!(
                "{}: no search table in a SQLite store",
                self.place
            )));
        };
        let mut c = pg.borrow_mut()?;
        let mut tx = c.transaction()?;
        tx.batch_execute(&settings.sql())?;
        let rows = tx.query(
            &format!(
                "SELECT c.id, c.vector FROM ({NEAREST}) s
                 JOIN contents c ON c.id = s.id"
            ),
            &[&language, &to_half(query), &(k as i64)],
        )?;
        tx.commit()?;
        rows.iter()
            .map(|r| {
                let blob: Vec<u8> = r.try_get(1)?;
                Ok((r.try_get(0)?, super::contents::from_blob(&blob)))
            })
            .collect()
    }

    /// How the database runs [`nearest`](Self::nearest)'s search for `language` (its
    /// `EXPLAIN`): whether through the HNSW index ([`SearchPlan::uses_hnsw`]) or an exact scan.
    pub fn search_plan(
        &self,
        language: &str,
        query: &[f32],
        k: usize,
        settings: SearchSettings,
    ) -> Result<SearchPlan> {
        let Db::Postgres(pg) = &self.db else {
            return Err(StoreError::Invalid(format!(
                "{}: the search needs a PostgreSQL store",
                self.place
            )));
        };
        let mut c = pg.borrow_mut()?;
        let mut tx = c.transaction()?;
        tx.batch_execute(&settings.sql())?;
        let rows = tx.query(
            &format!("EXPLAIN {NEAREST}"),
            &[&language, &to_half(query), &(k as i64)],
        )?;
        let lines: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        tx.commit()?;
        Ok(SearchPlan(lines.join("\n")))
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
mod tests {
    use super::*;
    use crate::store::cluster::Cluster;
    use crate::store::{ContentMeta, Location, StoredContent};
    use rand::SeedableRng;

    fn content(id: &str, lang: Option<&str>, vector: Vec<f32>) -> StoredContent {
        StoredContent {
            meta: ContentMeta {
                id: id.into(),
                channel_id: "ch".into(),
                title: format!("title {id}"),
                description: String::new(),
                kind: "video".into(),
                language: lang.map(str::to_string),
                short_text: String::new(),
            },
            text: format!("title {id}"),
            vector,
        }
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn the_hnsw_index_finds_the_exact_neighbours_of_a_language_and_follows_every_write() {
        let pg = Cluster::start_pgvector().expect(
            "a PostgreSQL with pgvector (scripts/fetch-pgvector.sh; scripts/test.sh runs it)",
        );
        let loc = Location::Postgres(pg.url());
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let dim = 24;
        let mut store = Store::open_at(&loc).unwrap();
        // Written before the table exists: the first enable fills them in.
        let mut all = Vec::new();
        for i in 0..3_000 {
            let lang = match i % 5 {
                0 => None,
                1 | 2 => Some("fr"),
                _ => Some("en"),
            };
            all.push(content(
                &format!("c{i}"),
                lang,
                crate::bench::catalog::random_unit(&mut rng, dim),
            ));
        }
        store.apply(&all, &[]).unwrap();
        assert!(!store.search_on().unwrap());
        let mut seen = 0;
        let setup = store.enable_search(dim, |n| seen = n).unwrap();
        assert_eq!(setup.filled, 2_400, "every content with a language");
        assert_eq!(seen, 2_400);
        assert!(setup.built_index);
        assert_eq!(setup.rows, 2_400);
        // Again (another replica starting): nothing to do.
        let again = Store::open_at(&loc)
            .unwrap()
            .enable_search(dim, |_| {})
            .unwrap();
        assert_eq!(
            (again.filled, again.built_index, again.rows),
            (0, false, 2_400)
        );

        let settings = SearchSettings::default();
        let mut found_total = 0;
        for q in 0..20 {
            let query = crate::bench::catalog::random_unit(&mut rng, dim);
            let lang = if q % 2 == 0 { "en" } else { "fr" };
            let got = store.nearest(lang, &query, 50, settings).unwrap();
            assert_eq!(
                got.len(),
                50,
                "the iterative scan fills k rows of the language"
            );
            let mut exact: Vec<(f32, &str)> = all
                .iter()
                .filter(|c| c.meta.language.as_deref() == Some(lang))
                .map(|c| (dot(&c.vector, &query), c.meta.id.as_str()))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            let top: std::collections::HashSet<&str> = exact.iter().take(50).map(|e| e.1).collect();
            for (id, v) in &got {
                let stored = all.iter().find(|c| &c.meta.id == id).unwrap();
                assert_eq!(stored.meta.language.as_deref(), Some(lang));
                assert_eq!(v, &stored.vector, "the exact f32 vector, not the halfvec");
            }
            found_total += got
                .iter()
                .filter(|(id, _)| top.contains(id.as_str()))
                .count();
        }
        let recall = found_total as f64 / (20.0 * 50.0);
        assert!(recall >= 0.95, "recall@50 {recall}");

        // Writes after the table exists keep it in step, in their transaction.
        let probe = crate::bench::catalog::random_unit(&mut rng, dim);
        store
            .apply(&[content("new", Some("en"), probe.clone())], &[])
            .unwrap();
        let near = |s: &Store, lang: &str| -> Vec<String> {
            s.nearest(lang, &probe, 1, settings)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        assert_eq!(near(&store, "en"), ["new"]);
        // A writer that opened the store before (it learns of the table on its own).
        let other = Store::open_at(&loc).unwrap();
        let mut other = other;
        other
            .apply(&[content("new", Some("fr"), probe.clone())], &[])
            .unwrap();
        assert_eq!(near(&store, "fr"), ["new"], "moved to its new language");
        assert_ne!(near(&store, "en"), ["new"]);
        other
            .apply(&[content("new", None, probe.clone())], &[])
            .unwrap();
        assert_ne!(
            near(&store, "fr"),
            ["new"],
            "no language: not recommendable"
        );
        other
            .apply(&[content("new", Some("fr"), probe.clone())], &[])
            .unwrap();
        other.apply(&[], &["new".to_string()]).unwrap();
        assert_ne!(near(&store, "fr"), ["new"], "deleted with its content");
        assert_eq!(store.search_rows().unwrap(), 2_400);
        assert!(store.search_bytes().unwrap() > 2_400 * dim as u64 * 2);

        // A search held up (here by a writer's lock on the table) gives way at its timeout,
        // as an unavailable store (the server's 503), and the next one runs.
        let locker = Store::open_at(&loc).unwrap();
        {
            let Db::Postgres(pgc) = &locker.db else {
                unreachable!()
            };
            let mut c = pgc.borrow_mut().unwrap();
            c.batch_execute(&format!(
                "BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE"
            ))
            .unwrap();
            let quick = SearchSettings {
                timeout: std::time::Duration::from_millis(300),
                ..settings
            };
            let t0 = std::time::Instant::now();
            let err = store.nearest("en", &probe, 5, quick).unwrap_err();
            assert!(err.is_unavailable(), "{err}");
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(3),
                "{:?}",
                t0.elapsed()
            );
            c.batch_execute("ROLLBACK").unwrap();
        }
        assert_eq!(store.nearest("en", &probe, 5, settings).unwrap().len(), 5);

        // A model of another size: the table is made again for it.
        let mut s2 = Store::open_at(&loc).unwrap();
        let err = s2.enable_search(dim + 1, |_| {}).unwrap_err().to_string();
        assert!(
            err.contains("has a vector of 24 values, the model gives 25"),
            "{err}"
        );
    }

    #[test]
    fn the_search_is_refused_clearly_without_pgvector_or_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite = Store::open(Some(dir.path())).unwrap();
        let err = sqlite.enable_search(4, |_| {}).unwrap_err().to_string();
        assert!(err.contains("needs a PostgreSQL store"), "{err}");
        let pg = Cluster::start().expect("Debian's PostgreSQL");
        let mut plain = Store::open_at(&Location::Postgres(pg.url())).unwrap();
        let available: bool = {
            let Db::Postgres(c) = &plain.db else {
                unreachable!()
            };
            c.borrow_mut()
                .unwrap()
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')",
                    &[],
                )
                .unwrap()
                .get(0)
        };
        if available {
            println!("skipped the no-pgvector half: this machine's PostgreSQL has pgvector");
            return;
        }
        let err = plain.enable_search(4, |_| {}).unwrap_err().to_string();
        assert!(err.contains("no pgvector extension"), "{err}");
        // Nothing was made: writes go on as before.
        assert!(!plain.search_on().unwrap());
        plain
            .apply(&[content("a", Some("en"), vec![1.0, 0.0, 0.0, 0.0])], &[])
            .unwrap();
    }
}

//! The HNSW graphs of the search table: one partial index per language big enough to need
//! one (`WHERE language = '…'`), so a topic's search walks a graph of its own language's
//! contents only. A graph over every language, filtered to one while it is walked, found
//! fewer of the exact neighbours for the same work and was slower (README, "PostgreSQL does
//! the search"). A language under [`INDEXED_FROM`] rows has no graph: its search scans its
//! rows exactly, which costs about as much as walking a graph at that size.

use super::TABLE;
use crate::store::Result;

/// Rows from which a language gets an HNSW graph of its own; a smaller one is scanned
/// exactly (about 1.2 ms per 1,000 MiniLM-size rows on a 2-core EPYC).
pub const INDEXED_FROM: usize = 5_000;

/// Every graph's name starts with this (and [`super::SearchPlan::uses_hnsw`] looks for it).
pub(super) const PREFIX: &str = "content_search_hnsw";

/// The index name of `language`'s graph: the prefix and the language's bytes in hex (any
/// language string gives a distinct, plain identifier), or `None` when that would pass
/// PostgreSQL's 63-byte limit on names.
pub(super) fn index_name(language: &str) -> Option<String> {
    let name = format!("{PREFIX}_{}", hex::encode(language.as_bytes()));
    (name.len() <= 63).then_some(name)
}

/// The language a graph's index name was made from.
fn language_of(name: &str) -> Option<String> {
    let hex = name.strip_prefix(PREFIX)?.strip_prefix('_')?;
    String::from_utf8(hex::decode(hex).ok()?).ok()
}

/// `s` as an SQL string literal (standard-conforming: only `'` is doubled).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Memory the HNSW build may use, per row of `dim` values: the half-precision vector and its
/// neighbour lists (pgvector keeps the graph in `maintenance_work_mem` while it fits, and
/// builds several times slower once it does not).
pub(super) fn build_memory(rows: usize, dim: usize) -> u64 {
    const MIN: u64 = 64 << 20;
    (rows as u64 * (2 * dim as u64 + 1024)).clamp(MIN, MAX_BUILD_MEMORY)
}

/// The most one graph's build asks for (about 2.7 million MiniLM-size rows).
const MAX_BUILD_MEMORY: u64 = 4 << 30;

/// What [`ensure`] found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graphs {
    /// Languages whose graph was built now.
    pub built: Vec<String>,
    /// Languages with a graph (built now or before), sorted.
    pub indexed: Vec<String>,
    /// Languages without one (fewer than the threshold's rows): scanned exactly.
    pub scanned: Vec<String>,
}

/// Builds the graph of every language of at least `indexed_from` rows that has none, in the
/// caller's transaction (which holds the search table's advisory lock), and drops the one
/// graph over all languages that earlier releases built. Refreshes the planner's statistics
/// when anything changed or `filled` rows were written.
pub(super) fn ensure(
    tx: &mut postgres::Transaction<'_>,
    place: &str,
    dim: usize,
    indexed_from: usize,
    filled: usize,
) -> Result<Graphs> {
    let mut changed = filled > 0;
    // The graph over all languages (lecr 0.1 before per-language graphs): each search walked
    // it filtered to its language.
    let global: bool = tx
        .query_one(&format!("SELECT to_regclass('{PREFIX}') IS NOT NULL"), &[])?
        .get(0);
    if global {
        tracing::info!(
            "{place}: the search's graph over all languages is replaced by one per language"
        );
        tx.batch_execute(&format!("DROP INDEX {PREFIX}"))?;
        changed = true;
    }
    let have: Vec<String> = tx
        .query(
            "SELECT indexname FROM pg_indexes WHERE tablename = $1 AND indexname LIKE $2",
            &[&TABLE, &format!("{PREFIX}\\_%")],
        )?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<std::result::Result<_, _>>()?;
    let mut graphs = Graphs {
        indexed: have.iter().filter_map(|n| language_of(n)).collect(),
        ..Default::default()
    };
    let sizes = tx.query(
        &format!("SELECT language, COUNT(*) FROM {TABLE} GROUP BY language ORDER BY language"),
        &[],
    )?;
    for r in &sizes {
        let language: String = r.try_get(0)?;
        let rows = r.try_get::<_, i64>(1)? as usize;
        if graphs.indexed.contains(&language) {
            continue;
        }
        let name = index_name(&language).filter(|_| rows >= indexed_from);
        let Some(name) = name else {
            if rows >= indexed_from {
                tracing::warn!(
                    "{place}: language {language:?} is too long a name for an index; its \
                     {rows} contents are searched exactly"
                );
            }
            graphs.scanned.push(language);
            continue;
        };
        // Memory for the build, sized so the graph stays in memory (the server's parallel
        // maintenance workers share it).
        let memory = build_memory(rows, dim);
        if memory == MAX_BUILD_MEMORY {
            tracing::warn!(
                "{place}: the HNSW graph of {language}'s {rows} contents may not fit in the \
                 {} MiB the build asks for; it goes on more slowly on disk",
                memory >> 20
            );
        }
        tx.batch_execute(&format!(
            "SET LOCAL maintenance_work_mem = '{}MB';
             SET LOCAL standard_conforming_strings = on;
             CREATE INDEX {name} ON {TABLE} USING hnsw (embedding halfvec_ip_ops)
                 WHERE language = {}",
            memory >> 20,
            literal(&language)
        ))?;
        graphs.built.push(language.clone());
        graphs.indexed.push(language);
        changed = true;
    }
    graphs.indexed.sort();
    let language_index: bool = tx
        .query_one("SELECT to_regclass('content_search_language') IS NULL", &[])?
        .get(0);
    if language_index {
        // The exact scans of small languages read their rows through it.
        tx.batch_execute(&format!(
            "CREATE INDEX content_search_language ON {TABLE} (language)"
        ))?;
        changed = true;
    }
    if changed {
        // Without the table's statistics the planner guesses a language holds a handful of
        // rows and scans it exactly, until autovacuum's first ANALYZE switches the same query
        // to the graph: the plan (and its recall) would change under a running server.
        tx.batch_execute(&format!("ANALYZE {TABLE}"))?;
    }
    Ok(graphs)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn every_language_gets_a_distinct_plain_index_name_that_reads_back() {
        for l in ["en", "es-419", "zh-Hans", "x'); DROP TABLE t; --", "ü"] {
            let n = index_name(l).unwrap();
            assert!(
                n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{n}"
            );
            assert_eq!(language_of(&n).as_deref(), Some(l));
        }
        assert_ne!(index_name("en"), index_name("EN"));
        assert_eq!(index_name(&"a".repeat(22)), None, "past 63 bytes");
        assert_eq!(
            language_of(PREFIX),
            None,
            "the old graph over all languages"
        );
        assert_eq!(literal("x'y"), "'x''y'");
    }
}

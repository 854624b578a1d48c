//! Tests of the search table, its per-language HNSW graphs and the search (they start a
//! throwaway PostgreSQL cluster with pgvector).

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
    let pg = Cluster::start_pgvector()
        .expect("a PostgreSQL with pgvector (scripts/fetch-pgvector.sh; scripts/test.sh runs it)");
    let loc = Location::Postgres(pg.url());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let dim = 24;
    let mut store = Store::open_at(&loc).unwrap();
    // Written before the table exists: the first enable fills them in.
    let mut all = Vec::new();
    for i in 0..3_000 {
        let lang = match i % 5 {
            0 => None,
            1 => Some("fr"),
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
    // 1,800 English contents get a graph of their own; 600 French ones are scanned exactly.
    let from = 1_000;
    let setup = store.enable_search(dim, from, |n| seen = n).unwrap();
    assert_eq!(setup.filled, 2_400, "every content with a language");
    assert_eq!(seen, 2_400);
    let graphs = |built: &[&str], indexed: &[&str], scanned: &[&str]| Graphs {
        built: built.iter().map(|s| s.to_string()).collect(),
        indexed: indexed.iter().map(|s| s.to_string()).collect(),
        scanned: scanned.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(setup.graphs, graphs(&["en"], &["en"], &["fr"]));
    assert_eq!(setup.rows, 2_400);
    // The pinned build of scripts/fetch-pgvector.sh (or another 0.8 release).
    let engine = store.search_engine().unwrap();
    assert!(engine.contains(", pgvector 0.8."), "{engine}");
    // Again (another replica starting): nothing to do.
    let again = Store::open_at(&loc)
        .unwrap()
        .enable_search(dim, from, |_| {})
        .unwrap();
    assert_eq!(
        (again.filled, again.graphs, again.rows),
        (0, graphs(&[], &["en"], &["fr"]), 2_400)
    );

    let settings = SearchSettings::default();
    // The served query's plan where a sort costs more than anything (at this toy size an
    // exact scan is cheaper, and the planner rightly picks it): a language's graph is used
    // when it has one, found with the language bound as a parameter.
    let probe_plan = |s: &Store, lang: &str| {
        let Db::Postgres(pgc) = &s.db else {
            unreachable!()
        };
        let mut c = pgc.borrow_mut().unwrap();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&settings.sql()).unwrap();
        tx.batch_execute("SET LOCAL enable_sort = off").unwrap();
        let rows = tx
            .query(
                &format!("EXPLAIN {NEAREST}"),
                &[&lang, &to_half(&vec![0.1; dim]), &50i64],
            )
            .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        SearchPlan(plan.join("\n"))
    };
    assert!(
        probe_plan(&store, "en").uses_hnsw(),
        "{:?}",
        probe_plan(&store, "en")
    );
    assert!(
        !probe_plan(&store, "fr").uses_hnsw(),
        "{:?}",
        probe_plan(&store, "fr")
    );
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

    // French grows past the threshold: the next start builds its graph. The graph over all
    // languages of earlier releases is dropped.
    let more: Vec<StoredContent> = (0..500)
        .map(|i| {
            let v = crate::bench::catalog::random_unit(&mut rng, dim);
            content(&format!("f{i}"), Some("fr"), v)
        })
        .collect();
    store.apply(&more, &[]).unwrap();
    {
        let Db::Postgres(pgc) = &store.db else {
            unreachable!()
        };
        pgc.borrow_mut()
            .unwrap()
            .batch_execute(&format!(
                "CREATE INDEX content_search_hnsw ON {TABLE} USING hnsw (embedding halfvec_ip_ops)"
            ))
            .unwrap();
    }
    let grown = Store::open_at(&loc)
        .unwrap()
        .enable_search(dim, from, |_| {})
        .unwrap();
    assert_eq!(grown.graphs, graphs(&["fr"], &["en", "fr"], &[]));
    assert!(
        probe_plan(&store, "fr").uses_hnsw(),
        "{:?}",
        probe_plan(&store, "fr")
    );
    let names: Vec<String> = {
        let Db::Postgres(pgc) = &store.db else {
            unreachable!()
        };
        pgc.borrow_mut()
            .unwrap()
            .query(
                "SELECT indexname FROM pg_indexes WHERE tablename = $1",
                &[&TABLE],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert!(
        !names.iter().any(|n| n == "content_search_hnsw"),
        "{names:?}"
    );

    // A model of another size: the table is made again for it.
    let mut s2 = Store::open_at(&loc).unwrap();
    let err = s2
        .enable_search(dim + 1, from, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has a vector of 24 values, the model gives 25"),
        "{err}"
    );
}

#[test]
fn the_search_is_refused_clearly_without_pgvector_or_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = Store::open(Some(dir.path())).unwrap();
    let err = sqlite.enable_search(4, 1, |_| {}).unwrap_err().to_string();
    assert!(err.contains("needs a PostgreSQL store"), "{err}");
    assert_eq!(sqlite.search_engine().unwrap(), "");
    let pg = Cluster::start().expect("Debian's PostgreSQL");
    let mut plain = Store::open_at(&Location::Postgres(pg.url())).unwrap();
    let engine = plain.search_engine().unwrap();
    assert!(engine.starts_with("PostgreSQL 1"), "{engine}");
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
    assert!(engine.ends_with("pgvector not installed"), "{engine}");
    let err = plain.enable_search(4, 1, |_| {}).unwrap_err().to_string();
    assert!(err.contains("no pgvector extension"), "{err}");
    // Nothing was made: writes go on as before.
    assert!(!plain.search_on().unwrap());
    plain
        .apply(&[content("a", Some("en"), vec![1.0, 0.0, 0.0, 0.0])], &[])
        .unwrap();
}

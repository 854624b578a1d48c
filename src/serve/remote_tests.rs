//! Tests of the PostgreSQL index mode with the lexical retriever against the in-memory index
//! (they start a throwaway PostgreSQL cluster with pgvector).

use crate::serve::index::{Column, Index, Parent};
use crate::store::cluster::Cluster;
use crate::store::{ContentMeta, Location, Store, StoredContent};
use rand::{Rng, SeedableRng};
use std::sync::RwLock;

fn refit(ix: Index) -> Index {
    let lock = RwLock::new(ix);
    crate::serve::lexical::refit_stale(&lock, false);
    lock.into_inner().unwrap()
}

/// `n` random unit vectors of `d` values, row-major.
fn unit_rows(rng: &mut impl Rng, n: usize, d: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|_| crate::bench::catalog::random_unit(rng, d))
        .collect()
}

#[test]
fn the_postgres_index_with_the_lexical_retriever_ranks_as_the_memory_index_to_the_bit() {
    let pg = Cluster::start_pgvector()
        .expect("a PostgreSQL with pgvector (scripts/fetch-pgvector.sh; scripts/test.sh runs it)");
    let loc = Location::Postgres(pg.url());
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Short random vectors and titles of three of 300 invented words: the vectors' and the
    // lexical side's bests are mostly different contents, so the ensemble's top lies deep in
    // either list and the lexical list must be deepened past its first depth to be certain.
    let (n, d, m) = (3_000, 12, 24);
    let words: Vec<String> = (0..300)
        .map(|i| {
            let c = |k: usize| (b'a' + ((i * 7 + k * 13) % 26) as u8) as char;
            format!("{}{}{}{}", c(0), c(i % 5), c(2 + i % 3), c(i / 26))
        })
        .collect();
    let title = |rng: &mut rand::rngs::StdRng, k: usize| -> String {
        (0..k)
            .map(|_| words[rng.gen_range(0..words.len())].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let c = unit_rows(&mut rng, n, d);
    let contents: Vec<StoredContent> = (0..n)
        .map(|j| {
            let t = title(&mut rng, 3);
            StoredContent {
                meta: ContentMeta {
                    id: format!("c{j}"),
                    channel_id: "ch".into(),
                    title: t.clone(),
                    description: String::new(),
                    kind: "video".into(),
                    language: Some("en".into()),
                    short_text: String::new(),
                },
                text: t,
                vector: c[j * d..(j + 1) * d].to_vec(),
            }
        })
        .collect();
    let mut store = Store::open_at(&loc).unwrap();
    store.apply(&contents, &[]).unwrap();
    // Exact scans (no graph below 10,000): the store's nearest are the exact ones, so the
    // two modes must agree to the bit.
    store.enable_search(d, 10_000, |_| {}).unwrap();

    let mut memory = Index::new(d).with_lexical(1);
    for s in &contents {
        memory.upsert(s.meta.clone(), &s.vector).unwrap();
    }
    let memory = refit(memory);
    let uncertain = prometheus::IntCounter::new("u", "u").unwrap();
    let settings = crate::store::search::SearchSettings::default();
    let search = super::RemoteSearch::open(&loc, 2, settings, uncertain.clone()).unwrap();
    let mut remote = Index::new(d).with_remote(search).with_lexical(1);
    for s in &contents {
        remote.upsert(s.meta.clone(), &s.vector).unwrap();
    }
    let remote = refit(remote);
    assert!(remote.lexical_bytes() > 0);
    assert_eq!(remote.memory().vectors, 0, "the store holds the vectors");

    let t = unit_rows(&mut rng, m, d);
    let texts: Vec<String> = (0..m).map(|_| title(&mut rng, 2)).collect();
    let topics: Vec<&str> = texts.iter().map(String::as_str).collect();
    let hits = |ix: &Index, r: usize| -> Vec<Vec<(String, u32)>> {
        ix.search("en", &t, Some(&topics), r)
            .unwrap()
            .into_iter()
            .map(|h| {
                h.into_iter()
                    .map(|h| (h.content, h.similarity.to_bits()))
                    .collect()
            })
            .collect()
    };
    for r in [1, 10, 40] {
        assert_eq!(hits(&remote, r), hits(&memory, r), "top {r}");
    }

    let cols = [Column::Vectors, Column::Lexical];
    let parents: Vec<Option<Parent>> = (0..m)
        .map(|i| {
            (i % 3 != 0).then(|| Parent {
                vector: &t[((i + 1) % m) * d..((i + 1) % m + 1) * d],
                lexical: Some(topics[(i + 1) % m]),
            })
        })
        .collect();
    let candidates = |ix: &Index| {
        ix.candidates("en", &t, Some(&topics), &parents, &cols, 5)
            .unwrap()
            .into_iter()
            .map(|c| {
                let rows: Vec<_> = c
                    .topic
                    .candidates
                    .iter()
                    .zip(&c.ids)
                    .map(|(x, id)| {
                        let bits = |v: &[f32]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
                        (
                            id.clone(),
                            bits(&x.sims),
                            x.ranks.clone(),
                            bits(&x.parent_sims),
                            x.proposed_by,
                        )
                    })
                    .collect();
                let bits = |v: &[f32]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
                (rows, bits(&c.topic.best), bits(&c.topic.kth))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(candidates(&remote), candidates(&memory));
    assert_eq!(uncertain.get(), 0, "every ranking certain within the cap");
}

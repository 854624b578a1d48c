//! Tests of the live content index (`index.rs`).

use super::*;
use crate::kernels::scores::PackedRows;

fn meta(id: &str, lang: Option<&str>) -> ContentMeta {
    ContentMeta {
        id: id.into(),
        channel_id: "c".into(),
        title: id.into(),
        description: String::new(),
        kind: "video".into(),
        language: lang.map(str::to_string),
        short_text: String::new(),
    }
}

#[test]
fn upsert_replace_remove_keep_rows_consistent() {
    let mut ix = Index::new(2);
    ix.upsert(meta("a", Some("en")), &[1.0, 0.0]).unwrap();
    ix.upsert(meta("b", Some("en")), &[0.0, 1.0]).unwrap();
    ix.upsert(meta("c", Some("en")), &[0.6, 0.8]).unwrap();
    ix.upsert(meta("x", None), &[1.0, 0.0]).unwrap();
    assert_eq!(ix.sizes(), vec![("en".to_string(), 3)]);
    assert_eq!(ix.without_language(), 1);
    let hits = &ix.search("en", &[1.0, 0.0], None, 3).unwrap()[0];
    let ids: Vec<&str> = hits.iter().map(|h| h.content.as_str()).collect();
    assert_eq!(ids, ["a", "c", "b"]);
    // Removing the first row moves the last into its place; search still finds the rest.
    assert!(ix.holds(&meta("a", Some("en")), &[1.0, 0.0]));
    assert!(!ix.holds(&meta("a", Some("en")), &[0.0, 1.0]));
    assert!(!ix.holds(&meta("a", Some("es")), &[1.0, 0.0]));
    assert!(ix.holds(&meta("x", None), &[0.0, 0.0]));
    assert!(ix.remove("a").unwrap());
    assert!(!ix.remove("a").unwrap());
    assert!(!ix.holds(&meta("a", Some("en")), &[1.0, 0.0]));
    let hits = &ix.search("en", &[1.0, 0.0], None, 3).unwrap()[0];
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].content, "c");
    assert!((hits[0].similarity - 0.6).abs() < 1e-6);
    // Replacing moves a content to another language; the language-less one gets one.
    ix.upsert(meta("c", Some("es")), &[0.6, 0.8]).unwrap();
    ix.upsert(meta("x", Some("es")), &[0.0, 1.0]).unwrap();
    assert_eq!(
        ix.sizes(),
        vec![("en".to_string(), 1), ("es".to_string(), 2)]
    );
    assert_eq!(ix.without_language(), 0);
    let hits = &ix.search("es", &[0.0, 1.0, 1.0, 0.0], None, 1).unwrap();
    assert_eq!(hits[0][0].content, "x");
    assert_eq!(hits[1][0].content, "c");
    assert!(ix.search("fr", &[1.0, 0.0], None, 5).unwrap()[0].is_empty());
}

/// Contents with texts (their titles) and 2-d vectors, lexical retrieval on.
fn lexical_index(items: &[(&str, &str, [f32; 2])]) -> Index {
    let mut ix = Index::new(2).with_lexical(1);
    for (id, title, v) in items {
        let mut m = meta(id, Some("en"));
        m.title = title.to_string();
        ix.upsert(m, v).unwrap();
    }
    ix
}

fn refit(ix: Index) -> Index {
    let lock = RwLock::new(ix);
    crate::serve::lexical::refit_stale(&lock, false);
    lock.into_inner().unwrap()
}

/// What `predict` computes for the same contents: (vector + lexical) × ½.
fn batch_ensemble(texts: &[&str], vectors: &[[f32; 2]], topic: &str, tv: [f32; 2]) -> Vec<f32> {
    let full: Vec<String> = texts
        .iter()
        .map(|t| crate::text::content_text_of_short(t, "", ""))
        .collect();
    let lex = crate::select::lexical::LexicalIndex::fit(&full).scores(topic);
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let v = PackedRows::from_rows(&flat, 2).scores(&tv, 1);
    v.iter().zip(&lex).map(|(a, b)| (a + b) * 0.5).collect()
}

#[test]
fn the_lexical_ensemble_equals_the_batch_and_follows_writes_after_a_refit() {
    let items = [
        ("a", "adding fractions", [0.6, 0.8]),
        ("b", "volcano eruptions", [1.0, 0.0]),
        ("c", "fractional parts of shapes", [0.0, 1.0]),
        ("d", "eruptions of ideas", [0.8, 0.6]),
    ];
    let ix = lexical_index(&items);
    assert_eq!(ix.stale_languages(), vec!["en".to_string()]);
    let ix = refit(ix);
    assert!(ix.stale_languages().is_empty());
    assert!(ix.lexical_bytes() > 0);
    let topic = "fractions # arithmetic # ";
    let tv = [0.6f32, 0.8];
    let texts: Vec<&str> = items.iter().map(|x| x.1).collect();
    let vecs: Vec<[f32; 2]> = items.iter().map(|x| x.2).collect();
    let want = batch_ensemble(&texts, &vecs, topic, tv);
    let hits = &ix.search("en", &tv, Some(&[topic]), 4).unwrap()[0];
    assert_eq!(hits[0].content, "a");
    for h in hits {
        let k = items.iter().position(|x| x.0 == h.content).unwrap();
        assert_eq!(h.similarity.to_bits(), want[k].to_bits(), "{}", h.content);
    }
    // Without lexical texts the same index ranks by the vectors alone.
    let plain = &ix.search("en", &tv, None, 4).unwrap()[0];
    assert_eq!(plain[0].similarity, 1.0);
    // A removal moves the last row into the hole: every other content keeps its score.
    let mut ix = ix;
    ix.remove("a").unwrap();
    assert_eq!(ix.stale_languages(), vec!["en".to_string()]);
    let stale = &ix.search("en", &tv, Some(&[topic]), 4).unwrap()[0];
    for h in stale {
        let k = items.iter().position(|x| x.0 == h.content).unwrap();
        assert_eq!(h.similarity.to_bits(), want[k].to_bits(), "{}", h.content);
    }
    // A new content scores by its vector alone until the refit; then all equal a fresh fit.
    let mut e = meta("e", Some("en"));
    e.title = "fractions".into();
    ix.upsert(e, &[0.6, 0.8]).unwrap();
    let before = &ix.search("en", &tv, Some(&[topic]), 4).unwrap()[0];
    let e_before = before.iter().find(|h| h.content == "e").unwrap().similarity;
    assert_eq!(e_before, 0.5);
    let ix = refit(ix);
    let items2 = [items[1], items[2], items[3], ("e", "fractions", [0.6, 0.8])];
    let texts: Vec<&str> = items2.iter().map(|x| x.1).collect();
    let vecs: Vec<[f32; 2]> = items2.iter().map(|x| x.2).collect();
    let want = batch_ensemble(&texts, &vecs, topic, tv);
    let after = &ix.search("en", &tv, Some(&[topic]), 4).unwrap()[0];
    assert_eq!(after[0].content, "e");
    assert!(after[0].similarity > e_before);
    for h in after {
        let k = items2.iter().position(|x| x.0 == h.content).unwrap();
        assert_eq!(h.similarity.to_bits(), want[k].to_bits(), "{}", h.content);
    }
}

#[test]
fn candidates_carry_every_column_and_the_parent_similarities() {
    let ix = refit(lexical_index(&[
        ("a", "adding fractions", [0.6, 0.8]),
        ("b", "volcano eruptions", [1.0, 0.0]),
        ("c", "fractional parts", [0.0, 1.0]),
    ]));
    let topic = "fractions # ";
    let parent = "volcano # ";
    let cols = [Column::Vectors, Column::Lexical];
    let p = Parent {
        vector: &[1.0, 0.0],
        lexical: Some(parent),
    };
    let out = ix
        .candidates("en", &[0.0, 1.0], Some(&[topic]), &[Some(p)], &cols, 1)
        .unwrap();
    let c = &out[0];
    // The top 1 of each column and of the mean: c (vectors), a (lexical).
    assert!(c.ids.contains(&"c".to_string()) && c.ids.contains(&"a".to_string()));
    let lex = ix.langs["en"].lexical.as_ref().unwrap().scores(topic);
    let plex = ix.langs["en"].lexical.as_ref().unwrap().scores(parent);
    for (cand, id) in c.topic.candidates.iter().zip(&c.ids) {
        let r = ix.row[id];
        assert_eq!(cand.content as usize, r);
        assert_eq!(cand.sims.len(), 3);
        assert_eq!(cand.sims[1], lex[r]);
        assert_eq!(cand.sims[2], (cand.sims[0] + cand.sims[1]) * 0.5);
        assert_eq!(cand.parent_sims[0], ix.similarity(id, &[1.0, 0.0]).unwrap());
        assert_eq!(cand.parent_sims[1], plex[r]);
    }
    assert_eq!(c.topic.best.len(), 3);
    // No parent: NaN parent similarities; an unknown language: no candidates.
    let out = ix
        .candidates("en", &[0.0, 1.0], Some(&[topic]), &[None], &cols, 1)
        .unwrap();
    assert!(out[0].topic.candidates[0].parent_sims[0].is_nan());
    assert!(ix
        .candidates("fr", &[0.0, 1.0], Some(&[topic]), &[None], &cols, 1)
        .unwrap()[0]
        .ids
        .is_empty());
}

#[test]
fn memory_counts_what_comes_and_goes() {
    let mut ix = Index::new(2);
    let empty = ix.memory();
    assert_eq!((empty.vectors, empty.lexical, ix.heap), (0, 0, 0));
    assert_eq!(empty.metadata_on_disk, 0);
    ix.upsert(meta("a", Some("en")), &[1.0, 0.0]).unwrap();
    ix.upsert(meta("b", None), &[0.0, 1.0]).unwrap();
    let m = ix.memory();
    // In memory: the recommendable content's id as the row table's key and in its row order.
    assert_eq!(ix.heap, 2 * "a".len());
    assert!(m.metadata > ix.heap);
    // On disk: each content's three texts and their lengths.
    let texts = |c: &ContentMeta| 12 + c.title.len() + c.description.len() + c.short_text.len();
    let on_disk = texts(&meta("a", Some("en"))) + texts(&meta("b", None));
    assert_eq!(m.metadata_on_disk, on_disk as u64);
    assert_eq!(ix.get("b").unwrap(), Some(meta("b", None)));
    // A long text goes to disk, not to memory.
    let mut long = meta("c", Some("en"));
    long.description = "d".repeat(20_000);
    ix.upsert(long.clone(), &[0.6, 0.8]).unwrap();
    // (Written through a buffer of at most a MiB, which a bulk load's end flushes.)
    assert!(ix.memory().metadata >= m.metadata + 20_000);
    ix.shrink_to_fit();
    let after = ix.memory();
    assert!(after.metadata_on_disk >= m.metadata_on_disk + 20_000);
    assert!(
        after.metadata < m.metadata + 1_000,
        "{} -> {}",
        m.metadata,
        after.metadata
    );
    assert_eq!(ix.get("c").unwrap(), Some(long));
    // int8 values (two dimensions stored as four), and a scale, two norms and an offset per
    // row (room for 16 at first); the exact f32 values of the two recommendable contents are
    // on disk.
    assert_eq!(m.vectors, 2 * 16 * 4 + 4 * 16 * 4);
    assert_eq!(after.exact_on_disk, 2 * 2 * 4);
    // Replacing a content counts it once; removing everything leaves no string bytes.
    ix.upsert(meta("a", Some("es")), &[1.0, 0.0]).unwrap();
    assert_eq!(ix.heap, 2 * ("a".len() + "c".len()));
    for id in ["a", "b", "c"] {
        assert!(ix.remove(id).unwrap());
    }
    assert_eq!(ix.heap, 0);
    assert_eq!((ix.len(), ix.without_language()), (0, 0));
    assert_eq!(ix.get("a").unwrap(), None);
}

#[test]
fn a_write_after_a_full_matrix_grows_it_by_an_eighth_not_double() {
    let mut ix = Index::new(4);
    for i in 0..3200 {
        ix.upsert(meta(&format!("c{i}"), Some("en")), &[1.0, 0.0, 0.0, 0.0])
            .unwrap();
    }
    ix.shrink_to_fit();
    let full = ix.memory().vectors;
    assert_eq!(full, 3200 * (4 + 16), "3,200 rows: 200 blocks, no spare");
    assert_eq!(ix.memory().exact_on_disk, 3200 * 4 * 4);
    ix.upsert(meta("one more", Some("en")), &[0.0, 1.0, 0.0, 0.0])
        .unwrap();
    let grown = ix.memory().vectors;
    assert!(
        grown > full && grown <= full + full / 8 + 2 * 16 * 4,
        "{full} -> {grown}"
    );
}

/// Random unit vectors of `d` values (a fixed seed), row-major.
fn unit_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    for r in v.chunks_mut(d) {
        let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        r.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[test]
fn int8_ranking_with_exact_rescoring_equals_f32_ranking_to_the_bit() {
    // Short vectors quantize worst; many contents crowd the top with near-equal scores.
    let (n, d, m) = (4000, 12, 6);
    let words = [
        "ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay",
    ];
    let c = unit_rows(n, d, 1);
    let mut t = unit_rows(m, d, 2);
    // One topic equal to a content: a tie between its exact and every near score.
    t[..d].copy_from_slice(&c[7 * d..8 * d]);
    let titles: Vec<String> = (0..n)
        .map(|j| format!("{} {}", words[j % 10], words[(j / 10) % 10]))
        .collect();
    let mut ix = Index::new(d).with_lexical(1);
    for j in 0..n {
        let mut mt = meta(&format!("c{j}"), Some("en"));
        mt.title = titles[j].clone();
        ix.upsert(mt, &c[j * d..(j + 1) * d]).unwrap();
    }
    let ix = refit(ix);
    let exact = PackedRows::from_rows(&c, d).scores(&t, m);
    let texts: Vec<String> = titles
        .iter()
        .map(|x| crate::text::content_text_of_short(x, "", ""))
        .collect();
    let lex = crate::select::lexical::LexicalIndex::fit(&texts);
    let topics: Vec<&str> = (0..m).map(|i| words[i % 10]).collect();
    let (r, k) = (40, 15);
    // Vectors alone, then the ensemble with the lexical similarity.
    for lexical in [None, Some(&topics[..])] {
        let hits = ix.search("en", &t, lexical, r).unwrap();
        for i in 0..m {
            let row: Vec<f32> = match lexical {
                None => exact[i * n..(i + 1) * n].to_vec(),
                Some(ts) => exact[i * n..(i + 1) * n]
                    .iter()
                    .zip(lex.scores(ts[i]))
                    .map(|(a, b)| (a * 1.0 + b) * 0.5)
                    .collect(),
            };
            let want: Vec<(String, u32)> = threshold::top_r(&row, r)
                .into_iter()
                .map(|(j, s)| (format!("c{j}"), s.to_bits()))
                .collect();
            let got: Vec<(String, u32)> = hits[i]
                .iter()
                .map(|h| (h.content.clone(), h.similarity.to_bits()))
                .collect();
            assert_eq!(got, want, "topic {i}, lexical {}", lexical.is_some());
        }
    }
    // The second stage's candidates, with a parent for each topic.
    let cols = [Column::Vectors, Column::Lexical];
    let parents: Vec<Option<Parent>> = (0..m)
        .map(|i| {
            Some(Parent {
                vector: &t[((i + 1) % m) * d..((i + 1) % m + 1) * d],
                lexical: Some(topics[(i + 1) % m]),
            })
        })
        .collect();
    let before = ix.rescored();
    let got = ix
        .candidates("en", &t, Some(&topics), &parents, &cols, k)
        .unwrap();
    let read = ix.rescored() - before;
    for i in 0..m {
        let v = exact[i * n..(i + 1) * n].to_vec();
        let l = lex.scores(topics[i]);
        let rows = [v.clone(), l.clone(), mean(&[v, l])];
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let want = from_rows(0, &refs, None, 2, k);
        assert_eq!(got[i].topic.best, want.best, "topic {i}");
        assert_eq!(got[i].topic.kth, want.kth, "topic {i}");
        let strip =
            |c: &crate::rerank::candidates::Candidate| (c.content, c.sims.clone(), c.ranks.clone());
        let g: Vec<_> = got[i].topic.candidates.iter().map(strip).collect();
        let w: Vec<_> = want.candidates.iter().map(strip).collect();
        assert_eq!(g, w, "topic {i}");
        let pv = parents[i].as_ref().unwrap().vector;
        for cand in &got[i].topic.candidates {
            let j = cand.content as usize;
            let want_p = PackedRows::from_rows(&c[j * d..(j + 1) * d], d).scores(pv, 1)[0];
            assert_eq!(cand.parent_sims[0].to_bits(), want_p.to_bits());
        }
    }
    // Exact rows are read only near each topic's top, not for the whole language.
    assert!(
        read < (m * n / 2) as u64,
        "{read} exact rows read for {m} topics of {n}"
    );
}

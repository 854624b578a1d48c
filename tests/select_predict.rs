//! Selection and scoring end to end on generated data: ensembles, saved features, the lexical
//! baseline, and `lecr predict` output checked by a strict reader.

mod common;
use lecr::data::synth::{generate, SynthConfig};
use lecr::data::{load_dataset, Dataset};
use lecr::model::Embeddings;
use lecr::select::similarity::{EmbeddingSim, Ensemble};
use lecr::select::{evaluate, rank, GroupBy};
use std::collections::{HashMap, HashSet};

fn corpus() -> (tempfile::TempDir, Dataset) {
    let d = tempfile::tempdir().unwrap();
    generate(
        &SynthConfig {
            topics: 400,
            contents: 800,
            seed: 5,
            ..Default::default()
        },
        d.path(),
    )
    .unwrap();
    let ds = load_dataset(d.path()).unwrap();
    (d, ds)
}

/// Deterministic pseudo-random unit vectors.
fn random_embeddings(n: usize, dim: usize, seed: u64) -> Embeddings {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut data = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let row: Vec<f32> = (0..dim)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        data.extend(row.iter().map(|v| v / norm));
    }
    Embeddings { dim, data }
}

fn emb_sim(ds: &Dataset, seed: u64) -> EmbeddingSim {
    EmbeddingSim {
        label: format!("random{seed}"),
        topics: random_embeddings(ds.topics.len(), 24, seed),
        topic_row: (0..ds.topics.len() as u32).collect(),
        contents: random_embeddings(ds.contents.len(), 24, seed + 1),
        content_row: (0..ds.contents.len() as u32).collect(),
    }
}

fn eval_topics(ds: &Dataset) -> Vec<usize> {
    let with: HashSet<usize> = ds.pairs().iter().map(|p| p.0).collect();
    (0..ds.topics.len()).filter(|t| with.contains(t)).collect()
}

#[test]
fn ensemble_of_a_model_with_itself_equals_the_model() {
    let (_d, ds) = corpus();
    let topics = eval_topics(&ds);
    let single = rank(&ds, &topics, &emb_sim(&ds, 1), 128).unwrap();
    let ens = Ensemble {
        members: vec![Box::new(emb_sim(&ds, 1)), Box::new(emb_sim(&ds, 1))],
    };
    let double = rank(&ds, &topics, &ens, 128).unwrap();
    assert_eq!(single.len(), double.len());
    for (a, b) in single.iter().zip(&double) {
        let ia: Vec<u32> = a.iter().map(|x| x.0).collect();
        let ib: Vec<u32> = b.iter().map(|x| x.0).collect();
        assert_eq!(ia, ib);
        for (x, y) in a.iter().zip(b) {
            assert!((x.1 - y.1).abs() < 1e-6);
        }
    }
    let r1 = evaluate(&ds, &topics, &single, 0.16, 10, GroupBy::Language);
    let r2 = evaluate(&ds, &topics, &double, 0.16, 10, GroupBy::Language);
    assert_eq!(r1.overall.f2, r2.overall.f2);
    // A different model changes the ranking: the ensemble is not a no-op.
    let mixed = Ensemble {
        members: vec![Box::new(emb_sim(&ds, 1)), Box::new(emb_sim(&ds, 7))],
    };
    assert_ne!(rank(&ds, &topics, &mixed, 128).unwrap(), single);
}

#[test]
fn ranking_stays_within_the_topic_language_and_blocks_do_not_change_results() {
    let (_d, ds) = corpus();
    let topics = eval_topics(&ds);
    let ranked = rank(&ds, &topics, &emb_sim(&ds, 3), 50).unwrap();
    for (&t, r) in topics.iter().zip(&ranked) {
        assert!(!r.is_empty());
        for w in r.windows(2) {
            assert!(w[0].1 >= w[1].1, "sorted best first");
        }
        for &(c, _) in r {
            assert_eq!(ds.contents[c as usize].language, ds.topics[t].language);
        }
    }
    // The same similarities brute-forced for one topic.
    let sim = emb_sim(&ds, 3);
    let t = topics[0];
    let lang = &ds.topics[t].language;
    let mut all: Vec<(u32, f32)> = (0..ds.contents.len())
        .filter(|&c| &ds.contents[c].language == lang)
        .map(|c| {
            let d: f32 = sim
                .topics
                .row(t)
                .iter()
                .zip(sim.contents.row(c))
                .map(|(a, b)| a * b)
                .sum();
            (c as u32, d)
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    let want: Vec<u32> = all.iter().take(50).map(|x| x.0).collect();
    let got: Vec<u32> = ranked[0].iter().map(|x| x.0).collect();
    assert_eq!(got, want);
    // One topic per block gives the same lists as the default blocks.
    let tiny = lecr::select::rank_blocked(&ds, &topics, &sim, 50, 1).unwrap();
    assert_eq!(tiny, ranked);
}

#[test]
fn perfect_similarity_scores_one_and_lexical_beats_random() {
    let (_d, ds) = corpus();
    let topics = eval_topics(&ds);
    // Oracle: a topic's embedding is the normalised sum of one-hot vectors of its contents.
    let n = ds.contents.len();
    let mut temb = vec![0f32; ds.topics.len() * n];
    for (t, c) in ds.pairs() {
        temb[t * n + c] = 1.0;
    }
    for row in temb.chunks_mut(n) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-9);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let mut cemb = vec![0f32; n * n];
    for c in 0..n {
        cemb[c * n + c] = 1.0;
    }
    let oracle = EmbeddingSim {
        label: "oracle".into(),
        topics: Embeddings { dim: n, data: temb },
        topic_row: (0..ds.topics.len() as u32).collect(),
        contents: Embeddings { dim: n, data: cemb },
        content_row: (0..n as u32).collect(),
    };
    let ranked = rank(&ds, &topics, &oracle, 128).unwrap();
    // All true contents tie at the top: margin 0 selects exactly them.
    let rep = evaluate(&ds, &topics, &ranked, 0.0, 10, GroupBy::Language);
    assert!(
        (rep.overall.f2 - 1.0).abs() < 1e-9,
        "oracle F2 {}",
        rep.overall.f2
    );
    assert_eq!(rep.overall.mrr, 1.0);

    let lex = lecr::pipeline::similarity(
        &ds,
        &[lecr::pipeline::Source::Lexical],
        &topics,
        &Default::default(),
    )
    .unwrap();
    let f_lex = evaluate(
        &ds,
        &topics,
        &rank(&ds, &topics, lex.as_ref(), 128).unwrap(),
        0.3,
        10,
        GroupBy::Language,
    )
    .overall
    .f2;
    let f_rand = evaluate(
        &ds,
        &topics,
        &rank(&ds, &topics, &emb_sim(&ds, 9), 128).unwrap(),
        0.3,
        10,
        GroupBy::Language,
    )
    .overall
    .f2;
    assert!(
        f_lex > 2.0 * f_rand && f_lex < 0.9,
        "lexical {f_lex} random {f_rand}"
    );
    let by_channel = evaluate(&ds, &topics, &ranked, 0.0, 10, GroupBy::Channel);
    let channels: HashSet<&str> = topics
        .iter()
        .map(|&t| ds.topics[t].channel.as_str())
        .collect();
    assert_eq!(by_channel.groups.len(), channels.len());
}

/// Saves `sim` in `lecr embed`'s format under `dir/features`.
fn write_features(ds: &Dataset, sim: &EmbeddingSim, dir: &std::path::Path) -> std::path::PathBuf {
    let feats = dir.join("features");
    let ids: Vec<String> = ds.topics.iter().map(|t| t.id.clone()).collect();
    let langs: Vec<String> = ds.topics.iter().map(|t| t.language.clone()).collect();
    lecr::features::write(&feats, "topics", &sim.topics, Some((&ids, &langs))).unwrap();
    let ids: Vec<String> = ds.contents.iter().map(|c| c.id.clone()).collect();
    let langs: Vec<String> = ds.contents.iter().map(|c| c.language.clone()).collect();
    lecr::features::write(&feats, "content", &sim.contents, Some((&ids, &langs))).unwrap();
    feats
}

#[test]
fn predict_writes_a_submission_a_strict_reader_accepts() {
    let (d, ds) = corpus();
    // Saved features through `lecr embed`'s format, then `lecr predict` reads them.
    let sim = emb_sim(&ds, 2);
    let feats = write_features(&ds, &sim, d.path());
    let out = d.path().join("submission.csv");
    let (data, f, o) = (
        d.path().to_str().unwrap(),
        feats.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    common::run_lecr(["predict", "--data", data, "--features", f, "--out", o]);
    // Strict reader: exact header, every requested topic once in order, known same-language ids.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("topic_id,content_ids"));
    let mut seen = HashMap::new();
    let mut rows = 0;
    for (i, line) in lines.enumerate() {
        let (tid, cids) = line.split_once(',').unwrap();
        assert_eq!(tid, ds.sample_topics[i], "row {i} out of order");
        assert!(seen.insert(tid.to_string(), ()).is_none(), "{tid} twice");
        let topic = ds.topic(tid).unwrap();
        let cids: Vec<&str> = cids.split(' ').filter(|s| !s.is_empty()).collect();
        assert!(!cids.is_empty() && cids.len() <= 128);
        for c in cids {
            let content = ds
                .content(c)
                .unwrap_or_else(|| panic!("unknown content {c}"));
            assert_eq!(content.language, topic.language);
        }
        rows += 1;
    }
    assert_eq!(rows, ds.sample_topics.len());
    // Features read back equal what was written.
    let back = lecr::features::read(&feats, "topics").unwrap();
    assert_eq!(back.emb, sim.topics);
}

#[test]
fn eval_compare_scores_each_source_alone_on_the_same_topics() {
    let (d, ds) = corpus();
    let sim = emb_sim(&ds, 3);
    let feats = write_features(&ds, &sim, d.path());
    let run = |extra: &[&str]| -> serde_json::Value {
        let data = d.path().to_str().unwrap();
        let mut args = vec!["eval", "--json", "--margins", "0.1:0.3:0.1", "--data", data];
        args.extend_from_slice(extra);
        serde_json::from_slice(&common::run_lecr(args)).unwrap()
    };
    let f = feats.to_str().unwrap();
    let rows = run(&["--compare", "--model", "lexical", "--features", f]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "one row per source, not an ensemble");
    // Each row equals the source evaluated alone at its best margin.
    for (row, alone) in rows
        .iter()
        .zip([run(&["--model", "lexical"]), run(&["--features", f])])
    {
        let best = alone["best_margin"].as_f64().unwrap();
        let report = alone["reports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["margin"].as_f64() == Some(best))
            .unwrap();
        let f2 = report["report"]["overall"]["f2"].as_f64().unwrap();
        assert!(
            (row["f2"].as_f64().unwrap() - f2).abs() < 1e-9,
            "{row} vs {f2}"
        );
        assert!((row["margin"].as_f64().unwrap() - best).abs() < 1e-6);
    }
    // Lexical beats random vectors on this corpus: the rows are not copies of each other.
    assert!(rows[0]["f2"].as_f64().unwrap() > rows[1]["f2"].as_f64().unwrap());
}

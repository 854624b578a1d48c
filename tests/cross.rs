//! The cross-encoder stage with a tiny model on a generated corpus: the folder it saves is a
//! sequence-classification folder that loads back to the same logits, folders it cannot read
//! are refused with a reason, training separates links from the retriever's other
//! candidates, and a paused-then-resumed run ends with an uninterrupted run's weights.

mod common;
use common::weights;
use lecr::cross::model::{CrossEncoder, CrossOptions};
use lecr::cross::train::{CrossConfig, CrossTrainer};
use lecr::data::synth::SynthConfig;
use std::path::Path;

/// A split English corpus and a tiny random BERT (2 layers) over its words.
fn setup(root: &Path) -> (String, String) {
    let synth = SynthConfig {
        topics: 300,
        contents: 500,
        languages: vec!["en".into()],
        seed: 5,
        switch: false,
        predict: None,
        studio_ids: false,
    };
    common::split_corpus_and_tiny_model(root, &synth, 2, "tiny")
}

fn config(data: &str, base: &str, out: &Path, epochs: usize) -> CrossConfig {
    CrossConfig {
        data: data.into(),
        base: base.into(),
        retrievers: vec!["lexical".into()],
        fold: 0,
        exclude_folds: vec![1],
        max_topics: 80,
        max_val_topics: 40,
        k: 10,
        top: 10,
        epochs,
        batch_size: 16,
        lr: 2e-3,
        warmup_share: 0.0,
        dropout: 0.0,
        max_len: 48,
        output: out.display().to_string(),
        ..Default::default()
    }
}

fn err_of(r: anyhow::Result<CrossEncoder>) -> String {
    format!("{:#}", r.err().expect("the folder must be refused"))
}

const PAIRS: &[(&str, &str)] = &[
    ("fractions # maths # ", "adding fractions # video # "),
    (
        "plants # cells # energy",
        "water # rivers # maps kings history",
    ),
    ("poem", "music story"),
];

#[test]
fn a_saved_cross_encoder_is_a_classifier_folder_with_the_same_logits() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    common::tiny_model(root.path(), lecr::model::config::Arch::Bert, 7)
        .save(&base)
        .unwrap();
    let opts = CrossOptions {
        seed: 3,
        ..Default::default()
    };
    let m = CrossEncoder::load(&base, &opts).unwrap();
    assert!(!m.head_loaded, "a plain encoder starts a fresh head");
    // The content side of a BERT pair has token type 1.
    let enc = m.tokenize(&[("fractions maths", "video")]).unwrap();
    assert_eq!(enc[0].1, vec![0, 0, 0, 0, 1, 1], "{:?}", enc[0]);
    let a = m.logits(PAIRS, 2).unwrap();
    assert!(a.iter().all(|v| v.is_finite()));
    assert!(a[0] != a[1], "different pairs, different logits: {a:?}");
    let saved = root.path().join("cross");
    m.save_with(&saved, "base", |_| Ok(())).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "BertForSequenceClassification");
    assert_eq!(cfg["id2label"].as_object().unwrap().len(), 1);
    let names: Vec<String> = weights(&saved).into_iter().map(|w| w.0).collect();
    for n in [
        "classifier.weight",
        "classifier.bias",
        "bert.pooler.dense.weight",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    // Loaded back (with another seed: nothing fresh), the same logits.
    let back = CrossEncoder::load(
        &saved,
        &CrossOptions {
            seed: 99,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(back.head_loaded);
    assert_eq!(back.logits(PAIRS, 3).unwrap(), a);
    // A fresh head from another seed gives other logits (the head is really read back).
    let other = CrossEncoder::load(
        &base,
        &CrossOptions {
            seed: 99,
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(other.logits(PAIRS, 3).unwrap(), a);
}

#[test]
fn folders_it_cannot_read_are_refused_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    common::tiny_model(root.path(), lecr::model::config::Arch::Bert, 7)
        .save(&base)
        .unwrap();
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let dir = root.path().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&base).unwrap() {
            let e = e.unwrap();
            if e.path().is_file() {
                std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
            }
        }
        let p = dir.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut cfg);
        std::fs::write(&p, cfg.to_string()).unwrap();
        dir
    };
    let o = CrossOptions::default();
    let t5 = edit("t5", &|c| {
        c["architectures"] = serde_json::json!(["T5ForConditionalGeneration"])
    });
    let e = err_of(CrossEncoder::load(&t5, &o));
    assert!(
        e.contains("T5ForConditionalGeneration") && e.contains("not a BERT"),
        "{e}"
    );
    let three = edit("three", &|c| {
        c["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
        c["id2label"] = serde_json::json!({"0": "a", "1": "b", "2": "c"});
    });
    let e = err_of(CrossEncoder::load(&three, &o));
    assert!(e.contains("3 labels"), "{e}");
    // Another model's tokenizer, of a bigger vocabulary than the embeddings.
    let other = edit("other", &|_| {});
    let p = other.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    for i in 0..16 {
        let n = vocab.len();
        vocab.insert(format!("word{i}"), serde_json::json!(n));
    }
    std::fs::write(&p, tok.to_string()).unwrap();
    let e = err_of(CrossEncoder::load(&other, &o));
    assert!(
        e.contains("tokenizer has 40 tokens") && e.contains("hold 24"),
        "{e}"
    );
}

#[test]
fn training_separates_links_from_the_other_candidates() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, base) = setup(root.path());
    let run = root.path().join("run");
    let mut t = CrossTrainer::new(config(&data, &base, &run, 8)).unwrap();
    let before = t.examples(1);
    let gap = |t: &CrossTrainer| {
        let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
        let texts = lecr::text::topic_texts(&ds.topics);
        let pairs: Vec<(usize, u32)> = before.iter().map(|e| (e.0, e.1)).collect();
        let l = lecr::cross::logits_of(&t.model, &ds, &texts, &pairs, 32).unwrap();
        let mean = |y: f32| {
            let v: Vec<f32> = l
                .iter()
                .zip(&before)
                .filter(|(_, e)| e.2 == y)
                .map(|(x, _)| *x)
                .collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        mean(1.0) - mean(0.0)
    };
    let g0 = gap(&t);
    let m = t.fit(None).unwrap();
    assert_eq!(m.len(), 8);
    assert!(m[7].loss < m[0].loss, "loss {} -> {}", m[0].loss, m[7].loss);
    let g1 = gap(&t);
    assert!(
        g1 > g0 + 1.0,
        "links' logits over the other candidates': {g0:.3} before, {g1:.3} after"
    );
    for f in [
        "cross.toml",
        "train.log",
        "metrics.jsonl",
        "best/config.json",
        "last/trainer_state.json",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        8
    );
    // A finished run is not started over.
    assert!(CrossTrainer::new(config(&data, &base, &run, 8)).is_err());
}

#[test]
fn resume_gives_the_same_weights_as_an_uninterrupted_run() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, base) = setup(root.path());
    let a = root.path().join("a");
    let b = root.path().join("b");
    let with_dropout = |out: &Path| CrossConfig {
        dropout: 0.1,
        max_topics: 30,
        max_val_topics: 10,
        ..config(&data, &base, out, 2)
    };
    CrossTrainer::new(with_dropout(&a))
        .unwrap()
        .fit(None)
        .unwrap();
    CrossTrainer::new(with_dropout(&b))
        .unwrap()
        .fit(Some(1))
        .unwrap();
    let mut r = CrossTrainer::resume(&b).unwrap();
    assert_eq!(r.state.epochs_done, 1);
    assert_eq!(r.fit(None).unwrap().len(), 1);
    let (wa, wb) = (weights(&a.join("last")), weights(&b.join("last")));
    assert_eq!(wa.len(), wb.len());
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let d = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d == 0.0, "{na} differs by {d}");
    }
    assert!(CrossTrainer::resume(&b)
        .unwrap()
        .fit(None)
        .unwrap()
        .is_empty());
}

#[test]
fn a_reranker_reads_the_cross_logit_of_the_top_candidates() {
    use lecr::pipeline::{EmbedSettings, Source};
    use lecr::rerank::model::{BoostSettings, CrossFeature, Reranker};
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, base) = setup(root.path());
    let run = root.path().join("run");
    let cfg = CrossConfig {
        max_topics: 30,
        max_val_topics: 10,
        ..config(&data, &base, &run, 1)
    };
    CrossTrainer::new(cfg).unwrap().fit(None).unwrap();
    let cross_dir = run.join("best").display().to_string();
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    // Fold 1: neither the cross-encoder nor (here) the lexical retriever trained on it.
    let top = 3;
    let opts = lecr::rerank::TrainOptions {
        k: 8,
        boost: BoostSettings {
            trees: 20,
            ..Default::default()
        },
        cold_share: 0.0,
        cross: Some(CrossFeature {
            dir: cross_dir.clone(),
            top,
            precision: lecr::cross::model::Precision::F32,
            fingerprint: None,
        }),
    };
    let (rr, report) = lecr::rerank::train(
        &ds,
        &[Source::Lexical],
        &["lexical".into()],
        &EmbedSettings::default(),
        1,
        &opts,
    )
    .unwrap();
    assert_eq!(
        rr.meta.features.last().map(String::as_str),
        Some(lecr::rerank::CROSS_FEATURE)
    );
    assert!(report
        .importances
        .iter()
        .any(|(n, _)| n == lecr::rerank::CROSS_FEATURE));
    let saved = root.path().join("rr");
    rr.save(&saved).unwrap();
    let back = Reranker::load(&saved).unwrap();
    assert_eq!(back.meta.cross, rr.meta.cross);

    // Scoring (eval, predict): the feature is read for each topic's best `top` only.
    let truth = lecr::select::truth(&ds);
    let topics: Vec<usize> = (0..ds.topics.len())
        .filter(|&t| ds.topics[t].fold == Some(1) && truth.contains_key(&t))
        .take(12)
        .collect();
    let (parents, embed) = lecr::rerank::with_parents(&ds, &topics);
    let rets = lecr::rerank::retrievers(&ds, &[Source::Lexical], &embed, &EmbedSettings::default())
        .unwrap();
    let mut prep = lecr::rerank::prepare(&ds, &rets, &topics, &parents, 8).unwrap();
    lecr::rerank::add_cross_feature(&back, &ds, &mut prep).unwrap();
    let cross = CrossEncoder::load(Path::new(&cross_dir), &CrossOptions::default()).unwrap();
    let texts = lecr::text::topic_texts(&ds.topics);
    for (p, tc) in prep.candidates.iter().enumerate() {
        let mut best: Vec<(f32, u32, usize)> = tc
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.sims[0], c.content, prep.offsets[p] + i))
            .collect();
        best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (rank, &(_, content, row)) in best.iter().enumerate() {
            let v = prep.features.get(row, lecr::rerank::CROSS_FEATURE).unwrap();
            if rank < top {
                let want = lecr::cross::logits_of(&cross, &ds, &texts, &[(tc.topic, content)], 1)
                    .unwrap()[0];
                assert!((v - want as f64).abs() < 1e-4, "row {row}: {v} vs {want}");
            } else {
                assert!(v.is_nan(), "rank {rank} is past the budget but has {v}");
            }
        }
    }
    let scores = lecr::rerank::score(&back, &ds, &prep).unwrap();
    assert!(scores
        .iter()
        .all(|s| s.is_finite() && (0.0..=1.0).contains(s)));
}

#[test]
fn a_served_reranker_reads_its_cross_encoder_and_answers_as_predict() {
    use common::studio::recommend;
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    // Studio-shaped ids, so requests can name the data folder's topics; two languages.
    let (data, model) = common::serve_corpus_with(root.path(), true);
    let run = root.path().join("run");
    let cfg = CrossConfig {
        max_topics: 40,
        max_val_topics: 10,
        max_len: 64,
        ..config(&data, &model, &run, 1)
    };
    CrossTrainer::new(cfg).unwrap().fit(None).unwrap();
    let cross_dir = run.join("best");
    let rr = root.path().join("rr");
    let rr_path = rr.to_str().unwrap();
    common::run_lecr([
        "rerank",
        "train",
        "--data",
        &data,
        "--fold",
        "0",
        "--model",
        &model,
        "--model",
        "lexical",
        "--k",
        "8",
        "--trees",
        "30",
        "--cross",
        cross_dir.to_str().unwrap(),
        "--cross-top",
        "4",
        "--out",
        rr_path,
    ]);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rr.join("reranker.json")).unwrap()).unwrap();
    assert_eq!(meta["cross"]["top"], 4, "{meta}");
    assert_eq!(
        meta["cross"]["precision"], "int8",
        "the default precision is saved"
    );
    let print = meta["cross"]["fingerprint"].as_str().unwrap_or_default();
    assert!(
        print.len() == 64 && print.chars().all(|c| c.is_ascii_hexdigit()),
        "{meta}"
    );
    let common::studio::Reranked {
        server: s,
        topics,
        predicted,
    } = common::studio::serve_reranked_as_predict(
        root.path(),
        &data,
        &model,
        rr_path,
        "crossed.csv",
    );
    let counter = |s: &common::server::Server, name: &str| -> f64 {
        s.text("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    };
    let read = counter(&s, "lecr_cross_pairs_total");
    assert!(
        read >= 4.0 * topics.len() as f64,
        "{read} pairs read for {} topics at top 4",
        topics.len()
    );
    // Asked again: the same answers from the kept logits, no pair read again.
    let again = recommend(&s, &topics);
    for (tid, _) in &topics {
        assert_eq!(again[tid], predicted[tid], "topic {tid} again");
    }
    assert_eq!(counter(&s, "lecr_cross_pairs_total"), read);
    assert_eq!(counter(&s, "lecr_cross_cache_hits_total"), read);
    drop(s);
    // Without the cache, one by one (each request's pairs alone in its batch): the same
    // answers, every pair read.
    let known = root.path().join("known").display().to_string();
    let s = common::server::Server::start(&[
        "--data",
        &known,
        "--model",
        &model,
        "--model",
        "lexical",
        "--reranker",
        rr_path,
        "--cross-cache",
        "0",
    ]);
    for t in topics.iter().take(4) {
        let alone = recommend(&s, std::slice::from_ref(t));
        assert_eq!(alone[&t.0], predicted[&t.0], "topic {} alone", t.0);
    }
    assert!(counter(&s, "lecr_cross_pairs_total") >= 4.0);
    assert_eq!(counter(&s, "lecr_cross_cache_hits_total"), 0.0);
    drop(s);

    // The reranker's cross-encoder folder gone: the service refuses to start, naming it.
    let moved = root.path().join("moved");
    std::fs::rename(&cross_dir, &moved).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .arg("serve")
        .args([
            "--model",
            &model,
            "--model",
            "lexical",
            "--reranker",
            rr_path,
        ])
        .args(["--addr", "127.0.0.1:0"])
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cross-encoder") && err.contains(cross_dir.to_str().unwrap()),
        "{err}"
    );
    // Back, but changed since the reranker was trained (its config rewritten): refused by
    // `serve` and by `predict` alike, since its logits are not the ones the trees learned.
    std::fs::rename(&moved, &cross_dir).unwrap();
    let cfg = cross_dir.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text + "\n").unwrap();
    let known = root.path().join("known").display().to_string();
    for cmd in ["serve", "predict"] {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"));
        c.arg(cmd)
            .args(["--data", &known, "--model", &model, "--model", "lexical"])
            .args(["--reranker", rr_path])
            .env("LECR_NO_PROGRESS", "1");
        if cmd == "serve" {
            c.args(["--addr", "127.0.0.1:0"]);
        } else {
            c.arg("--out").arg(root.path().join("changed.csv"));
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}");
        assert!(
            err.contains("changed since the reranker was trained"),
            "{cmd}: {err}"
        );
    }
}

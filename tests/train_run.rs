//! Training end to end with a tiny model on a generated corpus: the loss falls, validation F2
//! rises over the untrained model, and a paused-then-resumed run ends with the same weights
//! as an uninterrupted one.

mod common;
use common::weights;
use lecr::data::synth::SynthConfig;
use lecr::model::SentenceModel;
use lecr::train::config::TrainConfig;
use lecr::train::trainer::{RunOptions, Trainer};
use std::path::Path;

/// A split English corpus and a tiny random BERT saved as a model folder.
fn setup(root: &Path) -> (String, String) {
    let synth = SynthConfig {
        topics: 400,
        contents: 700,
        languages: vec!["en".into()],
        seed: 3,
        switch: true,
        predict: None,
        studio_ids: false,
    };
    common::split_corpus_and_tiny_model(root, &synth, 2, "tiny")
}

fn config(data: &str, model: &str, out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        data: data.into(),
        model: model.into(),
        max_len: 64,
        batch_size: 24,
        epochs,
        lr: 3e-3,
        lr_end: 1e-3,
        warmup_epochs: 0.0,
        fold: 0,
        output: out.display().to_string(),
        eval_batch_size: 64,
        ..Default::default()
    }
}

type Truth = std::collections::HashMap<usize, std::collections::HashSet<u32>>;

/// The topics of fold `f` that have links.
fn fold_topics(ds: &lecr::data::Dataset, truth: &Truth, f: i32) -> Vec<usize> {
    (0..ds.topics.len())
        .filter(|&t| ds.topics[t].fold == Some(f) && truth.contains_key(&t))
        .collect()
}

/// A trainer without feedback and one with `feedback`, one epoch from the same start.
fn plain_and_fed(data: &str, model: &str, root: &Path, feedback: &str) -> (Trainer, Trainer) {
    let cfg = |out: &str, feedback: &str| TrainConfig {
        pools: vec![],
        feedback: feedback.into(),
        ..config(data, model, &root.join(out), 1)
    };
    (
        Trainer::new(cfg("plain", "")).unwrap(),
        Trainer::new(cfg("fed", feedback)).unwrap(),
    )
}

/// How many of the (topic, content) pairs share a batch of the first epoch.
fn together(t: &Trainer, pairs: &[(usize, u32)]) -> usize {
    let b = t.batches(1);
    pairs
        .iter()
        .filter(|(topic, c)| {
            b.iter().any(|batch| {
                batch.iter().any(|p| p.0 == *topic) && batch.iter().any(|p| p.1 == *c as usize)
            })
        })
        .count()
}

#[test]
fn two_epochs_lower_the_loss_and_raise_f2() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, model) = setup(root.path());
    // Pool 0 only: the tiny word-level vocabulary covers the original texts, not translations.
    let cfg = TrainConfig {
        pools: vec![],
        ..config(&data, &model, &root.path().join("run"), 2)
    };
    let mut t = Trainer::new(cfg).unwrap();
    let before = t.validate().unwrap().unwrap().overall.f2;
    let m = t.fit(&RunOptions::default()).unwrap();
    assert_eq!(m.len(), 2);
    assert!(m[1].loss < m[0].loss, "loss {} -> {}", m[0].loss, m[1].loss);
    let after = m.iter().map(|e| e.val_f2).fold(0.0, f64::max);
    assert!(
        after > before + 0.03,
        "F2 untrained {before:.4}, trained {after:.4}"
    );
    let run = root.path().join("run");
    for f in [
        "best/model.safetensors",
        "last/model.safetensors",
        "last/trainer_state.json",
        "config.toml",
        "train.log",
        "metrics.csv",
        "metrics.jsonl",
        "metrics.svg",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    // The best model loads as a normal model folder.
    SentenceModel::load(run.join("best").to_str().unwrap(), &Default::default()).unwrap();
    // A finished run refuses to be overwritten.
    assert!(Trainer::new(config(&data, &model, &run, 2)).is_err());
}

#[test]
fn resume_gives_the_same_weights_as_an_uninterrupted_run() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, model) = setup(root.path());
    let a = root.path().join("a");
    let b = root.path().join("b");
    Trainer::new(config(&data, &model, &a, 3))
        .unwrap()
        .fit(&RunOptions::default())
        .unwrap();
    // Pause after one epoch (as a kill after the checkpoint would), then resume twice.
    Trainer::new(config(&data, &model, &b, 3))
        .unwrap()
        .fit(&RunOptions {
            max_epochs_this_run: Some(1),
        })
        .unwrap();
    let mut r = Trainer::resume(&b).unwrap();
    assert_eq!(r.state.epochs_done, 1);
    r.fit(&RunOptions {
        max_epochs_this_run: Some(1),
    })
    .unwrap();
    Trainer::resume(&b)
        .unwrap()
        .fit(&RunOptions::default())
        .unwrap();
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
    // A resumed run that is already complete trains nothing more.
    assert!(Trainer::resume(&b)
        .unwrap()
        .fit(&RunOptions::default())
        .unwrap()
        .is_empty());
}

#[test]
fn print_config_shows_values_as_written() {
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["train", "--print-config", "--set", "margin=0.18"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.lines().any(|l| l == "margin = 0.18"), "{text}");
    let defaults = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["train", "--print-config"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&defaults.stdout);
    assert!(text.lines().any(|l| l == "margin = 0.16"), "{text}");
}

/// `grad_cache` (activation recomputation in chunks) trains to the same weights as one pass
/// over each batch (without dropout, whose masks are drawn in a different order), in less
/// memory per pass.
#[test]
fn grad_cache_trains_like_one_pass() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, model) = setup(root.path());
    let run = |name: &str, grad_cache: usize| {
        let out = root.path().join(name);
        Trainer::new(TrainConfig {
            dropout: 0.0,
            grad_cache,
            ..config(&data, &model, &out, 1)
        })
        .unwrap()
        .fit(&RunOptions::default())
        .unwrap();
        weights(&out.join("last"))
    };
    let (one, cached) = (run("one", 0), run("cached", 7));
    let init = weights(Path::new(&model));
    for (((na, va), (_, vb)), (_, v0)) in one.iter().zip(&cached).zip(&init) {
        let diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        let (d, moved) = (diff(va, vb), diff(va, v0));
        // Adam divides by the gradient's own size, so gradients that are zero up to rounding
        // (the key biases: softmax ignores a shift shared by all keys; embedding rows of
        // tokens seen once or twice) turn rounding differences into visible steps there.
        if na.ends_with("key.bias") || na.contains("word_embeddings") {
            assert!(d < 1e-3, "{na} differs by {d}");
        } else {
            assert!(d < 2e-5, "{na} differs by {d}");
            assert!(d < moved / 20.0, "{na}: differs by {d}, moved by {moved}");
        }
    }
}

#[test]
fn curator_feedback_adds_pairs_and_puts_rejections_in_the_batch() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, model) = setup(root.path());
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let truth = lecr::select::truth(&ds);
    let fold_topics = |f: i32| fold_topics(&ds, &truth, f);
    // Accepted: the true links of 10 validation topics (new training pairs).
    let reviewed: Vec<usize> = fold_topics(0).into_iter().take(10).collect();
    let accepted: usize = reviewed.iter().map(|t| truth[t].len()).sum();
    // Rejected: for 20 training topics, a content some other training topic owns.
    let train = fold_topics(1);
    // Sorted: the truth sets iterate in a random order.
    let mut owned: Vec<u32> = fold_topics(2)
        .iter()
        .flat_map(|t| truth[t].iter().copied())
        .collect();
    owned.sort();
    owned.dedup();
    let rejected: Vec<(usize, u32)> = train
        .iter()
        .take(20)
        .enumerate()
        .map(|(i, &t)| (t, owned[i * 7 % owned.len()]))
        .filter(|(t, c)| !truth[t].contains(c))
        .collect();
    let export = root.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let mut acc = String::from("topic_id,content_ids\n");
    for t in &reviewed {
        let ids: Vec<&str> = truth[t]
            .iter()
            .map(|&c| ds.contents[c as usize].id.as_str())
            .collect();
        acc.push_str(&format!("{},{}\n", ds.topics[*t].id, ids.join(" ")));
    }
    acc.push_str("not-a-topic,also-unknown\n");
    // A Studio topic (not in the data folder) and a Studio content, both in the export.
    let known = &ds.contents[owned[0] as usize];
    acc.push_str(&format!("studio-topic,studio-content {}\n", known.id));
    let studio_topic = lecr::data::Topic {
        id: "studio-topic".into(),
        title: "A topic made in Studio".into(),
        description: String::new(),
        channel: "studio-channel".into(),
        category: String::new(),
        level: Some(0),
        language: ds.topics[reviewed[0]].language.clone(),
        parent: None,
        has_content: true,
        fold: None,
        line: 0,
    };
    let studio_content = lecr::data::Content {
        id: "studio-content".into(),
        title: "A video uploaded to Studio".into(),
        kind: "video".into(),
        language: studio_topic.language.clone(),
        ..known.clone()
    };
    lecr::data::write::write_topics(&export.join("topics.csv"), &[studio_topic]).unwrap();
    lecr::data::write::write_contents(&export.join("content.csv"), &[studio_content]).unwrap();
    std::fs::write(export.join("correlations.csv"), acc).unwrap();
    let mut rej = String::from("topic_id,content_ids\n");
    for (t, c) in &rejected {
        rej.push_str(&format!(
            "{},{}\n",
            ds.topics[*t].id, ds.contents[*c as usize].id
        ));
    }
    std::fs::write(export.join("rejected.csv"), rej).unwrap();

    let (plain, fed) = plain_and_fed(&data, &model, root.path(), export.to_str().unwrap());
    let (p0, v0) = plain.sizes();
    let (p1, v1) = fed.sizes();
    assert_eq!(
        p1,
        p0 + accepted + 2,
        "accepted links (the Studio topic's two included) join the training pairs"
    );
    // The Studio topic trains: its pairs are in the epoch's batches, under the index it got.
    let studio = ds.topics.len();
    let pairs: Vec<(usize, usize)> = fed.batches(1).into_iter().flatten().collect();
    assert!(
        pairs.contains(&(studio, ds.contents.len()))
            && pairs.contains(&(studio, owned[0] as usize)),
        "the Studio topic's pairs are trained"
    );
    assert_eq!(v1, v0 - reviewed.len(), "reviewed topics leave validation");
    // A rejected content shares a batch with its topic far more often with the feedback.
    let (without, with) = (together(&plain, &rejected), together(&fed, &rejected));
    // A rejection can join its topic's batch only through an owner whose own links do not
    // clash with the topic's (that would be an in-batch false negative).
    let placeable = rejected
        .iter()
        .filter(|(t, c)| {
            (0..ds.topics.len()).any(|o| {
                ds.topics[o].fold.is_some_and(|f| f > 0)
                    && truth
                        .get(&o)
                        .is_some_and(|g| g.contains(c) && g.is_disjoint(&truth[t]))
            })
        })
        .count();
    assert!(
        with == placeable && placeable >= rejected.len() * 3 / 4 && with > 2 * without,
        "rejected contents in their topic's batch: {with} of {} ({placeable} placeable) with \
         feedback, {without} without",
        rejected.len()
    );
    let log = std::fs::read_to_string(root.path().join("fed/train.log")).unwrap();
    assert!(log.contains("1 topics and 1 contents added"), "{log}");
    assert!(log.contains("1 decisions name ids not in"), "{log}");
}

#[test]
fn a_studio_import_trains_its_imports_and_batches_its_rejections() {
    use lecr::studio::feedback::simulate::{EventSpec, ExportWriter};
    use lecr::studio::request::TopicIn;
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let synth = SynthConfig {
        topics: 400,
        contents: 700,
        languages: vec!["en".into()],
        seed: 3,
        switch: false,
        predict: None,
        studio_ids: true,
    };
    let (data, model) = common::split_corpus_and_tiny_model(root.path(), &synth, 2, "tiny");
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let truth = lecr::select::truth(&ds);
    let fold_topics = |f: i32| fold_topics(&ds, &truth, f);
    let sorted_truth = |t: usize| -> Vec<u32> {
        let mut v: Vec<u32> = truth[&t].iter().copied().collect();
        v.sort();
        v
    };
    // Imported: the true links of 10 validation topics. Rejected ("not related"): for 20
    // training topics, a content another training topic owns. Rejected as "not the type of
    // activity" (a weak negative, not trained on by default): one more per topic.
    let reviewed: Vec<usize> = fold_topics(0).into_iter().take(10).collect();
    let accepted: usize = reviewed.iter().map(|t| truth[t].len()).sum();
    let mut owned: Vec<u32> = fold_topics(2)
        .iter()
        .flat_map(|&t| sorted_truth(t))
        .collect();
    owned.sort();
    owned.dedup();
    let pick = |i: usize, salt: usize| owned[(i * 7 + salt) % owned.len()];
    let train = fold_topics(1);
    let rejected: Vec<(usize, u32)> = train
        .iter()
        .take(20)
        .enumerate()
        .map(|(i, &t)| (t, pick(i, 0)))
        .filter(|(t, c)| !truth[t].contains(c))
        .collect();
    let request = |t: usize| TopicIn {
        id: ds.topics[t].id.clone(),
        title: ds.topics[t].title.clone(),
        description: ds.topics[t].description.clone(),
        language: ds.topics[t].language.clone(),
        channel_id: None,
        ancestors: vec![],
    };
    let id = |c: u32| ds.contents[c as usize].id.clone();
    let time = chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut w = ExportWriter::new(1);
    let show = |w: &mut ExportWriter, t: usize, items: &[String]| {
        w.event(&EventSpec {
            topic: &request(t),
            items,
            user: 1,
            admin: false,
            time,
            override_threshold: false,
        })
    };
    for &t in &reviewed {
        let items: Vec<String> = sorted_truth(t).into_iter().map(id).collect();
        let e = show(&mut w, t, &items);
        for c in &items {
            w.interaction(&e, c, "PREVIEWED", "PREVIEWED", None, time);
            w.interaction(&e, c, "IMPORTED", "IMPORTED", None, time);
        }
    }
    let not_related =
        "Not related to the subject or knowledge area I am trying to find resources for";
    let not_specific = "Not the type of learning activity I'm looking for (e.g. document \
                        instead of video, etc.)";
    for (i, &(t, c)) in rejected.iter().enumerate() {
        let weak = pick(i, 3);
        let items = [id(c), id(weak)];
        let e = show(&mut w, t, &items);
        w.interaction(&e, &items[0], "REJECTED", not_related, Some(""), time);
        w.interaction(&e, &items[1], "REJECTED", not_specific, Some(""), time);
    }
    let export = root.path().join("export");
    w.write(&export).unwrap();
    let import = root.path().join("import");
    common::run_lecr([
        "feedback",
        "import",
        "--studio",
        export.to_str().unwrap(),
        "--out",
        import.to_str().unwrap(),
    ]);

    let (plain, fed) = plain_and_fed(&data, &model, root.path(), import.to_str().unwrap());
    let (p0, v0) = plain.sizes();
    let (p1, v1) = fed.sizes();
    assert_eq!(
        p1,
        p0 + accepted,
        "exactly the imported links join the pairs"
    );
    assert_eq!(v1, v0 - reviewed.len(), "reviewed topics leave validation");
    let (without, with) = (together(&plain, &rejected), together(&fed, &rejected));
    assert!(
        with >= rejected.len() * 3 / 4 && with > 2 * without,
        "hard negatives in their topic's batch: {with} of {} with the import, {without} without",
        rejected.len()
    );
    let rejected_csv = std::fs::read_to_string(import.join("rejected.csv")).unwrap();
    let weak_csv = std::fs::read_to_string(import.join("weak.csv")).unwrap();
    assert_eq!(rejected_csv.lines().count(), 1 + rejected.len());
    assert_eq!(weak_csv.lines().count(), 1 + rejected.len());
}

#[test]
fn eval_with_default_flags_prints_the_f2_training_printed() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, model) = setup(root.path());
    let run = root.path().join("run");
    // A token limit and margin other than eval's built-in defaults (96, 0.16).
    let cfg = TrainConfig {
        pools: vec![],
        max_len: 40,
        margin: 0.12,
        ..config(&data, &model, &run, 1)
    };
    let m = Trainer::new(cfg)
        .unwrap()
        .fit(&RunOptions::default())
        .unwrap();
    let trained_f2 = m[0].val_f2;
    let note: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best/lecr.json")).unwrap())
            .unwrap();
    assert_eq!(note["max_len"], 40);
    assert_eq!(note["fold"], 0);
    assert_eq!(note["val_f2"].as_f64(), Some(trained_f2));
    let best = run.join("best");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["eval", "--data", &data, "--fold", "0", "--json", "--model"])
        .arg(&best)
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let eval_f2 = v["reports"][0]["report"]["overall"]["f2"].as_f64().unwrap();
    assert_eq!(v["reports"][0]["margin"].as_f64(), Some(0.12));
    assert_eq!(eval_f2, trained_f2, "one model, one F2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("settings: max_len 40 (") && err.contains("lecr.json"),
        "{err}"
    );
    // With eval's old defaults the number differs, and says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args([
            "eval",
            "--data",
            &data,
            "--fold",
            "0",
            "--json",
            "--max-len",
            "96",
            "--margin",
            "0.16",
            "--model",
        ])
        .arg(&best)
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("settings: max_len 96 (--max-len), margin 0.16 (--margin)"),
        "{err}"
    );
}

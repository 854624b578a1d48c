//! Layer-drop distillation and int8 quantization end to end with tiny models on a generated
//! corpus: the student is the teacher's chosen layers and moves towards the teacher; a
//! paused-then-resumed distillation equals an uninterrupted one; quantized folders save,
//! reload and serve every `--model` path, and refuse training.

mod common;
use lecr::data::load_dataset;
use lecr::data::synth::SynthConfig;
use lecr::model::{quantize, LoadOptions, SentenceModel};
use lecr::train::config::TrainConfig;
use lecr::train::trainer::{RunOptions, Trainer};
use std::path::Path;

/// A split English corpus and a tiny 4-layer BERT teacher, trained for two epochs (a random
/// one embeds every text in nearly the same direction), saved as a model folder.
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
    let (data, dir) = common::split_corpus_and_tiny_model(root, &synth, 4, "random");
    let run = root.join("teacher-run");
    let mut t = Trainer::new(TrainConfig {
        data: data.clone(),
        model: dir,
        max_len: 64,
        batch_size: 24,
        epochs: 2,
        lr: 3e-3,
        lr_end: 1e-3,
        warmup_epochs: 0.0,
        pools: vec![],
        output: run.display().to_string(),
        ..Default::default()
    })
    .unwrap();
    t.fit(&RunOptions::default()).unwrap();
    (data, run.join("last").display().to_string())
}

fn distill_config(data: &str, teacher: &str, out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        data: data.into(),
        model: teacher.into(),
        teacher: teacher.into(),
        student_layers: vec![0, 3],
        max_len: 64,
        batch_size: 24,
        epochs,
        lr: 2e-3,
        lr_end: 5e-4,
        warmup_epochs: 0.0,
        pools: vec![],
        output: out.display().to_string(),
        ..Default::default()
    }
}

fn texts(data: &str) -> Vec<String> {
    let ds = load_dataset(Path::new(data)).unwrap();
    lecr::text::topic_texts(&ds.topics)
        .into_iter()
        .take(120)
        .collect()
}

/// Mean cosine between two models' embeddings of `texts`.
fn mean_cos(a: &SentenceModel, b: &SentenceModel, texts: &[String]) -> f32 {
    lecr::bench::agreement(a, b, texts).unwrap().1
}

fn load(dir: &Path) -> SentenceModel {
    SentenceModel::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

#[test]
fn distillation_keeps_the_chosen_layers_and_approaches_the_teacher() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, teacher_dir) = setup(root.path());
    let teacher_bytes = std::fs::read(Path::new(&teacher_dir).join("model.safetensors")).unwrap();
    let teacher = load(Path::new(&teacher_dir));
    let sample = texts(&data);

    let run = root.path().join("run");
    let mut t = Trainer::new(distill_config(&data, &teacher_dir, &run, 3)).unwrap();
    assert_eq!(t.model.encoder.cfg.num_hidden_layers, 2);
    let before = mean_cos(&t.model, &teacher, &sample);
    let epochs = t.fit(&RunOptions::default()).unwrap();
    assert_eq!(epochs.len(), 3);
    assert!(
        epochs[2].loss < epochs[0].loss * 0.9,
        "distillation loss {} -> {}",
        epochs[0].loss,
        epochs[2].loss
    );
    // The output is a normal model folder with two layers, closer to the teacher than the
    // untrained student.
    let student = load(&run.join("last"));
    assert_eq!(student.encoder.cfg.num_hidden_layers, 2);
    let after = mean_cos(&student, &teacher, &sample);
    eprintln!(
        "mean cosine to the teacher {before:.4} -> {after:.4}; loss {:.4} -> {:.4}",
        epochs[0].loss, epochs[2].loss
    );
    assert!(
        (1.0 - after) < 0.5 * (1.0 - before),
        "mean cosine to the teacher {before:.4} -> {after:.4}"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("last/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["num_hidden_layers"], 2);
    // The teacher is frozen: its file is untouched.
    assert_eq!(
        std::fs::read(Path::new(&teacher_dir).join("model.safetensors")).unwrap(),
        teacher_bytes
    );
}

#[test]
fn distillation_resumes_to_the_same_weights() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, teacher_dir) = setup(root.path());
    let whole = root.path().join("whole");
    Trainer::new(distill_config(&data, &teacher_dir, &whole, 2))
        .unwrap()
        .fit(&RunOptions::default())
        .unwrap();
    let parts = root.path().join("parts");
    let mut t = Trainer::new(distill_config(&data, &teacher_dir, &parts, 2)).unwrap();
    t.fit(&RunOptions {
        max_epochs_this_run: Some(1),
    })
    .unwrap();
    drop(t);
    let mut t = Trainer::resume(&parts).unwrap();
    assert_eq!(
        t.cfg.teacher, teacher_dir,
        "the teacher comes back from config.toml"
    );
    t.fit(&RunOptions::default()).unwrap();
    let read = |d: &Path| std::fs::read(d.join("last/model.safetensors")).unwrap();
    assert_eq!(read(&whole), read(&parts));
}

#[test]
fn masked_hidden_loss_ignores_padding() {
    use candle_core::{Device, Tensor};
    let d = Device::Cpu;
    // Two items of length 3, the second with one padded position that differs wildly.
    let a = Tensor::from_vec(
        vec![1f32, 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.],
        (2, 3, 2),
        &d,
    )
    .unwrap();
    let mut bv = vec![1f32, 2., 3., 4., 5., 7., 7., 8., 9., 10., 100., -100.];
    let b = Tensor::from_vec(bv.clone(), (2, 3, 2), &d).unwrap();
    let mask = Tensor::from_vec(vec![1f32, 1., 1., 1., 1., 0.], (2, 3), &d).unwrap();
    let got = lecr::train::loss::masked_mse(&a, &b, &mask)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    // One real difference of 1 over 5 tokens × 2 features.
    assert!((got - 0.1).abs() < 1e-6, "{got}");
    bv[10] = 11.0;
    bv[11] = 12.0;
    let b = Tensor::from_vec(bv, (2, 3, 2), &d).unwrap();
    let same = lecr::train::loss::masked_mse(&a, &b, &mask).unwrap();
    assert!((same.to_scalar::<f32>().unwrap() - 0.1).abs() < 1e-6);
}

#[test]
fn quantized_folders_save_reload_and_refuse_training() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, teacher_dir) = setup(root.path());
    let sample = texts(&data);
    let float = load(Path::new(&teacher_dir));
    let mut model = load(Path::new(&teacher_dir));
    quantize::calibrate_and_quantize(&mut model, Some(&sample), quantize::DEFAULT_ALPHA).unwrap();
    assert_eq!(model.params.int8.len(), 4 * 6);
    // No float copy of a quantized weight stays trainable.
    assert!(model
        .params
        .vars
        .iter()
        .all(|(n, _)| !n.ends_with("dense.weight") && !n.contains("self.query.weight")));
    let (min, mean) = lecr::bench::agreement(&float, &model, &sample).unwrap();
    assert!(min > 0.99, "int8 vs float: min cosine {min}, mean {mean}");
    assert!(min < 1.0 - 1e-7, "int8 embeddings equal the float ones");

    let out = root.path().join("int8");
    model.save(&out).unwrap();
    let note: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quantization.json")).unwrap())
            .unwrap();
    assert_eq!(note["layers"].as_array().unwrap().len(), 24);
    let reloaded = load(&out);
    assert!(reloaded.is_int8());
    assert_eq!(
        model.embed(&sample, 16, "a").unwrap(),
        reloaded.embed(&sample, 16, "b").unwrap()
    );

    // Training a quantized folder is refused with a clear message.
    let cfg = TrainConfig {
        data: data.clone(),
        model: out.display().to_string(),
        max_len: 64,
        batch_size: 24,
        epochs: 1,
        pools: vec![],
        output: root.path().join("bad").display().to_string(),
        ..Default::default()
    };
    let err = Trainer::new(cfg)
        .err()
        .expect("training int8 must fail")
        .to_string();
    assert!(err.contains("int8"), "{err}");

    // Every --model command takes the folder: eval through the CLI.
    let o = out.to_str().unwrap();
    let stdout = lecr_ok(&[
        "eval",
        "--data",
        &data,
        "--fold",
        "0",
        "--json",
        "--max-len",
        "64",
        "--model",
        o,
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v.to_string().contains("f2"), "{v}");
}

/// Runs the lecr binary (no progress bars).
fn lecr(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(args)
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap()
}

/// Runs the lecr binary, which must succeed; returns its stdout.
fn lecr_ok(args: &[&str]) -> String {
    let st = lecr(args);
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "lecr {args:?}: {err}");
    String::from_utf8_lossy(&st.stdout).into_owned()
}

#[test]
fn quantize_cli_writes_a_folder_and_reports_agreement() {
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let root = tempfile::tempdir().unwrap();
    let (data, teacher_dir) = setup(root.path());
    let out = root.path().join("q");
    let o = out.to_str().unwrap();
    let stdout = lecr_ok(&[
        "quantize",
        "--model",
        &teacher_dir,
        "--data",
        &data,
        "--out",
        o,
    ]);
    assert!(stdout.contains("quantized 24 dense layers"), "{stdout}");
    assert!(
        stdout.contains(&format!("wrote {}", out.display())),
        "{stdout}"
    );
    assert!(load(&out).is_int8());
    // `--int8` quantizes a float model as it loads: `embed` writes the same rows as the
    // quantized folder does when both calibrate on vocabulary texts.
    let texts = root.path().join("texts.txt");
    std::fs::write(&texts, "adding fractions\nplants and cells\n").unwrap();
    let t = texts.to_str().unwrap();
    let embed = |model: &str, extra: &[&str], dir: &str| {
        let o = root.path().join(dir);
        let mut args = vec![
            "embed",
            "--model",
            model,
            "--texts",
            t,
            "--out",
            o.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        lecr_ok(&args);
        std::fs::read(o.join("texts.safetensors")).unwrap()
    };
    let vocab_q = root.path().join("qv");
    lecr_ok(&[
        "quantize",
        "--model",
        &teacher_dir,
        "--out",
        vocab_q.to_str().unwrap(),
    ]);
    let at_load = embed(&teacher_dir, &["--int8"], "e1");
    let from_folder = embed(vocab_q.to_str().unwrap(), &[], "e2");
    let float = embed(&teacher_dir, &[], "e3");
    assert_ne!(at_load, float);
    assert_eq!(
        at_load, from_folder,
        "the same default calibration gives the same model"
    );
    // Quantizing an int8 folder again is refused.
    let q2 = root.path().join("q2");
    let again = lecr(&["quantize", "--model", o, "--out", q2.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already int8"));
    // `--bf16` embeds the float model with other rounding; an int8 folder refuses it.
    let bf16 = embed(&teacher_dir, &["--bf16"], "e6");
    assert_eq!(bf16.len(), float.len());
    assert_ne!(bf16, float);
    let e7 = root.path().join("e7");
    let e7 = e7.to_str().unwrap();
    let refused = lecr(&["embed", "--model", o, "--texts", t, "--bf16", "--out", e7]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("an int8 folder"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The portable kernel warns; written to a pipe (not a terminal) the log has no colour codes.
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["embed", "--model", o, "--texts", t, "--out"])
        .arg(root.path().join("e4"))
        .env("LECR_NO_PROGRESS", "1")
        .env("LECR_INT8_SCALAR", "1")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "{log}");
    assert!(
        log.contains("WARN") && log.contains("portable int8 kernel"),
        "{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "colour codes in a piped log: {log:?}"
    );
}

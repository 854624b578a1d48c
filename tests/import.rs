//! `lecr import` on checkpoints in the original solution's format (`tests/data/seed-checkpoint/`,
//! provenance in `tests/data/README.md`): the imported folders reproduce the original `Net`'s
//! embeddings, and bad inputs get errors that say what is wrong.

mod common;
use lecr::model::import::{import_checkpoint, import_tensors, CheckpointPooling, ImportOptions};
use lecr::model::{LoadOptions, SentenceModel};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/seed-checkpoint")
}

fn options(file: &str, pooling: CheckpointPooling, out: &Path) -> ImportOptions {
    ImportOptions {
        checkpoint: fixtures().join(file),
        base: fixtures().join("base").display().to_string(),
        pooling,
        out: out.to_path_buf(),
        normalize: true,
    }
}

#[test]
fn imported_checkpoints_match_the_original_embeddings() {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let texts: Vec<String> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let max_len = reference["max_len"].as_u64().unwrap() as usize;
    let checkpoints = reference["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), 3);
    let tmp = tempfile::tempdir().unwrap();
    for c in checkpoints {
        let file = c["file"].as_str().unwrap();
        let pooling = match c["pooling"].as_str().unwrap() {
            "cls" => CheckpointPooling::Cls,
            "mean" => CheckpointPooling::Mean,
            other => panic!("pooling {other}"),
        };
        let out = tmp.path().join(file);
        let report = import_checkpoint(&options(file, pooling, &out)).unwrap();
        assert_eq!(
            report.layers,
            c["layers"].as_u64().unwrap() as usize,
            "{file}"
        );
        assert_eq!(report.logit_scale, Some(3.1), "{file}");
        let want: Vec<Vec<f64>> = c["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            })
            .collect();
        let mut model = SentenceModel::load(
            out.to_str().unwrap(),
            &LoadOptions {
                max_len: Some(max_len),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(model.encoder.cfg.num_hidden_layers, report.layers);
        assert_eq!(model.dim(), want[0].len(), "{file}: output dimension");
        // The reference is not normalised: compare before normalisation.
        model.normalize = false;
        let got = model.embed(&texts, 3, "import").unwrap();
        let mut worst = 0f64;
        for (i, w) in want.iter().enumerate() {
            for (a, b) in got.row(i).iter().zip(w) {
                worst = worst.max((*a as f64 - b).abs());
            }
        }
        eprintln!("{file}: max abs difference {worst:.2e}");
        assert!(worst <= 1e-5, "{file}: max abs difference {worst}");
        // And the saved folder normalises (what lecr's selection expects).
        model.normalize = true;
        let unit = SentenceModel::load(out.to_str().unwrap(), &LoadOptions::default())
            .unwrap()
            .embed(&texts[..1], 1, "unit")
            .unwrap();
        let norm: f32 = unit.row(0).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{file}: norm {norm}");
    }
}

#[test]
fn the_command_line_imports_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("proj");
    let o = common::run_lecr([
        "import",
        "--checkpoint",
        fixtures().join("proj-mean.pth").to_str().unwrap(),
        "--base",
        fixtures().join("base").to_str().unwrap(),
        "--pooling",
        "mean",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o);
    assert!(stdout.contains("projection 32 -> 16"), "{stdout}");
    assert!(
        stdout.contains(&format!("wrote {}", out.display())),
        "{stdout}"
    );
    assert!(out.join("2_Dense/model.safetensors").exists());
    let modules = std::fs::read_to_string(out.join("modules.json")).unwrap();
    assert!(
        modules.contains("Dense") && modules.contains("Normalize"),
        "{modules}"
    );
}

#[test]
fn a_file_that_is_not_a_checkpoint_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = fixtures().join("README.md");
    let e = import_checkpoint(&ImportOptions {
        checkpoint: bad.clone(),
        ..options("x", CheckpointPooling::Cls, &tmp.path().join("o"))
    })
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("not a PyTorch checkpoint"), "{msg}");
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(!tmp.path().join("o").exists(), "nothing is written");
}

/// A checkpoint's tensors by name.
type Named = Vec<(String, candle_core::Tensor)>;

/// A copy of the base folder with one config field changed.
fn base_with(dir: &Path, key: &str, value: serde_json::Value) -> PathBuf {
    let b = dir.join(format!("base-{key}"));
    std::fs::create_dir_all(&b).unwrap();
    for e in std::fs::read_dir(fixtures().join("base")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), b.join(e.file_name())).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("config.json")).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(b.join("config.json"), cfg.to_string()).unwrap();
    b
}

#[test]
fn a_checkpoint_that_does_not_fit_the_base_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    // Wider base: the first tensor checked has the wrong shape.
    let wide = base_with(tmp.path(), "intermediate_size", serde_json::json!(128));
    let e = import_checkpoint(&ImportOptions {
        base: wide.display().to_string(),
        ..options("full-cls.pth", CheckpointPooling::Cls, &out)
    })
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("intermediate.dense.weight")
            && msg.contains("[64, 32]")
            && msg.contains("[128, 32]"),
        "{msg}"
    );
    assert!(!out.exists());

    // The fixture's tensors changed by `edit`, imported: the error message.
    let import_edited = |edit: &dyn Fn(&mut Named)| {
        let mut tensors = candle_core::pickle::read_all(fixtures().join("full-cls.pth")).unwrap();
        edit(&mut tensors);
        let opts = options("full-cls.pth", CheckpointPooling::Cls, &out);
        let e = import_tensors(tensors, &fixtures().join("base"), &opts).unwrap_err();
        assert!(!out.exists());
        format!("{e:#}")
    };
    // A tensor the base does not have.
    let msg = import_edited(&|t| {
        let extra =
            candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        t.push((
            "transformer.encoder.layer.0.attention.self.rotary.inv_freq".into(),
            extra,
        ));
    });
    assert!(
        msg.contains("encoder.layer.0.attention.self.rotary.inv_freq"),
        "{msg}"
    );
    // A missing tensor.
    let msg = import_edited(&|t| t.retain(|(n, _)| !n.ends_with("layer.1.output.LayerNorm.bias")));
    assert!(
        msg.contains("encoder.layer.1.output.LayerNorm.bias") && msg.contains("missing"),
        "{msg}"
    );

    // More layers than the base model.
    let shallow = base_with(tmp.path(), "num_hidden_layers", serde_json::json!(1));
    let e = import_checkpoint(&ImportOptions {
        base: shallow.display().to_string(),
        ..options("full-cls.pth", CheckpointPooling::Cls, &out)
    })
    .unwrap_err();
    assert!(format!("{e:#}").contains("2 layers"), "{e:#}");
}

#[test]
fn pooler_pooling_uses_the_pooler_and_refuses_a_projection_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pooler");
    import_checkpoint(&options("full-cls.pth", CheckpointPooling::Pooler, &out)).unwrap();
    let dense = std::fs::read_to_string(out.join("2_Dense/config.json")).unwrap();
    assert!(
        dense.contains("Tanh") && dense.contains("\"bias\": true"),
        "{dense}"
    );
    // Pooler output = tanh(W · cls + b): bounded by 1 before normalisation, and different
    // from plain cls pooling.
    let load = |p: &Path| {
        let mut m = SentenceModel::load(p.to_str().unwrap(), &LoadOptions::default()).unwrap();
        m.normalize = false;
        m.embed(&["Fractions".to_string()], 1, "p").unwrap()
    };
    let pooled = load(&out);
    assert!(pooled.data.iter().all(|v| v.abs() <= 1.0));
    let cls = tmp.path().join("cls");
    import_checkpoint(&options("full-cls.pth", CheckpointPooling::Cls, &cls)).unwrap();
    assert_ne!(pooled, load(&cls));

    let e = import_checkpoint(&options(
        "proj-mean.pth",
        CheckpointPooling::Pooler,
        &tmp.path().join("x"),
    ))
    .unwrap_err();
    assert!(format!("{e:#}").contains("proj.weight"), "{e:#}");
}

//! Helpers shared by integration tests: tiny tokenizers and models built in the test.
#![allow(dead_code)]

pub mod server;
pub mod studio;

use lecr::model::config::{Arch, EncoderConfig};
use lecr::model::SentenceModel;
use std::path::{Path, PathBuf};

/// Words of the tiny word-level vocabulary (after the special tokens).
pub const WORDS: &[&str] = &[
    "fractions",
    "adding",
    "maths",
    "grade",
    "video",
    "plants",
    "cells",
    "energy",
    "water",
    "history",
    "kings",
    "maps",
    "rivers",
    "numbers",
    "shapes",
    "circle",
    "angle",
    "poem",
    "story",
    "music",
];

/// Writes a word-level `tokenizer.json` (BERT-style `[CLS] … [SEP]` or XLM-R-style `<s> … </s>`).
pub fn write_tokenizer(dir: &Path, arch: Arch) -> PathBuf {
    let specials: [&str; 4] = match arch {
        Arch::Bert => ["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
        Arch::XlmRoberta => ["<s>", "<pad>", "</s>", "<unk>"],
    };
    let mut vocab = serde_json::Map::new();
    for (i, w) in specials.iter().chain(WORDS).enumerate() {
        vocab.insert(w.to_string(), serde_json::json!(i));
    }
    let id = |t: &str| vocab[t].as_u64().unwrap();
    let (cls, sep, unk) = match arch {
        Arch::Bert => ("[CLS]", "[SEP]", "[UNK]"),
        Arch::XlmRoberta => ("<s>", "</s>", "<unk>"),
    };
    let post = match arch {
        Arch::Bert => {
            serde_json::json!({"type": "BertProcessing", "sep": [sep, id(sep)], "cls": [cls, id(cls)]})
        }
        Arch::XlmRoberta => {
            serde_json::json!({"type": "RobertaProcessing", "sep": [sep, id(sep)], "cls": [cls, id(cls)], "trim_offsets": true, "add_prefix_space": false})
        }
    };
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": post,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": unk}
    });
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_string(&tok).unwrap()).unwrap();
    path
}

/// A randomly initialised 2-layer model of the given architecture.
pub fn tiny_model(dir: &Path, arch: Arch, seed: u64) -> SentenceModel {
    let tok = write_tokenizer(dir, arch);
    let cfg = EncoderConfig::tiny(arch, 4 + WORDS.len());
    SentenceModel::random(&cfg, &tok, 32, seed).unwrap()
}

pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var("LECR_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").exists(),
        "{} missing: run scripts/fetch-minilm.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// A word-level tokenizer over every word of a data folder (lower-cased), so a tiny model can
/// learn a generated corpus.
pub fn corpus_tokenizer(dir: &Path, ds: &lecr::data::Dataset) -> PathBuf {
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "#"].iter().enumerate() {
        vocab.insert(w.to_string(), serde_json::json!(i));
    }
    let texts = lecr::text::topic_texts(&ds.topics)
        .into_iter()
        .chain(ds.contents.iter().map(lecr::text::content_text));
    for t in texts {
        for w in t
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let n = vocab.len();
            vocab.entry(w.to_string()).or_insert(serde_json::json!(n));
        }
    }
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_string(&tok).unwrap()).unwrap();
    path
}

/// A generated corpus split into 5 folds (`root/split`) and a tiny random BERT of `layers`
/// layers over its words, saved at `root/<name>`. Returns (split folder, model folder).
pub fn split_corpus_and_tiny_model(
    root: &Path,
    synth: &lecr::data::synth::SynthConfig,
    layers: usize,
    name: &str,
) -> (String, String) {
    use lecr::data::{load_dataset, split};
    let data = root.join("data");
    lecr::data::synth::generate(synth, &data).unwrap();
    let ds = load_dataset(&data).unwrap();
    let folds = split::split_folds(&ds, 5);
    let splitted = root.join("split");
    split::write_split(&ds, &folds, &splitted).unwrap();
    let tok = corpus_tokenizer(&root.join("tok"), &ds);
    let vocab = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&tok).unwrap())
        .unwrap()["model"]["vocab"]
        .as_object()
        .unwrap()
        .len();
    let mut cfg = EncoderConfig::tiny(Arch::Bert, vocab);
    cfg.hidden_size = 48;
    cfg.intermediate_size = 96;
    cfg.num_hidden_layers = layers;
    let model = SentenceModel::random(&cfg, &tok, 64, 11).unwrap();
    let model_dir = root.join(name);
    model.save(&model_dir).unwrap();
    (
        splitted.display().to_string(),
        model_dir.display().to_string(),
    )
}

/// The tensors of a model folder's `model.safetensors` as f32 values, sorted by name.
pub fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Runs the lecr binary (no progress bars), which must succeed; returns its stdout.
pub fn run_lecr<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(args)
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lecr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The service tests' corpus (240 topics, 480 contents, English and Spanish, 5 folds) and a
/// 2-layer tiny model over its words.
pub fn serve_corpus(root: &Path) -> (String, String) {
    serve_corpus_with(root, false)
}

/// [`serve_corpus`], with Studio-shaped ids when `studio_ids` (requests can name its topics).
pub fn serve_corpus_with(root: &Path, studio_ids: bool) -> (String, String) {
    split_corpus_and_tiny_model(
        root,
        &lecr::data::synth::SynthConfig {
            topics: 240,
            contents: 480,
            languages: vec!["en".into(), "es".into()],
            seed: 9,
            studio_ids,
            ..Default::default()
        },
        2,
        "model",
    )
}

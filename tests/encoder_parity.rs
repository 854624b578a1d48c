//! Parity with Python sentence-transformers on the real all-MiniLM-L6-v2 folder
//! (`tests/data/all-MiniLM-L6-v2.reference.json`, provenance in `tests/data/README.md`), fetched by `scripts/fetch-minilm.sh`.

mod common;
use lecr::model::{LoadOptions, SentenceModel};
use std::path::PathBuf;

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/all-MiniLM-L6-v2.reference.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn minilm_matches_sentence_transformers() {
    let fx = fixture();
    let model = SentenceModel::load(
        common::minilm_dir().to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        model.tokenizer.max_len, 256,
        "max_seq_length from sentence_bert_config.json"
    );
    let (worst_cos, worst_abs) = compare(&model, &fx, 0.9999, 1e-4);
    eprintln!("parity: min cosine {worst_cos:.7}, max abs diff {worst_abs:.2e}");
}

/// Embeds the fixture's texts and checks each against the reference; returns the smallest
/// cosine and the largest absolute difference.
fn compare(
    model: &SentenceModel,
    fx: &serde_json::Value,
    min_cos: f64,
    max_diff: f64,
) -> (f64, f64) {
    let items = fx["items"].as_array().unwrap();
    let texts: Vec<String> = items
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_string())
        .collect();
    // Batch size 7 mixes lengths inside batches, so padding must not change results.
    let emb = model.embed(&texts, 7, "parity").unwrap();
    let mut worst_cos = 1f64;
    let mut worst_abs = 0f64;
    for (i, item) in items.iter().enumerate() {
        let want: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = emb.row(i);
        assert_eq!(got.len(), want.len());
        let dot: f64 = got.iter().zip(&want).map(|(a, b)| *a as f64 * b).sum();
        let na: f64 = got.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
        let cos = dot / (na * nb);
        let max_abs = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        worst_cos = worst_cos.min(cos);
        worst_abs = worst_abs.max(max_abs);
        assert!(cos >= min_cos, "item {i}: cosine {cos}");
        assert!(max_abs <= max_diff, "item {i}: max abs diff {max_abs}");
    }
    (worst_cos, worst_abs)
}

/// Int8 (quantized at load, and saved + reloaded as a quantized folder) stays within cosine
/// 0.99 of the reference float embeddings.
#[test]
fn minilm_int8_stays_close_to_sentence_transformers() {
    let fx = fixture();
    let spec = common::minilm_dir();
    let opts = LoadOptions {
        int8: true,
        ..Default::default()
    };
    let model = SentenceModel::load(spec.to_str().unwrap(), &opts).unwrap();
    assert!(model.is_int8());
    // 6 layers × (query, key, value, attention output, intermediate, output).
    assert_eq!(model.params.int8.len(), 36);
    let (cos, diff) = compare(&model, &fx, 0.99, 1.0);
    eprintln!("int8 at load: min cosine {cos:.5}, max abs diff {diff:.2e}");
    // Not bit-equal to float: the quantization really happened.
    assert!(diff > 1e-4, "int8 embeddings equal the float ones ({diff})");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int8");
    model.save(&out).unwrap();
    assert!(out.join("quantization.json").exists());
    let reloaded = SentenceModel::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert!(reloaded.is_int8());
    let a = model
        .embed(&["an int8 round trip".to_string()], 1, "a")
        .unwrap();
    let b = reloaded
        .embed(&["an int8 round trip".to_string()], 1, "b")
        .unwrap();
    assert_eq!(a, b, "a saved int8 folder reloads to the same model");
    // Int8 weights take a quarter of the float file's dense-layer bytes.
    let size = |p: &std::path::Path| {
        std::fs::metadata(p.join("model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(
        size(&out) * 10 < size(&spec) * 7,
        "{} vs {}",
        size(&out),
        size(&spec)
    );
}

//! Parity with Python sentence-transformers on the real all-MiniLM-L6-v2 folder
//! (`../shared/fixtures/all-MiniLM-L6-v2.reference.json`), fetched by `scripts/fetch-minilm.sh`.

mod common;
use lecr::model::{LoadOptions, SentenceModel};
use std::path::PathBuf;

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/all-MiniLM-L6-v2.reference.json");
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
        assert!(cos >= 0.9999, "item {i}: cosine {cos}");
        assert!(max_abs <= 1e-4, "item {i}: max abs diff {max_abs}");
    }
    eprintln!("parity: min cosine {worst_cos:.7}, max abs diff {worst_abs:.2e}");
}

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

/// A text of more than 150 tokens (565+ characters).
const LONG_TEXT: &str =
    "Photosynthesis is the process by which green plants, algae and some bacteria \
        turn light energy into chemical energy. In the chloroplasts, chlorophyll absorbs light, \
        mostly blue and red wavelengths, and uses its energy to split water molecules, releasing \
        oxygen. The energy captured is stored in ATP and NADPH, which the Calvin cycle then uses \
        to fix carbon dioxide from the air into sugars such as glucose. Those sugars feed the \
        plant's growth and, through food chains, nearly every other living thing on Earth. \
        Factors such as light intensity, temperature and the concentration of carbon dioxide \
        limit the rate of photosynthesis, and students can measure it by counting the bubbles \
        of oxygen released by pondweed under a lamp placed at different distances. This lesson \
        covers the light-dependent reactions, the Calvin cycle, limiting factors, and the \
        experiments that first revealed where the oxygen comes from.";

/// A long text embedded at the model's full length (256 tokens) by an int8 model with the
/// default calibration stays within cosine 0.99 of the float model: the default calibration
/// covers late positions, not only short texts.
#[test]
fn int8_keeps_long_texts_close_to_float() {
    let spec = common::minilm_dir();
    let spec = spec.to_str().unwrap();
    let float = SentenceModel::load(spec, &LoadOptions::default()).unwrap();
    let int8 = SentenceModel::load(
        spec,
        &LoadOptions {
            int8: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(int8.tokenizer.max_len, 256);
    let long = LONG_TEXT;
    assert!(long.len() >= 565);
    let texts = vec![long.to_string()];
    let n_tokens = int8.tokenizer.encode(&[long]).unwrap()[0].len();
    assert!(
        n_tokens > 150,
        "the text is long in tokens too ({n_tokens})"
    );
    let (min, _) = lecr::bench::agreement(&float, &int8, &texts).unwrap();
    eprintln!("long text ({n_tokens} tokens): int8 at load vs float cosine {min:.5}");
    assert!(min >= 0.99, "cosine {min}");

    // The way a user quantizes: `lecr quantize` with its defaults, then the saved folder at
    // the model's full length. Its report measures texts it did not calibrate on.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int8");
    let report = common::run_lecr(["quantize", "--model", spec, "--out", out.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&report);
    assert!(
        report.contains("held-out texts (not calibrated on; up to 256 tokens)"),
        "{report}"
    );
    let saved = SentenceModel::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(
        saved.tokenizer.max_len, 256,
        "calibrated and saved at the full length"
    );
    let (min, _) = lecr::bench::agreement(&float, &saved, &texts).unwrap();
    eprintln!("long text: `lecr quantize` folder vs float cosine {min:.5}");
    assert!(min >= 0.99, "cosine {min}");
}

/// 7-bit weights (the faster AVX2 kernel's format), quantized at load and by `lecr quantize
/// --weight-bits 7`, stay within cosine 0.99 of float on the reference texts and a long text;
/// the saved folder keeps its weights within ±63, so it runs that kernel after reloading.
#[test]
fn seven_bit_weights_stay_close_to_float() {
    let fx = fixture();
    let spec = common::minilm_dir();
    let spec = spec.to_str().unwrap();
    let opts = LoadOptions {
        int8: true,
        int8_weight_bits: lecr::kernels::int8::WeightBits::Seven,
        ..Default::default()
    };
    let model = SentenceModel::load(spec, &opts).unwrap();
    assert!(model.params.int8.iter().all(|(_, p)| p.seven_bit()));
    let (cos, _) = compare(&model, &fx, 0.99, 1.0);
    eprintln!("int8 7-bit weights at load: min cosine {cos:.5}");
    let float = SentenceModel::load(spec, &LoadOptions::default()).unwrap();
    let texts = vec![LONG_TEXT.to_string()];
    let (min, _) = lecr::bench::agreement(&float, &model, &texts).unwrap();
    eprintln!("long text: int8 7-bit weights vs float cosine {min:.5}");
    assert!(min >= 0.99, "cosine {min}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int8-7");
    let report = common::run_lecr([
        "quantize",
        "--model",
        spec,
        "--out",
        out.to_str().unwrap(),
        "--weight-bits",
        "7",
    ]);
    assert!(
        String::from_utf8_lossy(&report).contains("7-bit weights"),
        "{}",
        String::from_utf8_lossy(&report)
    );
    let note: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quantization.json")).unwrap())
            .unwrap();
    assert_eq!(note["weight_bits"], 7);
    let saved = SentenceModel::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert!(saved.params.int8.iter().all(|(_, p)| p.seven_bit()));
    let (min, _) = lecr::bench::agreement(&float, &saved, &texts).unwrap();
    eprintln!("long text: `lecr quantize --weight-bits 7` folder vs float cosine {min:.5}");
    assert!(min >= 0.99, "cosine {min}");
    // The default 8-bit quantization does not take the 7-bit kernel.
    let eight = SentenceModel::load(
        spec,
        &LoadOptions {
            int8: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(eight.params.int8.iter().any(|(_, p)| !p.seven_bit()));
}

/// bf16 weights and activations (f32 sums) stay within cosine 0.999 of the reference and of
/// the float model on a long text, whichever bf16 kernel the CPU and `LECR_ISA` pick; the bf16
/// model refuses training and int8 at the same time.
#[test]
fn bf16_stays_close_to_float_and_is_for_inference_only() {
    let fx = fixture();
    let spec = common::minilm_dir();
    let spec = spec.to_str().unwrap();
    let bf16_opts = LoadOptions {
        bf16: true,
        ..Default::default()
    };
    let model = SentenceModel::load(spec, &bf16_opts).unwrap();
    assert!(model.is_bf16() && !model.is_int8());
    eprintln!(
        "bf16 kernel: {}",
        lecr::kernels::bf16::Bf16Kernel::detect().name()
    );
    let (cos, _) = compare(&model, &fx, 0.999, 0.01);
    eprintln!("bf16 vs sentence-transformers: min cosine {cos:.6}");
    let float = SentenceModel::load(spec, &LoadOptions::default()).unwrap();
    assert!(!float.is_bf16());
    let texts = vec![LONG_TEXT.to_string()];
    let (min, _) = lecr::bench::agreement(&float, &model, &texts).unwrap();
    eprintln!("long text: bf16 vs float cosine {min:.6}");
    assert!(min >= 0.999, "cosine {min}");

    let ids = model.tokenizer.encode(&["a topic", "a content"]).unwrap();
    let err = model.forward_ids(&ids, None, true).unwrap_err();
    assert!(
        format!("{err:#}").contains("bf16 weights is for inference only"),
        "{err:#}"
    );
    let err = SentenceModel::load(
        spec,
        &LoadOptions {
            bf16: true,
            int8: true,
            ..Default::default()
        },
    )
    .err()
    .expect("bf16 with int8 is refused");
    assert!(format!("{err:#}").contains("not both"), "{err:#}");
}

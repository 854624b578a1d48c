//! The encoder is trainable (every tensor gets a gradient), XLM-R positions follow its rule,
//! and saved folders load back to the same outputs.

mod common;
use candle_core::Var;
use common::*;
use lecr::model::bert::position_ids;
use lecr::model::config::Arch;
use lecr::model::{LoadOptions, SentenceModel};
use lecr::train::loss::info_nce;

fn texts() -> (Vec<&'static str>, Vec<&'static str>) {
    (
        vec![
            "adding fractions maths",
            "plants cells energy",
            "history kings maps",
            "poem story",
        ],
        vec![
            "fractions video",
            "water energy plants",
            "rivers maps history",
            "music poem story circle",
        ],
    )
}

/// The gradients of one InfoNCE step over `texts()` (topics and contents in one forward pass,
/// dropout as the model is set), and the learnable scale they include.
fn one_step(model: &SentenceModel) -> (candle_core::backprop::GradStore, Var) {
    let (t, c) = texts();
    let mut all: Vec<&str> = t.clone();
    all.extend(&c);
    let ids = model.tokenizer.encode(&all).unwrap();
    let emb = model.forward_ids(&ids, None, true).unwrap();
    let n = t.len();
    let scale = Var::new(&[(1.0f32 / 0.07).ln()], &model.device).unwrap();
    let loss = info_nce(
        &emb.narrow(0, 0, n).unwrap(),
        &emb.narrow(0, n, n).unwrap(),
        scale.as_tensor(),
        0.1,
    )
    .unwrap();
    (loss.backward().unwrap(), scale)
}

fn one_step_grads(model: &SentenceModel) -> (Vec<(String, f32)>, f32) {
    let (grads, scale) = one_step(model);
    let mut out = Vec::new();
    for (name, v) in &model.params.vars {
        let norm = grads
            .get(v)
            .map(|g| {
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    .sqrt()
            })
            .unwrap_or(0.0);
        out.push((name.clone(), norm));
    }
    let s = grads
        .get(&scale)
        .map(|g| {
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .unwrap_or(0.0);
    (out, s)
}

#[test]
fn every_trainable_tensor_receives_a_gradient() {
    for arch in [Arch::Bert, Arch::XlmRoberta] {
        let d = tempfile::tempdir().unwrap();
        let mut model = tiny_model(d.path(), arch, 1);
        model.add_projection(16, 2).unwrap();
        let (grads, scale) = one_step_grads(&model);
        // 5 embedding tensors + 16 per layer × 2 layers + projection.
        assert_eq!(grads.len(), 5 + 16 * 2 + 1, "{arch:?}");
        let missing: Vec<&String> = grads
            .iter()
            .filter(|(_, g)| g.is_nan() || *g <= 0.0)
            .map(|(n, _)| n)
            .collect();
        assert!(missing.is_empty(), "{arch:?}: no gradient for {missing:?}");
        assert!(scale > 0.0, "logit_scale has a gradient");
    }
}

#[test]
fn xlmr_positions_start_after_the_padding_index() {
    let mask = vec![vec![1, 1, 1, 0, 0], vec![1, 1, 1, 1, 1]];
    assert_eq!(
        position_ids(Arch::XlmRoberta, &mask, 1),
        vec![vec![2, 3, 4, 1, 1], vec![2, 3, 4, 5, 6]]
    );
    assert_eq!(
        position_ids(Arch::Bert, &mask, 0),
        vec![vec![0, 1, 2, 3, 4], vec![0, 1, 2, 3, 4]]
    );
}

#[test]
fn padding_does_not_change_embeddings() {
    for arch in [Arch::Bert, Arch::XlmRoberta] {
        let d = tempfile::tempdir().unwrap();
        let model = tiny_model(d.path(), arch, 5);
        let ids = model.tokenizer.encode(&["adding fractions"]).unwrap();
        let alone = model.forward_ids(&ids, None, false).unwrap();
        let padded = model.forward_ids(&ids, Some(12), false).unwrap();
        let diff = (alone - padded)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff < 1e-5,
            "{arch:?}: padding changed the embedding by {diff}"
        );
    }
}

/// Inference on packed real tokens gives the padded pass's hidden states (zeros at padding)
/// and embeddings, for a batch of different lengths, and for int8 layers too.
#[test]
fn packed_inference_equals_the_padded_pass() {
    for arch in [Arch::Bert, Arch::XlmRoberta] {
        let d = tempfile::tempdir().unwrap();
        let mut model = tiny_model(d.path(), arch, 9);
        let (t, c) = texts();
        let all: Vec<&str> = t.iter().chain(&c).copied().collect();
        let ids = model.tokenizer.encode(&all).unwrap();
        for int8 in [false, true] {
            if int8 {
                lecr::model::quantize::calibrate_and_quantize(&mut model, None, 0.5).unwrap();
            }
            model.encoder.unpad = false;
            let padded = model.forward_full(&ids, Some(20), false).unwrap();
            model.encoder.unpad = true;
            let packed = model.forward_full(&ids, Some(20), false).unwrap();
            let diff = max_abs_diff;
            let masked = padded
                .hidden
                .broadcast_mul(&padded.mask.unsqueeze(2).unwrap())
                .unwrap();
            assert!(
                diff(&masked, &packed.hidden) < 1e-5,
                "{arch:?} int8 {int8}: hidden"
            );
            assert!(
                diff(&padded.embeddings, &packed.embeddings) < 1e-5,
                "{arch:?} int8 {int8}: embeddings"
            );
        }
    }
}

fn embed_all(m: &SentenceModel) -> Vec<f32> {
    let (t, c) = texts();
    let all: Vec<String> = t.iter().chain(&c).map(|s| s.to_string()).collect();
    m.embed(&all, 3, "test").unwrap().data
}

#[test]
fn save_and_load_round_trip_keeps_outputs() {
    for arch in [Arch::Bert, Arch::XlmRoberta] {
        let d = tempfile::tempdir().unwrap();
        let mut model = tiny_model(d.path(), arch, 9);
        model.add_projection(8, 3).unwrap();
        let before = embed_all(&model);
        let out = d.path().join("saved");
        model.save(&out).unwrap();
        for f in [
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "modules.json",
            "1_Pooling/config.json",
            "2_Dense/config.json",
            "2_Dense/model.safetensors",
            "sentence_bert_config.json",
        ] {
            assert!(out.join(f).exists(), "{arch:?}: {f} missing");
        }
        let loaded = SentenceModel::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
        assert_eq!(loaded.arch(), arch);
        assert_eq!(loaded.dim(), 8);
        let after = embed_all(&loaded);
        let diff = before
            .iter()
            .zip(&after)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-6, "{arch:?}: outputs changed by {diff}");
        // Saving over an existing folder replaces it.
        loaded.save(&out).unwrap();
    }
}

#[test]
fn minilm_saves_with_its_original_tensor_names() {
    let src = minilm_dir();
    let model = SentenceModel::load(src.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("copy");
    model.save(&out).unwrap();
    let names = |p: &std::path::Path| {
        let bytes = std::fs::read(p.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&src), names(&out));
    let again = SentenceModel::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let t = vec!["Adding fractions with unlike denominators".to_string()];
    assert_eq!(
        model.embed(&t, 1, "a").unwrap(),
        again.embed(&t, 1, "b").unwrap()
    );
}

#[test]
fn layer_selection_keeps_the_chosen_layers() {
    let src = minilm_dir();
    let opts = LoadOptions {
        layers: Some(vec![0, 2, 5]),
        ..Default::default()
    };
    let student = SentenceModel::load(src.to_str().unwrap(), &opts).unwrap();
    assert_eq!(student.encoder.cfg.num_hidden_layers, 3);
    let teacher = SentenceModel::load(src.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let find = |m: &SentenceModel, n: &str| {
        m.params
            .vars
            .iter()
            .find(|(k, _)| k == n)
            .unwrap()
            .1
            .as_tensor()
            .clone()
    };
    let a = find(&student, "encoder.layer.1.attention.self.query.weight");
    let b = find(&teacher, "encoder.layer.2.attention.self.query.weight");
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
}

/// Every variable's gradient of one InfoNCE step, flattened.
fn full_grads(model: &SentenceModel) -> Vec<(String, Vec<f32>)> {
    let (grads, _) = one_step(model);
    model
        .params
        .vars
        .iter()
        .map(|(name, v)| {
            let g = grads.get(v).expect("gradient");
            (
                name.clone(),
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect()
}

#[test]
fn bf16_training_gradients_stay_close_to_f32() {
    let d = tempfile::tempdir().unwrap();
    let mut model = tiny_model(d.path(), Arch::Bert, 3);
    model.set_dropout(0.0);
    let f32_grads = full_grads(&model);
    model.set_train_bf16(true);
    let bf16_grads = full_grads(&model);
    println!(
        "bf16 kernel: {}",
        lecr::kernels::bf16::Bf16Kernel::detect().name()
    );
    let mut dense_changed = 0;
    for ((name, a), (_, b)) in f32_grads.iter().zip(&bf16_grads) {
        let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt();
        // Two bf16 roundings per product (2⁻⁹ each), through two layers and back.
        assert!(
            diff <= 0.03 * norm + 1e-7,
            "{name}: |bf16 − f32| = {diff}, |f32| = {norm}"
        );
        if name.ends_with(".weight") && name.contains("encoder.layer") && diff > 0.0 {
            dense_changed += 1;
        }
    }
    // 6 dense layers per layer × 2 layers ran in bf16 (layer norms stay f32 but their
    // gradients move with the products', so they may differ too).
    assert!(
        dense_changed >= 12,
        "{dense_changed} dense gradients differ"
    );
    // Inference is unchanged by the switch.
    let (t, _) = texts();
    let ids = model.tokenizer.encode(&t).unwrap();
    let on = model.forward_ids(&ids, None, false).unwrap();
    model.set_train_bf16(false);
    let off = model.forward_ids(&ids, None, false).unwrap();
    assert_eq!(max_abs_diff(&on, &off), 0.0);
}

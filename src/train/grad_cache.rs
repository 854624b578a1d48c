//! InfoNCE gradients of a large batch in bounded memory (the `grad_cache` setting).
//!
//! In-batch negatives tie every pair of a batch to every other, so plain gradient accumulation
//! over smaller batches changes the loss. Activation recomputation at the batch level
//! ("GradCache", Gao et al. 2021) keeps the loss exact: embed the batch chunk by chunk without
//! keeping activations, compute the loss and its gradient with respect to the embeddings, then
//! run each chunk again with activations kept and back-propagate that embedding gradient
//! through it. Only one chunk's activations are alive at a time; the price is a second forward
//! pass. Dropout replays the same masks in the second pass (the stream position is saved per
//! chunk), so the gradients equal those of one pass over the chunks.

use super::loss::info_nce;
use crate::model::SentenceModel;
use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// The loss value and the gradients (model variables and `logit_scale`) of a symmetric InfoNCE
/// batch: `ids` holds the `n` topics, then their `n` contents; `chunk` sequences per pass;
/// `pad_to` as in `forward_ids` (default: the batch's longest sequence).
pub fn info_nce_grad_cache(
    model: &SentenceModel,
    ids: &[Vec<u32>],
    n: usize,
    logit_scale: &Var,
    label_smoothing: f64,
    chunk: usize,
    pad_to: Option<usize>,
) -> Result<(f32, GradStore)> {
    anyhow::ensure!(
        ids.len() == 2 * n,
        "grad cache: expected {} sequences",
        2 * n
    );
    let chunk = chunk.max(1);
    // Every chunk padded like the whole batch, so each sequence is computed as in one pass.
    let pad_to = pad_to.or_else(|| ids.iter().map(Vec::len).max());
    let dropout = model.encoder.dropout();

    // Pass 1: embeddings only; the graph of each chunk is dropped at once.
    let mut streams = Vec::new();
    let mut parts = Vec::new();
    for c in ids.chunks(chunk) {
        streams.push(dropout.snapshot());
        parts.push(model.forward_ids(c, pad_to, true)?.detach());
    }
    let end_of_stream = dropout.snapshot();
    let emb = Var::from_tensor(&Tensor::cat(&parts, 0)?)?;
    let loss = info_nce(
        &emb.as_tensor().narrow(0, 0, n)?,
        &emb.as_tensor().narrow(0, n, n)?,
        logit_scale.as_tensor(),
        label_smoothing,
    )?;
    let value = loss.to_scalar::<f32>()?;
    let mut grads = loss.backward()?;
    let d_emb = grads
        .remove(emb.as_tensor())
        .ok_or_else(|| anyhow::anyhow!("grad cache: the loss does not reach the embeddings"))?;

    // Pass 2: each chunk again, with the same dropout masks, back-propagating its share of
    // the embedding gradient.
    // Sums are added in place: one copy of the gradients plus one chunk's, not three.
    let vars = model.vars();
    let mut sums: Vec<Option<Tensor>> = vec![None; vars.len()];
    let mut at = 0;
    for (c, stream) in ids.chunks(chunk).zip(streams) {
        dropout.restore(stream);
        let e = model.forward_ids(c, pad_to, true)?;
        let g = d_emb.narrow(0, at, c.len())?;
        at += c.len();
        let mut part = e.mul(&g)?.sum_all()?.backward()?;
        for (v, sum) in vars.iter().zip(sums.iter_mut()) {
            if let Some(g) = part.remove(v.as_tensor()) {
                let g = g.contiguous()?;
                match sum {
                    Some(s) => s.inplace_op2(&g, &AddAssign)?,
                    // A copy: the sum must own its storage before anything is added into it.
                    None => *sum = Some(g.copy()?),
                }
            }
        }
    }
    for (v, sum) in vars.iter().zip(sums) {
        if let Some(s) = sum {
            grads.insert(v.as_tensor(), s);
        }
    }
    dropout.restore(end_of_stream);
    Ok((value, grads))
}

/// `a += b` for contiguous f32 tensors of the same size.
struct AddAssign;

impl candle_core::InplaceOp2 for AddAssign {
    fn name(&self) -> &'static str {
        "lecr-add-assign"
    }
    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        let a = match (s1, l1.contiguous_offsets()) {
            (candle_core::CpuStorage::F32(v), Some((x, y))) => &mut v[x..y],
            _ => candle_core::bail!("add-assign: the sum must be contiguous f32"),
        };
        let b = crate::kernels::f32_slice(s2, l2, "add-assign")?;
        if a.len() != b.len() {
            candle_core::bail!("add-assign: sizes differ ({} and {})", a.len(), b.len());
        }
        a.par_chunks_mut(1 << 14)
            .zip(b.par_chunks(1 << 14))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x += y));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{Arch, EncoderConfig};

    fn tiny_model(seed: u64) -> (SentenceModel, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut vocab = serde_json::Map::new();
        for (i, w) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]"].iter().enumerate() {
            vocab.insert(w.to_string(), serde_json::json!(i));
        }
        for i in 0..40 {
            vocab.insert(format!("w{i}"), serde_json::json!(4 + i));
        }
        let tok = serde_json::json!({
            "version": "1.0",
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [],
                "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                                   "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        });
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, tok.to_string()).unwrap();
        let cfg = EncoderConfig::tiny(Arch::Bert, 44);
        (SentenceModel::random(&cfg, &path, 32, seed).unwrap(), dir)
    }

    /// Sequences of different lengths (so padding matters), `2n` of them.
    fn batch(n: usize) -> Vec<Vec<u32>> {
        (0..2 * n)
            .map(|i| {
                let len = 3 + (i * 7) % 9;
                (0..len)
                    .map(|j| 4 + ((i * 5 + j * 3) % 40) as u32)
                    .collect()
            })
            .collect()
    }

    /// The one-pass loss of `2n` embeddings (topics, then contents).
    fn loss_of(emb: &Tensor, n: usize, scale: &Var) -> Tensor {
        let (t, c) = (emb.narrow(0, 0, n).unwrap(), emb.narrow(0, n, n).unwrap());
        info_nce(&t, &c, scale.as_tensor(), 0.1).unwrap()
    }

    /// Largest difference relative to the larger gradient, with a floor: some gradients are
    /// zero in exact arithmetic (e.g. the key biases: softmax ignores a shift shared by all
    /// keys) and only rounding noise of 1e-12 is left in them.
    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        crate::kernels::max_diff(a, b) / scale.max(1e-3)
    }

    /// Without dropout, the chunked gradients equal those of one pass over the whole batch.
    #[test]
    fn chunked_gradients_equal_the_whole_batch_gradients() {
        let (mut model, _d) = tiny_model(3);
        model.set_dropout(0.0);
        let n = 6;
        let ids = batch(n);
        let scale = Var::new(&[2.5f32], &model.device).unwrap();
        let emb = model.forward_ids(&ids, None, true).unwrap();
        let loss = loss_of(&emb, n, &scale);
        let want = loss.backward().unwrap();
        for chunk in [1, 5, 12] {
            let (value, got) =
                info_nce_grad_cache(&model, &ids, n, &scale, 0.1, chunk, None).unwrap();
            assert!((value - loss.to_scalar::<f32>().unwrap()).abs() < 1e-5);
            let mut vars = model.vars();
            vars.push(scale.clone());
            for v in &vars {
                let (a, b) = (got.get(v).unwrap(), want.get(v).unwrap());
                let d = max_rel_diff(a, b);
                assert!(
                    d < 1e-4,
                    "chunk {chunk}: gradient differs by {d} (relative)"
                );
            }
        }
    }

    /// With dropout, the second pass replays the first pass's masks: the gradients equal those
    /// of one graph over the same chunked forward passes, and the dropout stream ends where a
    /// single pass would leave it.
    #[test]
    fn recomputation_replays_the_dropout_masks() {
        let (mut model, _d) = tiny_model(4);
        model.set_dropout(0.2);
        let n = 5;
        let ids = batch(n);
        let pad_to = ids.iter().map(Vec::len).max();
        let scale = Var::new(&[2.0f32], &model.device).unwrap();
        let chunk = 4;

        model.encoder.dropout().reseed(77);
        let parts: Vec<Tensor> = ids
            .chunks(chunk)
            .map(|c| model.forward_ids(c, pad_to, true).unwrap())
            .collect();
        let after_reference = model.encoder.dropout().snapshot();
        let emb = Tensor::cat(&parts, 0).unwrap();
        let want = loss_of(&emb, n, &scale).backward().unwrap();

        model.encoder.dropout().reseed(77);
        let (_, got) = info_nce_grad_cache(&model, &ids, n, &scale, 0.1, chunk, None).unwrap();
        for v in model.vars() {
            let d = max_rel_diff(got.get(&v).unwrap(), want.get(&v).unwrap());
            assert!(d < 1e-4, "gradient differs by {d} (relative)");
        }
        use rand::RngCore;
        let (mut a, mut b) = (model.encoder.dropout().snapshot(), after_reference);
        assert_eq!(
            a.next_u64(),
            b.next_u64(),
            "the dropout stream ends in step"
        );
    }
}

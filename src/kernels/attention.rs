//! Inference-only self-attention core: for each (batch item, head), scores of every query
//! against the unmasked keys, softmax, and the weighted sum of values, in one task. Replaces a
//! batched matrix product per (item, head) — hundreds of tiny products per layer whose dispatch
//! cost more than their arithmetic — and skips padded queries, whose rows no token reads.
//! Training keeps the differentiable path (matmul, masked softmax, matmul).

use super::{f32_slice, math};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct AttentionInfer {
    /// B × L, 1 for tokens and 0 for padding.
    mask: Vec<f32>,
    scale: f32,
}

simd_fn! {
    /// One head: q, k, v and out are L × dh; `dims` is (dh, scale).
    fn head(q: &[f32], k: &[f32], v: &[f32], keep: &[f32], dims: (usize, f32), scores: &mut [f32], out: &mut [f32]) {
        let (dh, scale) = dims;
        let l = keep.len();
        for i in 0..l {
            if keep[i] == 0.0 {
                continue;
            }
            let qi = &q[i * dh..(i + 1) * dh];
            let mut max = f32::NEG_INFINITY;
            for j in 0..l {
                if keep[j] != 0.0 {
                    let s = math::dot(qi, &k[j * dh..(j + 1) * dh]) * scale;
                    scores[j] = s;
                    max = max.max(s);
                }
            }
            let mut sum = 0f32;
            for j in 0..l {
                let p = if keep[j] != 0.0 { math::exp(scores[j] - max) } else { 0.0 };
                scores[j] = p;
                sum += p;
            }
            let inv = 1.0 / sum;
            let oi = &mut out[i * dh..(i + 1) * dh];
            for j in 0..l {
                let p = scores[j] * inv;
                if p != 0.0 {
                    for (o, &vv) in oi.iter_mut().zip(&v[j * dh..(j + 1) * dh]) {
                        *o += p * vv;
                    }
                }
            }
        }
    }
}

impl CustomOp3 for AttentionInfer {
    fn name(&self) -> &'static str {
        "lecr-attention-infer"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = f32_slice(s1, l1, self.name())?;
        let k = f32_slice(s2, l2, self.name())?;
        let v = f32_slice(s3, l3, self.name())?;
        let (_, heads, l, dh) = l1.shape().dims4()?;
        let mut out = vec![0f32; q.len()];
        let per_head = l * dh;
        out.par_chunks_mut(per_head).enumerate().for_each_init(
            || vec![0f32; l],
            |scores, (bh, o)| {
                let item = bh / heads;
                let r = bh * per_head..(bh + 1) * per_head;
                let keep = &self.mask[item * l..(item + 1) * l];
                head(
                    &q[r.clone()],
                    &k[r.clone()],
                    &v[r],
                    keep,
                    (dh, self.scale),
                    scores,
                    o,
                );
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// softmax(scale · q kᵀ over unmasked keys) · v for q, k, v of shape B × heads × L × dh;
/// rows of padded queries are left zero. No backward pass.
pub fn attention_infer(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let op = AttentionInfer {
        mask: mask.flatten_all()?.to_vec1::<f32>()?,
        scale: scale as f32,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_the_differentiable_path_on_token_rows() {
        let d = Device::Cpu;
        let (b, h, l, dh) = (3, 4, 9, 16);
        let q = Tensor::randn(0f32, 1.0, (b, h, l, dh), &d).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, h, l, dh), &d).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, h, l, dh), &d).unwrap();
        let lens = [9usize, 5, 1];
        let mask: Vec<f32> = lens
            .iter()
            .flat_map(|&n| (0..l).map(move |i| if i < n { 1.0 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (b, l), &d).unwrap();
        let scale = 0.25;
        let scores = q.matmul(&k.t().unwrap()).unwrap();
        let w4 = super::super::masked_softmax(&scores, &mask, scale)
            .unwrap()
            .matmul(&v)
            .unwrap();
        let got = super::attention_infer(&q, &k, &v, &mask, scale).unwrap();
        for (bi, &n) in lens.iter().enumerate() {
            let a = w4.get(bi).unwrap().narrow(1, 0, n).unwrap();
            let g = got.get(bi).unwrap().narrow(1, 0, n).unwrap();
            let diff = (a - g)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "item {bi}: {diff}");
        }
    }
}

//! Softmax over the last dimension, with a backward pass; and the attention variant that
//! fuses the score scaling and the key padding mask into the same sweep.

use super::{f32_slice, for_rows, math};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

struct Softmax;
struct SoftmaxBwd {
    scale: f32,
}
/// softmax(scale · x) over keys whose mask is 1; masked keys get probability 0.
struct MaskedSoftmax {
    scale: f32,
}

simd_fn! {
    /// y = softmax(scale·x) over the entries where `keep` (all when None); others 0.
    fn softmax_row(x: &[f32], keep: Option<&[f32]>, scale: f32, y: &mut [f32]) {
        let max = match keep {
            None => math::max(x),
            Some(k) => x
                .iter()
                .zip(k)
                .filter(|(_, &m)| m != 0.0)
                .map(|(&v, _)| v)
                .fold(f32::NEG_INFINITY, f32::max),
        } * scale;
        for (o, &v) in y.iter_mut().zip(x) {
            *o = math::exp(v * scale - max);
        }
        if let Some(k) = keep {
            for (o, &m) in y.iter_mut().zip(k) {
                *o *= m;
            }
        }
        let inv = 1.0 / math::sum(y);
        y.iter_mut().for_each(|o| *o *= inv);
    }
}

simd_fn! {
    /// dx = scale · y ⊙ (g − Σ g⊙y)
    fn softmax_bwd_row(y: &[f32], g: &[f32], scale: f32, dx: &mut [f32]) {
        let d = math::dot(y, g);
        for ((o, &a), &b) in dx.iter_mut().zip(y).zip(g) {
            *o = scale * a * (b - d);
        }
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "lecr-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let dim = l.dims().last().copied().unwrap_or(1);
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, dim, |i, y| {
            softmax_row(&x[i * dim..(i + 1) * dim], None, 1.0, y)
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(
            &grad.contiguous()?,
            &SoftmaxBwd { scale: 1.0 },
        )?))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "lecr-masked-softmax"
    }
    /// `x`: B × heads × L × L scores; `mask`: B × L (1 = token, 0 = padding).
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let mask = f32_slice(s2, l2, self.name())?;
        let dims = l1.dims();
        let dim = dims[dims.len() - 1];
        let per_batch = x.len() / dims[0].max(1) / dim.max(1); // rows per batch item
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, dim, |i, y| {
            let b = i / per_batch;
            let keep = &mask[b * dim..(b + 1) * dim];
            softmax_row(&x[i * dim..(i + 1) * dim], Some(keep), self.scale, y)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(
        &self,
        _x: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd { scale: self.scale })?;
        Ok((Some(dx), None))
    }
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "lecr-softmax-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let dim = l1.dims().last().copied().unwrap_or(1);
        let mut out = vec![0f32; y.len()];
        for_rows(&mut out, dim, |i, dx| {
            let r = i * dim..(i + 1) * dim;
            softmax_bwd_row(&y[r.clone()], &g[r], self.scale, dx)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dimension (f32, CPU), differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

/// Attention probabilities: softmax(scale · scores) over unmasked keys, differentiable in
/// `scores`. `scores` is B × heads × Lq × L, `mask` B × L with 1 for tokens, 0 for padding.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, _, _, l) = scores.dims4()?;
    if mask.dims() != [b, l] {
        candle_core::bail!(
            "masked_softmax: mask {:?} does not match scores {:?}",
            mask.dims(),
            scores.dims()
        );
    }
    scores.contiguous()?.apply_op2(
        &mask.contiguous()?,
        MaskedSoftmax {
            scale: scale as f32,
        },
    )
}

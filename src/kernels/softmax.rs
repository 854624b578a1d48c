//! Softmax over the last dimension, with a backward pass.

use super::{f32_slice, for_rows, math};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

struct Softmax;
struct SoftmaxBwd;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "lecr-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let dim = l.dims().last().copied().unwrap_or(1);
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, dim, |i, y| {
            let xr = &x[i * dim..(i + 1) * dim];
            let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (o, &v) in y.iter_mut().zip(xr) {
                *o = math::exp(v - max);
                sum += *o;
            }
            let inv = 1.0 / sum;
            y.iter_mut().for_each(|o| *o *= inv);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd)?))
    }
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "lecr-softmax-bwd"
    }
    /// dx = y ⊙ (g − Σ g⊙y), row by row.
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
            let (yr, gr) = (&y[i * dim..(i + 1) * dim], &g[i * dim..(i + 1) * dim]);
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for ((o, &a), &b) in dx.iter_mut().zip(yr).zip(gr) {
                *o = a * (b - dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dimension (f32, CPU), differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

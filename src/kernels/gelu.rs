//! GELU with the exact (erf) form used by BERT, with a backward pass.

use super::{f32_slice, for_rows, math};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

struct Gelu;
struct GeluBwd;

const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "lecr-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let mut out = super::zeroed(x.len());
        let dim = 4096.min(x.len().max(1));
        for_rows(&mut out, dim, |i, y| {
            gelu_block(&x[i * dim..i * dim + y.len()], y)
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluBwd)?))
    }
}

simd_fn! {
    fn gelu_block(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = 0.5 * v * (1.0 + math::erf(v * INV_SQRT2));
        }
    }
}

simd_fn! {
    /// GELU of a block, in place (the fused inference dense layer).
    pub(crate) fn gelu_in_place(y: &mut [f32]) {
        for o in y.iter_mut() {
            let v = *o;
            *o = 0.5 * v * (1.0 + math::erf(v * INV_SQRT2));
        }
    }
}

simd_fn! {
    /// dx = g · (Φ(x) + x φ(x))
    fn gelu_bwd_block(x: &[f32], g: &[f32], dx: &mut [f32]) {
        for ((d, &v), &gg) in dx.iter_mut().zip(x).zip(g) {
            *d = gg * (0.5 * (1.0 + math::erf(v * INV_SQRT2))
                + v * INV_SQRT_2PI * math::exp(-0.5 * v * v));
        }
    }
}

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "lecr-gelu-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let mut out = super::zeroed(x.len());
        let dim = 4096.min(x.len().max(1));
        for_rows(&mut out, dim, |i, dx| {
            let r = i * dim..i * dim + dx.len();
            gelu_bwd_block(&x[r.clone()], &g[r], dx)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// GELU (erf form), differentiable.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

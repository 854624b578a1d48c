//! Layer normalisation over the last dimension with learnable scale and shift, with a backward
//! pass that yields the gradients of the input, the scale and the shift in one sweep.

use super::{f32_slice, math};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

struct LayerNorm {
    eps: f32,
}
struct LayerNormBwd {
    eps: f32,
}

#[inline(always)]
fn stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = math::sum(x) / n;
    // Two-pass variance: Σ(x−mean)² = Σx² − n·mean², computed stably as a dot of centred values.
    let mut acc = [0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for k in 0..16 {
            let d = c[k] - mean;
            acc[k] += d * d;
        }
    }
    let var = (acc.iter().sum::<f32>()
        + it.remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum::<f32>())
        / n;
    (mean, 1.0 / (var + eps).sqrt())
}

simd_fn! {
    fn ln_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
        let (mean, rstd) = stats(x, eps);
        for k in 0..y.len() {
            y[k] = (x[k] - mean) * rstd * gamma[k] + beta[k];
        }
    }
}

simd_fn! {
    /// dx of one row, and its contribution to dgamma and dbeta.
    fn ln_bwd_row(x: &[f32], g: &[f32], gamma: &[f32], eps: f32, d: &mut [f32], dg: &mut [f32], db: &mut [f32]) {
        let h = x.len();
        let (mean, rstd) = stats(x, eps);
        let (mut s1, mut s2) = ([0f32; 16], [0f32; 16]);
        for k in 0..h {
            let xhat = (x[k] - mean) * rstd;
            let gg = g[k] * gamma[k];
            s1[k % 16] += gg;
            s2[k % 16] += gg * xhat;
            dg[k] += g[k] * xhat;
            db[k] += g[k];
        }
        let (m1, m2) = (s1.iter().sum::<f32>() / h as f32, s2.iter().sum::<f32>() / h as f32);
        for k in 0..h {
            let xhat = (x[k] - mean) * rstd;
            d[k] = rstd * (g[k] * gamma[k] - m1 - xhat * m2);
        }
    }
}

simd_fn! {
    /// y = layer_norm(x + r): the residual sum and the normalisation in one pass per row.
    fn add_ln_row(x: &[f32], r: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
        for ((y, a), b) in y.iter_mut().zip(x).zip(r) {
            *y = a + b;
        }
        let (mean, rstd) = stats(y, eps);
        for k in 0..y.len() {
            y[k] = (y[k] - mean) * rstd * gamma[k] + beta[k];
        }
    }
}

/// Inference-only `layer_norm(x + residual)`.
struct AddLayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl candle_core::CustomOp2 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "lecr-add-layer-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let r = f32_slice(s2, l2, self.name())?;
        let h = self.gamma.len();
        if x.len() != r.len() || h == 0 || x.len() % h != 0 {
            candle_core::bail!("add + layer norm: shapes differ");
        }
        let mut out = super::zeroed(x.len());
        super::for_rows(&mut out, h, |i, y| {
            let at = i * h..(i + 1) * h;
            add_ln_row(&x[at.clone()], &r[at], &self.gamma, &self.beta, self.eps, y)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `layer_norm(x + residual)` in one pass, without a backward pass (inference): saves the
/// separate residual sum and its output buffer.
pub fn add_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let op = AddLayerNorm {
        gamma: gamma.to_vec1::<f32>()?,
        beta: beta.to_vec1::<f32>()?,
        eps: eps as f32,
    };
    x.contiguous()?
        .apply_op2_no_bwd(&residual.contiguous()?, &op)
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "lecr-layer-norm"
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
        let x = f32_slice(s1, l1, self.name())?;
        let gamma = f32_slice(s2, l2, self.name())?;
        let beta = f32_slice(s3, l3, self.name())?;
        let h = gamma.len();
        let mut out = super::zeroed(x.len());
        super::for_rows(&mut out, h, |i, y| {
            ln_row(&x[i * h..(i + 1) * h], gamma, beta, self.eps, y)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = gamma.dim(0)?;
        let n = x.elem_count() / h;
        let all =
            x.apply_op3_no_bwd(gamma, &grad.contiguous()?, &LayerNormBwd { eps: self.eps })?;
        let dx = all.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = all.narrow(0, n, 1)?.reshape(h)?;
        let dbeta = all.narrow(0, n + 1, 1)?.reshape(h)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "lecr-layer-norm-bwd"
    }
    /// Output rows: n rows of dx, then dgamma, then dbeta.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let gamma = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        let h = gamma.len();
        let n = x.len() / h;
        let mut out = vec![0f32; (n + 2) * h];
        let (dx, params) = out.split_at_mut(n * h);
        let per = (8192 / h).max(1);
        let row = |i: usize, d: &mut [f32], dg: &mut [f32], db: &mut [f32]| {
            let r = i * h..(i + 1) * h;
            ln_bwd_row(&x[r.clone()], &g[r], gamma, self.eps, d, dg, db)
        };
        // Partial sums per fixed chunk, added in chunk order: bitwise reproducible runs.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(per * h)
            .enumerate()
            .map(|(c, chunk)| {
                let (mut dg, mut db) = (vec![0f32; h], vec![0f32; h]);
                for (j, d) in chunk.chunks_mut(h).enumerate() {
                    row(c * per + j, d, &mut dg, &mut db);
                }
                (dg, db)
            })
            .collect();
        let (mut dg, mut db) = (vec![0f32; h], vec![0f32; h]);
        for (a, b) in &partials {
            dg.iter_mut().zip(a).for_each(|(x, y)| *x += y);
            db.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        params[..h].copy_from_slice(&dg);
        params[h..].copy_from_slice(&db);
        Ok((CpuStorage::F32(out), Shape::from((n + 2, h))))
    }
}

/// Layer norm over the last dimension: `(x − mean) / sqrt(var + eps) · gamma + beta`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let h = x.dim(D::Minus1)?;
    if gamma.dims() != [h] || beta.dims() != [h] {
        candle_core::bail!(
            "layer_norm: gamma {:?} / beta {:?} do not match the last dimension {h}",
            gamma.dims(),
            beta.dims()
        );
    }
    x.contiguous()?
        .apply_op3(gamma, beta, LayerNorm { eps: eps as f32 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn add_then_normalise_equals_the_two_ops() {
        use candle_core::{Device, Tensor};
        let d = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (5, 7, 48), &d).unwrap();
        let r = Tensor::randn(0f32, 2.0, (5, 7, 48), &d).unwrap();
        let g = Tensor::randn(1f32, 0.1, 48, &d).unwrap();
        let b = Tensor::randn(0f32, 0.1, 48, &d).unwrap();
        let want = super::super::layer_norm(&(&x + &r).unwrap(), &g, &b, 1e-12).unwrap();
        let got = super::add_layer_norm(&x, &r, &g, &b, 1e-12).unwrap();
        let diff = super::super::max_diff(&want, &got);
        assert!(diff < 1e-5, "{diff}");
    }
}

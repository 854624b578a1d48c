//! The candle operations that run the bf16 products in the encoder (no backward pass).

use super::{product, up_gelu, Bf16Acts, Bf16Kernel, PackedBf16};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use std::sync::Arc;

fn bias_vec(b: Option<&Tensor>) -> candle_core::Result<Option<Vec<f32>>> {
    b.map(|b| b.to_vec1::<f32>()).transpose()
}

/// The inference dense layer with bf16 weights: `x` is rounded to bf16 per product, multiplied
/// by `w` with f32 sums, biased (and passed through GELU when `gelu`). No backward pass.
pub fn linear_bf16(
    x: &Tensor,
    w: &Arc<PackedBf16>,
    bias: Option<&Tensor>,
    gelu: bool,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&LinearBf16 {
        w: w.clone(),
        bias: bias_vec(bias)?,
        gelu,
    })
}

struct LinearBf16 {
    w: Arc<PackedBf16>,
    bias: Option<Vec<f32>>,
    gelu: bool,
}

impl CustomOp1 for LinearBf16 {
    fn name(&self) -> &'static str {
        "lecr-linear-bf16"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = crate::kernels::f32_slice(s, l, self.name())?;
        let dims = l.dims();
        let in_dim = *dims.last().unwrap_or(&0);
        if in_dim != self.w.in_dim {
            candle_core::bail!(
                "bf16 linear: input has {in_dim} features, the layer expects {}",
                self.w.in_dim
            );
        }
        let acts = Bf16Acts::convert(x, in_dim);
        let mut y = product(&acts, &self.w, self.bias.as_deref(), Bf16Kernel::detect());
        if self.gelu {
            let dim = 4096.min(y.len().max(1));
            crate::kernels::for_rows(&mut y, dim, |_, r| crate::kernels::gelu::gelu_in_place(r));
        }
        let mut out = dims.to_vec();
        *out.last_mut().expect("non-empty dims") = self.w.out_dim;
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
}

/// `down(gelu(up(x)))` with bf16 weights; the intermediate activations go straight from each
/// task's f32 scratch to bf16. No backward pass.
pub fn ffn_bf16(
    x: &Tensor,
    up: (&Arc<PackedBf16>, Option<&Tensor>),
    down: (&Arc<PackedBf16>, Option<&Tensor>),
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&FfnBf16 {
        up: up.0.clone(),
        up_bias: bias_vec(up.1)?,
        down: down.0.clone(),
        down_bias: bias_vec(down.1)?,
    })
}

struct FfnBf16 {
    up: Arc<PackedBf16>,
    up_bias: Option<Vec<f32>>,
    down: Arc<PackedBf16>,
    down_bias: Option<Vec<f32>>,
}

impl CustomOp1 for FfnBf16 {
    fn name(&self) -> &'static str {
        "lecr-ffn-bf16"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = crate::kernels::f32_slice(s, l, self.name())?;
        let dims = l.dims();
        if dims.last() != Some(&self.up.in_dim) || self.up.out_dim != self.down.in_dim {
            candle_core::bail!("bf16 ffn: shapes do not chain ({dims:?})");
        }
        let kernel = Bf16Kernel::detect();
        let acts = Bf16Acts::convert(x, self.up.in_dim);
        let mid = up_gelu(&acts, &self.up, self.up_bias.as_deref(), kernel);
        let y = product(&mid, &self.down, self.down_bias.as_deref(), kernel);
        let mut out = dims.to_vec();
        *out.last_mut().expect("non-empty dims") = self.down.out_dim;
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
}

//! The candle operations that run the int8 products in the encoder (no backward pass).

use super::{product, up_gelu_quantized, Int8Kernel, PackedInt8, QuantizedActs};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use std::sync::Arc;

/// `down(gelu(up(x)))` for int8 layers (see [`up_gelu_quantized`]). No backward pass.
pub fn ffn_int8(
    x: &Tensor,
    up: (&Arc<PackedInt8>, Option<&Tensor>),
    down: (&Arc<PackedInt8>, Option<&Tensor>),
) -> candle_core::Result<Tensor> {
    let vec = |b: Option<&Tensor>| b.map(|b| b.to_vec1::<f32>()).transpose();
    x.contiguous()?.apply_op1_no_bwd(&FfnInt8 {
        up: up.0.clone(),
        up_bias: vec(up.1)?,
        down: down.0.clone(),
        down_bias: vec(down.1)?,
    })
}

struct FfnInt8 {
    up: Arc<PackedInt8>,
    up_bias: Option<Vec<f32>>,
    down: Arc<PackedInt8>,
    down_bias: Option<Vec<f32>>,
}

impl CustomOp1 for FfnInt8 {
    fn name(&self) -> &'static str {
        "lecr-ffn-int8"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = crate::kernels::f32_slice(s, l, self.name())?;
        let dims = l.dims();
        if dims.last() != Some(&self.up.in_dim) || self.up.out_dim != self.down.in_dim {
            candle_core::bail!("int8 ffn: shapes do not chain ({dims:?})");
        }
        let kernel = Int8Kernel::detect();
        let acts = QuantizedActs::for_weight(x, &self.up);
        let mid = up_gelu_quantized(&acts, &self.up, self.up_bias.as_deref(), &self.down, kernel);
        let y = product(&mid, &self.down, self.down_bias.as_deref(), kernel);
        let mut out = dims.to_vec();
        *out.last_mut().expect("non-empty dims") = self.down.out_dim;
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
}

/// The inference dense layer with int8 weights: `x` is quantized per row, multiplied by `w`,
/// scaled back, biased (and passed through GELU when `gelu`). No backward pass.
pub fn linear_int8(
    x: &Tensor,
    w: &Arc<PackedInt8>,
    bias: Option<&Tensor>,
    gelu: bool,
) -> candle_core::Result<Tensor> {
    let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
    x.contiguous()?.apply_op1_no_bwd(&LinearInt8 {
        w: w.clone(),
        bias,
        gelu,
    })
}

struct LinearInt8 {
    w: Arc<PackedInt8>,
    bias: Option<Vec<f32>>,
    gelu: bool,
}

impl CustomOp1 for LinearInt8 {
    fn name(&self) -> &'static str {
        "lecr-linear-int8"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = crate::kernels::f32_slice(s, l, self.name())?;
        let dims = l.dims();
        let in_dim = *dims.last().unwrap_or(&0);
        if in_dim != self.w.in_dim {
            candle_core::bail!(
                "int8 linear: input has {in_dim} features, the layer expects {}",
                self.w.in_dim
            );
        }
        let kernel = Int8Kernel::detect();
        let acts = QuantizedActs::for_weight(x, &self.w);
        let mut y = product(&acts, &self.w, self.bias.as_deref(), kernel);
        if self.gelu {
            let dim = 4096.min(y.len().max(1));
            crate::kernels::for_rows(&mut y, dim, |_, r| crate::kernels::gelu::gelu_in_place(r));
        }
        let mut out = dims.to_vec();
        *out.last_mut().expect("non-empty dims") = self.w.out_dim;
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
}

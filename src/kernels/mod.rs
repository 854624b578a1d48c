//! Fused CPU kernels with forward and backward passes, written because candle's own fused
//! `layer_norm` and `softmax_last_dim` have no backward (gradients silently stop) and its
//! element-wise GELU is slow on CPU. Each op is f32, contiguous, multi-threaded over rows with
//! rayon, and checked against a composition of candle primitives in the tests.

pub mod dropout;
pub mod gelu;
pub mod layer_norm;
pub mod math;
pub mod softmax;

pub use dropout::Dropout;
pub use gelu::gelu;
pub use layer_norm::layer_norm;
pub use softmax::softmax_last_dim;

use candle_core::{bail, CpuStorage, Layout, Result};
use rayon::prelude::*;

/// The contiguous f32 data behind a storage and layout.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!("{op}: only f32 tensors are supported"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Runs `f(row_index, out_row)` over the rows of `out` (each `dim` long; the last one may be
/// shorter), in parallel when big.
pub(crate) fn for_rows(out: &mut [f32], dim: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if dim == 0 {
        return;
    }
    let rows = out.len() / dim;
    // About 16k elements per task keeps scheduling overhead small.
    let per = (16_384 / dim).max(1);
    if rows <= per {
        for (i, r) in out.chunks_mut(dim).enumerate() {
            f(i, r);
        }
        return;
    }
    out.par_chunks_mut(per * dim)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, r) in chunk.chunks_mut(dim).enumerate() {
                f(c * per + j, r);
            }
        });
}

//! The portable path: the reference the vector kernel is tested against.

use super::{from_bf16, to_bf16, Tile};
use std::mem::MaybeUninit;

/// `x` rounded into the front of `out`.
pub(super) fn convert_row(x: &[f32], out: &mut [u16]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = to_bf16(v);
    }
}

/// Plain loops over the packed weights: each product of two bf16 values is exact in f32 and
/// added with one rounding, the pairs in input order.
pub(super) fn task(t: &Tile, out: &mut [MaybeUninit<f32>]) {
    let (a, w) = (t.acts, t.w);
    let n = w.out_dim;
    let mut row = vec![0f32; a.k2];
    for i in 0..t.rows {
        let r = t.r0 + i;
        for (f, &b) in row.iter_mut().zip(&a.data[r * a.k2..(r + 1) * a.k2]) {
            *f = from_bf16(b);
        }
        for c in 0..n {
            let mut acc = 0f32;
            for (k, &x) in row.iter().enumerate() {
                acc = x.mul_add(from_bf16(w.at(c, k)), acc);
            }
            out[i * n + c].write(acc + t.bias.map_or(0.0, |b| b[c]));
        }
    }
}

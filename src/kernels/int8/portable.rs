//! The portable path: plain integer loops, the reference every vector kernel equals.

use super::{RowQuant, Tile};
use std::mem::MaybeUninit;

simd_fn! {
    /// One row to int8 over its own range (which always includes 0, so zeros stay exact);
    /// rounds half to even, as the vector conversion does.
    pub(super) fn quantize_row_into(x: &[f32], q: &mut [i8], out: &mut RowQuant) {
        let (lo, hi) = x
            .iter()
            .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let scale = (hi - lo) / 255.0;
        if !(scale > 0.0 && scale.is_finite()) {
            *out = RowQuant::default();
            return;
        }
        let inv = 1.0 / scale;
        let zero = (-128.0 - lo * inv).round_ties_even().clamp(-128.0, 127.0);
        let mut sum = 0i32;
        for (q, &v) in q.iter_mut().zip(x) {
            let r = ((v * inv).round_ties_even() + zero).clamp(-128.0, 127.0) as i32;
            *q = r as i8;
            sum += r;
        }
        *out = RowQuant {
            scale,
            zero: zero as i32,
            sum,
        };
    }
}

simd_fn! {
    /// `Σ x·w` of two int8 rows, exact in i32 (integer sums vectorise, e.g. with AVX2).
    fn dot_i8(x: &[i8], w: &[i8], out: &mut i32) {
        *out = x.iter().zip(w).map(|(&a, &b)| a as i32 * b as i32).sum();
    }
}

/// The portable kernel: plain int8 dot products over row-major weights. Computes the same
/// integers as the VNNI kernel (`Σ q_x q_w`), so both give the same results.
pub(super) fn task(t: &Tile, out: &mut [MaybeUninit<f32>]) {
    let (a, w) = (t.acts, t.w);
    let (n, k) = (w.out_dim, w.in_dim);
    let rows = w.row_major.get_or_init(|| w.unpack().values);
    for i in 0..t.rows {
        let r = t.r0 + i;
        let x = &a.data[r * a.k4..r * a.k4 + k];
        for c in 0..n {
            let mut acc = 0i32;
            dot_i8(x, &rows[c * k..(c + 1) * k], &mut acc);
            let acc = acc - a.zeros[r] * w.wsum[c];
            let v = acc as f32 * (a.scales[r] * w.scales[c]);
            out[i * n + c].write(v + t.bias.map_or(0.0, |b| b[c]));
        }
    }
}

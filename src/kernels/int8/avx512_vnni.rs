//! The AVX-512 VNNI path (`vpdpbusd` on zmm), and the AVX-512 activation quantization.

use super::{RowQuant, Tile, MR, NR};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Loads 16 inputs from `at` (fewer at the end of the row, the rest zero), times `mul`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load(x: &[f32], mul: Option<&[f32]>, at: usize, mask: __mmask16) -> __m512 {
    let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(at));
    match mul {
        Some(m) => _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, m.as_ptr().add(at))),
        None => v,
    }
}

fn tail_mask(n: usize, at: usize) -> __mmask16 {
    let left = n - at;
    if left >= 16 {
        0xffff
    } else {
        (1u16 << left) - 1
    }
}

/// The vector form of `super::quantize_row_into` (same rounding, same results).
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_row(x: &[f32], mul: Option<&[f32]>, q: &mut [i8]) -> RowQuant {
    let n = x.len();
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut at = 0;
    while at < n {
        let v = load(x, mul, at, tail_mask(n, at));
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
        at += 16;
    }
    let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    let scale = (hi - lo) / 255.0;
    if !(scale > 0.0 && scale.is_finite()) {
        return RowQuant::default();
    }
    let inv = 1.0 / scale;
    let zero = (-128.0 - lo * inv).round_ties_even().clamp(-128.0, 127.0);
    let (vinv, vzero) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zero as i32));
    let mut sum = _mm512_setzero_si512();
    let mut at = 0;
    while at < n {
        let mask = tail_mask(n, at);
        let v = _mm512_mul_ps(load(x, mul, at, mask), vinv);
        // Round half to even (the default rounding mode), shift, saturate to i8.
        let r = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzero);
        let b = _mm512_cvtsepi32_epi8(r);
        _mm_mask_storeu_epi8(q.as_mut_ptr().add(at), mask, b);
        sum = _mm512_add_epi32(sum, _mm512_maskz_mov_epi32(mask, _mm512_cvtepi8_epi32(b)));
        at += 16;
    }
    RowQuant {
        scale,
        zero: zero as i32,
        sum: _mm512_reduce_add_epi32(sum),
    }
}

/// Micro-tiles of `MR` rows × `NB` panels over the task's rows and all panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn task(t: &Tile, out: &mut [MaybeUninit<f32>]) {
    let panels = t.w.out_dim.div_ceil(NR);
    let mut p = 0;
    while p < panels {
        let nb = (panels - p).min(3);
        let mut i = 0;
        while i < t.rows {
            match nb {
                3 => micro::<3>(t, out, i, p),
                2 => micro::<2>(t, out, i, p),
                _ => micro::<1>(t, out, i, p),
            }
            i += MR;
        }
        p += nb;
    }
}

/// Rows `i .. i + MR` of the task × panels `p .. p + NB`, scaled, biased and stored.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn micro<const NB: usize>(t: &Tile, out: &mut [MaybeUninit<f32>], i: usize, p: usize) {
    let (a, w) = (t.acts, t.w);
    let k4 = a.k4;
    let r0 = t.r0 + i;
    // SAFETY (whole body): activations are padded to whole micro-tiles and panels to
    // whole 16-column groups, so every read below stays inside `a.data` / `w.data`;
    // stores are masked to the valid rows and columns of `out`.
    let xa = a.data.as_ptr().add(r0 * k4);
    let wp = w.data.as_ptr().add(p * w.panel_len());
    let mut acc = [[_mm512_setzero_si512(); NB]; MR];
    for g in 0..k4 / 4 {
        let mut wv = [_mm512_setzero_si512(); NB];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_si512(wp.add(j * w.panel_len() + g * NR * 4) as *const _);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let xb = _mm512_set1_epi32((xa.add(r * k4 + g * 4) as *const i32).read_unaligned());
            for (acc, &wv) in row.iter_mut().zip(&wv) {
                *acc = _mm512_dpbusd_epi32(*acc, wv, xb);
            }
        }
    }
    let n = w.out_dim;
    let rows = (t.rows - i).min(MR);
    for (r, row) in acc.iter().enumerate().take(rows) {
        let m = r0 + r;
        let off = _mm512_set1_epi32(a.offsets[m]);
        let zero = _mm512_set1_epi32(a.zeros[m]);
        let xs = _mm512_set1_ps(a.scales[m]);
        let dst = (out.as_mut_ptr() as *mut f32).add((i + r) * n);
        for (j, &acc) in row.iter().enumerate() {
            let c0 = (p + j) * NR;
            let valid = n.saturating_sub(c0).min(NR);
            let mask: __mmask16 = if valid == NR {
                0xffff
            } else {
                (1u16 << valid) - 1
            };
            let s = _mm512_mul_ps(xs, _mm512_loadu_ps(w.scales.as_ptr().add(c0)));
            let corr = _mm512_mullo_epi32(
                zero,
                _mm512_loadu_si512(w.wsum.as_ptr().add(c0) as *const _),
            );
            let acc = _mm512_sub_epi32(acc, _mm512_add_epi32(off, corr));
            let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s);
            if let Some(b) = t.bias {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, b.as_ptr().add(c0)));
            }
            _mm512_mask_storeu_ps(dst.add(c0), mask, v);
        }
    }
}

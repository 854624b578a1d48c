//! The AVX512_BF16 path (`vdpbf16ps` on zmm) and the vector conversion to bf16.

use super::{Tile, MR, NR};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

fn tail_mask(n: usize, at: usize) -> __mmask16 {
    let left = n - at;
    if left >= 16 {
        0xffff
    } else {
        (1u16 << left) - 1
    }
}

/// `x` rounded into the front of `out` (`vcvtneps2bf16`, 16 values at a time).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn convert_row(x: &[f32], out: &mut [u16]) {
    let n = x.len().min(out.len());
    let mut at = 0;
    while at < n {
        let mask = tail_mask(n, at);
        // SAFETY: the masked load and store touch only elements `at .. n` of both slices.
        let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(at));
        let b = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
        _mm256_mask_storeu_epi16(out.as_mut_ptr().add(at) as *mut i16, mask, b);
        at += 16;
    }
}

/// The 32 bf16 lanes of `v` as the type `vdpbf16ps` takes (same bits).
#[inline(always)]
fn as_bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512-bit plain-data vectors; every bit pattern is valid for either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// Micro-tiles of `MR` rows × `NB` panels over the task's rows and all panels.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
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

/// Rows `i .. i + MR` of the task × panels `p .. p + NB`, biased and stored.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
unsafe fn micro<const NB: usize>(t: &Tile, out: &mut [MaybeUninit<f32>], i: usize, p: usize) {
    let (a, w) = (t.acts, t.w);
    let k2 = a.k2;
    let r0 = t.r0 + i;
    // SAFETY (whole body): activations are padded to whole micro-tiles and panels to whole
    // 16-column groups, so every read below stays inside `a.data` / `w.data`; stores are
    // masked to the valid rows and columns of `out`.
    let xa = a.data.as_ptr().add(r0 * k2);
    let wp = w.data.as_ptr().add(p * w.panel_len());
    let mut acc = [[_mm512_setzero_ps(); NB]; MR];
    for g in 0..k2 / 2 {
        let mut wv = [_mm512_setzero_si512(); NB];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_si512(wp.add(j * w.panel_len() + g * NR * 2) as *const _);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let xb = _mm512_set1_epi32((xa.add(r * k2 + g * 2) as *const i32).read_unaligned());
            for (acc, &wv) in row.iter_mut().zip(&wv) {
                *acc = _mm512_dpbf16_ps(*acc, as_bh(wv), as_bh(xb));
            }
        }
    }
    let n = w.out_dim;
    let rows = (t.rows - i).min(MR);
    for (r, row) in acc.iter().enumerate().take(rows) {
        let dst = (out.as_mut_ptr() as *mut f32).add((i + r) * n);
        for (j, &acc) in row.iter().enumerate() {
            let c0 = (p + j) * NR;
            let mask = tail_mask(n, c0.min(n));
            let mut v = acc;
            if let Some(b) = t.bias {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, b.as_ptr().add(c0)));
            }
            _mm512_mask_storeu_ps(dst.add(c0), mask, v);
        }
    }
}

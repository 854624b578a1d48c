//! The AMX path: `tdpbsud` (signed activations × unsigned weights, i32 sums) on the tile
//! registers, driven by `kernels::amx`.
//!
//! The operands are the bytes the AVX-512 VNNI kernel reads (signed `q_x`, the packed weights
//! `q_w + 128`), so the i32 sums are the same integers; the epilogue below is that kernel's,
//! operation for operation, so both give equal floats (a test checks it bit for bit).

use super::{Tile, NR};
use crate::kernels::amx::{self, Operands, TileOp, TILE};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// The task's rows × all columns.
///
/// # Safety
/// The CPU has AMX-TILE, AMX-INT8 and AVX-512 F/BW, and Linux granted the tile state.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn task(t: &Tile, out: &mut [MaybeUninit<f32>]) {
    let (a, w) = (t.acts, t.w);
    if a.k4 == 0 {
        // No inputs: every output is its bias (what the other kernels give too).
        let n = w.out_dim;
        for (i, v) in out.iter_mut().enumerate() {
            *v = MaybeUninit::new(t.bias.map_or(0.0, |b| b[i % n]));
        }
        return;
    }
    // SAFETY: i8 → u8 reinterprets the same bytes; `tdpbsud` reads them as signed.
    let acts = std::slice::from_raw_parts(a.data.as_ptr() as *const u8, a.data.len());
    let ops = Operands {
        acts,
        row_bytes: a.k4,
        r0: t.r0,
        rows: t.rows,
        weights: &w.data,
        panels: w.out_dim.div_ceil(NR),
    };
    amx::run(TileOp::SignedByUnsigned, ops, |tile, i, p| {
        // SAFETY: this function's features are enabled in the caller.
        unsafe { store(t, out, tile, i, p) }
    });
}

/// One accumulator tile (task rows `i .. i + 16`, panel `p`) scaled, biased and stored, with
/// the same operations in the same order as the AVX-512 VNNI kernel's epilogue.
///
/// # Safety
/// AVX-512 F/BW; `m` indexes rows of `a` (padded to whole micro-tiles, so inside its vectors).
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn store(t: &Tile, out: &mut [MaybeUninit<f32>], tile: &[u32], i: usize, p: usize) {
    let (a, w) = (t.acts, t.w);
    let n = w.out_dim;
    let c0 = p * NR;
    let mask = amx::column_mask(n, c0);
    // Per column, loaded once per tile; per row, what the VNNI kernel computes per row.
    let s_w = _mm512_loadu_ps(w.scales.as_ptr().add(c0));
    let wsum = _mm512_loadu_si512(w.wsum.as_ptr().add(c0) as *const _);
    let bias = t
        .bias
        .map(|b| _mm512_maskz_loadu_ps(mask, b.as_ptr().add(c0)));
    for r in 0..(t.rows - i).min(TILE) {
        let m = t.r0 + i + r;
        let off = _mm512_set1_epi32(*a.offsets.get_unchecked(m));
        let zero = _mm512_set1_epi32(*a.zeros.get_unchecked(m));
        let xs = _mm512_set1_ps(*a.scales.get_unchecked(m));
        let acc = _mm512_loadu_si512(tile.as_ptr().add(r * TILE) as *const _);
        let s = _mm512_mul_ps(xs, s_w);
        let corr = _mm512_mullo_epi32(zero, wsum);
        let acc = _mm512_sub_epi32(acc, _mm512_add_epi32(off, corr));
        let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s);
        if let Some(b) = bias {
            v = _mm512_add_ps(v, b);
        }
        let dst = (out.as_mut_ptr() as *mut f32).add((i + r) * n);
        _mm512_mask_storeu_ps(dst.add(c0), mask, v);
    }
}

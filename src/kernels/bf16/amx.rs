//! The AMX path: `tdpbf16ps` (pairs of bf16, f32 sums) on the tile registers, driven by
//! `kernels::amx`. Each tile instruction adds 32 products per output into its f32 sum, in an
//! order of its own, so its sums differ from `vdpbf16ps`'s by f32 rounding only (the products
//! themselves are exact in f32 either way).

use super::{Tile, NR};
use crate::kernels::amx::{self, Operands, TileOp, TILE};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// The task's rows × all columns.
///
/// # Safety
/// The CPU has AMX-TILE, AMX-BF16 and AVX-512 F/BW, and Linux granted the tile state.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn task(t: &Tile, out: &mut [MaybeUninit<f32>]) {
    let (a, w) = (t.acts, t.w);
    let n = w.out_dim;
    if a.k2 == 0 {
        for (i, v) in out.iter_mut().enumerate() {
            *v = MaybeUninit::new(t.bias.map_or(0.0, |b| b[i % n]));
        }
        return;
    }
    // SAFETY: u16 → u8 views the same memory as bytes (little-endian pairs, as the tiles read).
    let bytes = |v: &[u16]| std::slice::from_raw_parts(v.as_ptr() as *const u8, 2 * v.len());
    let ops = Operands {
        acts: bytes(&a.data),
        row_bytes: 2 * a.k2,
        r0: t.r0,
        rows: t.rows,
        weights: bytes(&w.data),
        panels: n.div_ceil(NR),
    };
    amx::run(TileOp::Bf16, ops, |tile, i, p| {
        let c0 = p * NR;
        let mask = amx::column_mask(n, c0);
        // SAFETY: AVX-512 F is enabled for this function; reads and stores stay inside the
        // tile, the bias and the task's rows (masked to the valid columns).
        unsafe {
            let bias = t
                .bias
                .map(|b| _mm512_maskz_loadu_ps(mask, b.as_ptr().add(c0)));
            for r in 0..(t.rows - i).min(TILE) {
                let mut v = _mm512_loadu_ps(tile.as_ptr().add(r * TILE) as *const f32);
                if let Some(b) = bias {
                    v = _mm512_add_ps(v, b);
                }
                let dst = (out.as_mut_ptr() as *mut f32).add((i + r) * n);
                _mm512_mask_storeu_ps(dst.add(c0), mask, v);
            }
        }
    });
}

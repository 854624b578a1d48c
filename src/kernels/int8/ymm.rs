//! The 256-bit micro-kernel shared by the AVX2 and AVX-VNNI paths, written once as a macro.

/// The 256-bit kernels (AVX-VNNI and AVX2), written once. `$prep` turns 32 packed weight bytes
/// into the operand `$dot` takes; `$dot` adds four products `w·x` per i32 lane; `$signed`:
/// whether `$prep` removed the `+128` of the packed weights (so no `128 · Σ q_x` to subtract);
/// `$unsigned_x`: whether `$dot` multiplies `q_x + 128` (so `128 · Σ q_w` is subtracted).
/// Micro-tiles of 4 activation rows × one 16-column panel (two ymm halves): 8 accumulators,
/// which leaves registers for the weights and the broadcast activations.
macro_rules! ymm_kernel {
    (
        $module:ident, $features:literal, signed: $signed:literal, unsigned_x: $unsigned_x:literal,
        |$pw:ident| $prep:expr, |$acc:ident, $w:ident, $x:ident| $dot:expr
    ) => {
        pub(in crate::kernels::int8) mod $module {
            use crate::kernels::int8::{Tile, NR};
            use std::arch::x86_64::*;
            use std::mem::MaybeUninit;

            /// Activation rows per micro-tile (divides `MR`, to which rows are padded).
            const ROWS: usize = 4;

            #[target_feature(enable = $features)]
            pub(in crate::kernels::int8) unsafe fn task(t: &Tile, out: &mut [MaybeUninit<f32>]) {
                let panels = t.w.out_dim.div_ceil(NR);
                for p in 0..panels {
                    let mut i = 0;
                    while i < t.rows {
                        micro(t, out, i, p);
                        i += ROWS;
                    }
                }
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn micro(t: &Tile, out: &mut [MaybeUninit<f32>], i: usize, p: usize) {
                let (a, w) = (t.acts, t.w);
                let k4 = a.k4;
                let r0 = t.r0 + i;
                // SAFETY (whole body): activations are padded to whole `MR`-row tiles (a
                // multiple of ROWS) and panels to 16 columns, so every read stays inside
                // `a.data` / `w.data`; stores go only to valid rows and columns of `out`.
                let xa = a.data.as_ptr().add(r0 * k4);
                let wp = w.data.as_ptr().add(p * w.panel_len());
                let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
                for g in 0..k4 / 4 {
                    let prep = |$pw: __m256i| $prep;
                    let lo = prep(_mm256_loadu_si256(wp.add(g * NR * 4) as *const __m256i));
                    let hi = prep(_mm256_loadu_si256(wp.add(g * NR * 4 + 32) as *const __m256i));
                    for (r, row) in acc.iter_mut().enumerate() {
                        let $x = _mm256_set1_epi32(
                            (xa.add(r * k4 + g * 4) as *const i32).read_unaligned(),
                        );
                        for (acc, &wv) in row.iter_mut().zip(&[lo, hi]) {
                            let ($acc, $w) = (*acc, wv);
                            *acc = $dot;
                        }
                    }
                }
                let n = w.out_dim;
                let rows = (t.rows - i).min(ROWS);
                for (r, row) in acc.iter().enumerate().take(rows) {
                    let m = r0 + r;
                    let off = _mm256_set1_epi32(if $signed { 0 } else { a.offsets[m] });
                    let zero = _mm256_set1_epi32(a.zeros[m] + if $unsigned_x { 128 } else { 0 });
                    let xs = _mm256_set1_ps(a.scales[m]);
                    let dst = (out.as_mut_ptr() as *mut f32).add((i + r) * n);
                    for (h, &acc) in row.iter().enumerate() {
                        let c0 = p * NR + h * 8;
                        if c0 >= n {
                            break;
                        }
                        let s = _mm256_mul_ps(xs, _mm256_loadu_ps(w.scales.as_ptr().add(c0)));
                        let corr = _mm256_mullo_epi32(
                            zero,
                            _mm256_loadu_si256(w.wsum.as_ptr().add(c0) as *const __m256i),
                        );
                        let acc = _mm256_sub_epi32(acc, _mm256_add_epi32(off, corr));
                        let mut v = [0f32; 8];
                        _mm256_storeu_ps(v.as_mut_ptr(), _mm256_mul_ps(_mm256_cvtepi32_ps(acc), s));
                        let valid = (n - c0).min(8);
                        for (j, v) in v.iter().enumerate().take(valid) {
                            let b = t.bias.map_or(0.0, |b| b[c0 + j]);
                            dst.add(c0 + j).write(v + b);
                        }
                    }
                }
            }
        }
    };
}

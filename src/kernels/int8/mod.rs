//! Int8 matrix products for quantized dense layers (`lecr quantize`).
//!
//! Weights are quantized once, symmetric with one scale per output row:
//! `w ≈ s_w[n] · q_w[n, k]`, `q_w ∈ [-127, 127]`. Activations are quantized on the fly, one
//! scale and zero point per input row (per token), covering the row's own range:
//! `x ≈ s_x[m] · (q_x[m, k] − z[m])`, `q_x ∈ [-128, 127]` (asymmetric, because GELU outputs and
//! many hidden features are far from symmetric). The product `Σ_k q_x q_w` is accumulated
//! exactly in i32 and scaled back: `y = s_x s_w · (Σ q_x q_w − z Σ_k q_w) + b`.
//!
//! Kernels, chosen at run time (`LECR_ISA` caps the choice, see `kernels::isa`):
//! - AMX (`tdpbsud` on the tile registers: 16 × 16 outputs × 64 inputs per instruction,
//!   Sapphire Rapids and later; the same packed weights and integers as AVX-512 VNNI);
//! - AVX-512 VNNI (`vpdpbusd` on zmm: 16 lanes × 4 products of u8 × i8 per instruction);
//! - AVX-VNNI (the same instruction on ymm, Alder Lake and later);
//! - AVX2 (`vpmaddubsw` + `vpmaddwd`);
//! - portable integer loops.
//!
//! `vpdpbusd` wants one unsigned operand, so the packed weights are stored as `q_w + 128` and
//! the excess `128 · Σ_k q_x[m, k]` is subtracted from each accumulator. `vpmaddubsw` adds
//! pairs of u8 × i8 products into a saturating i16, which `255 · 128 · 2` would overflow, so
//! the AVX2 kernel multiplies `|q_x|` (≤ 128) by `q_w` with the sign of `q_x` moved onto it
//! (`vpsignb`; ≤ 127): pair sums stay within `2 · 128 · 127 < 2¹⁵`, exact with full 8-bit
//! activations (7-bit activations would save that instruction but cost accuracy: min cosine
//! 0.988 instead of 0.996 on the MiniLM parity texts). Every kernel computes the same
//! integers, so all give equal results.
//!
//! Layout: this file holds the kernel choice, the quantized activations and the one dispatch
//! table ([`run_tile`], [`quantize_row`]); each instruction-set path has its own file
//! (`portable`, `avx2`, `avx_vnni`, `avx512_vnni`, `amx`, the 256-bit micro-kernel shared by the
//! AVX2 and AVX-VNNI paths in `ymm`), the weights and their packing are in `weights`, and
//! the candle operations that run them in `ops`.

use rayon::prelude::*;
use std::mem::MaybeUninit;

mod ops;
mod portable;
mod weights;
#[cfg(target_arch = "x86_64")]
#[macro_use]
mod ymm;
#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512_vnni;
#[cfg(target_arch = "x86_64")]
mod avx_vnni;

pub use ops::{ffn_int8, linear_int8};
pub use weights::{PackedInt8, QuantizedMatrix, WeightBits};

/// Rows of activations per micro-tile.
const MR: usize = 8;
/// Output columns per packed panel (one 512-bit register of i32).
const NR: usize = 16;
/// Rows of activations per parallel task.
const TASK_ROWS: usize = 64;

/// Which kernel runs the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AMX tiles (`tdpbsud`), with the AVX-512 VNNI kernel's epilogue.
    Amx,
    /// AVX-512 VNNI (`vpdpbusd` on zmm).
    Vnni,
    /// AVX-VNNI (`vpdpbusd` on ymm).
    AvxVnni,
    /// AVX2 (`vpsignb`, `vpmaddubsw`, `vpmaddwd`).
    Avx2,
    /// Portable integer loops.
    Scalar,
}

impl Int8Kernel {
    /// The best kernel for the active instruction set (`kernels::isa::active`, checked once).
    /// `LECR_INT8_SCALAR=1` (the older switch) forces the portable one.
    pub fn detect() -> Self {
        static K: std::sync::OnceLock<Int8Kernel> = std::sync::OnceLock::new();
        *K.get_or_init(|| {
            if std::env::var_os("LECR_INT8_SCALAR").is_some_and(|v| v == "1") {
                return Int8Kernel::Scalar;
            }
            Self::best_for(super::isa::active(), super::isa::CpuFeatures::detect())
        })
    }

    /// The best kernel at level `isa` on a CPU with `cpu`.
    pub fn best_for(isa: super::isa::Isa, cpu: super::isa::CpuFeatures) -> Self {
        use super::isa::Isa;
        match isa {
            Isa::Amx if cpu.amx && cpu.avx512 => Int8Kernel::Amx,
            Isa::Amx | Isa::Avx512 if cpu.avx512_vnni => Int8Kernel::Vnni,
            Isa::Amx | Isa::Avx512 | Isa::AvxVnni if cpu.avx_vnni => Int8Kernel::AvxVnni,
            Isa::Amx | Isa::Avx512 | Isa::AvxVnni | Isa::Avx2 if cpu.avx2_fma => Int8Kernel::Avx2,
            _ => Int8Kernel::Scalar,
        }
    }

    /// Every kernel this CPU can run (tests and benchmarks), best first.
    pub fn available() -> Vec<Self> {
        let cpu = super::isa::CpuFeatures::detect();
        let amx = cpu.amx && cpu.avx512 && super::isa::amx_permission().is_ok();
        [
            (amx, Int8Kernel::Amx),
            (cpu.avx512_vnni, Int8Kernel::Vnni),
            (cpu.avx_vnni, Int8Kernel::AvxVnni),
            (cpu.avx2_fma, Int8Kernel::Avx2),
            (true, Int8Kernel::Scalar),
        ]
        .into_iter()
        .filter_map(|(ok, k)| ok.then_some(k))
        .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "AMX",
            Int8Kernel::Vnni => "AVX-512 VNNI",
            Int8Kernel::AvxVnni => "AVX-VNNI",
            Int8Kernel::Avx2 => "AVX2",
            Int8Kernel::Scalar => "portable",
        }
    }
}

/// Activations quantized per row: `rows` padded to whole micro-tiles with zero rows, each row
/// `k4` long (zero-padded).
pub struct QuantizedActs {
    pub rows: usize,
    k4: usize,
    data: Vec<i8>,
    scales: Vec<f32>,
    /// Zero point per row.
    zeros: Vec<i32>,
    /// `128 · Σ_k q[m, k]`: the excess the unsigned weight offset adds to each product.
    offsets: Vec<i32>,
}

impl QuantizedActs {
    /// Quantizes `x` (`rows × cols`, row-major) with one symmetric scale per row, for `w`
    /// (whose smoothing divides the inputs first).
    pub fn for_weight(x: &[f32], w: &PackedInt8) -> Self {
        Self::quantize_mul(x, w.in_dim, w.inv_smooth.as_deref())
    }

    /// Quantizes `x` (`rows × cols`, row-major) with one symmetric scale per row.
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        Self::quantize_mul(x, cols, None)
    }

    /// Like [`quantize`](Self::quantize), multiplying column `k` by `mul[k]` first.
    fn quantize_mul(x: &[f32], cols: usize, mul: Option<&[f32]>) -> Self {
        let rows = x.len() / cols.max(1);
        let k4 = cols.div_ceil(4) * 4;
        Self::build(
            rows,
            k4,
            || (),
            |_, r0, here, out| {
                for i in 0..here {
                    out.put(i, &x[(r0 + i) * cols..(r0 + i + 1) * cols], mul);
                }
            },
        )
    }

    /// Quantized activations for `rows` rows of `k4` inputs, written by parallel tasks of
    /// `TASK_ROWS` rows: `fill(scratch, first_row, rows_here, out)` puts each of its rows.
    fn build<S>(
        rows: usize,
        k4: usize,
        scratch: impl Fn() -> S + Sync + Send,
        fill: impl Fn(&mut S, usize, usize, &mut RowsOut) + Sync + Send,
    ) -> Self {
        let padded = rows.div_ceil(MR) * MR;
        let mut data = super::zeroed::<i8>(padded * k4);
        let mut scales = vec![0f32; padded];
        let mut offsets = vec![0i32; padded];
        let mut zeros = vec![0i32; padded];
        data.par_chunks_mut(TASK_ROWS * k4)
            .zip(scales.par_chunks_mut(TASK_ROWS))
            .zip(offsets.par_chunks_mut(TASK_ROWS))
            .zip(zeros.par_chunks_mut(TASK_ROWS))
            .enumerate()
            .for_each_init(scratch, |sc, (t, (((q, scales), offsets), zeros))| {
                let r0 = t * TASK_ROWS;
                let here = rows.saturating_sub(r0).min(TASK_ROWS);
                if here > 0 {
                    let mut out = RowsOut {
                        q,
                        k4,
                        scales,
                        offsets,
                        zeros,
                    };
                    fill(sc, r0, here, &mut out);
                }
            });
        QuantizedActs {
            rows,
            k4,
            data,
            scales,
            zeros,
            offsets,
        }
    }
}

/// One task's rows of quantized activations, being written.
struct RowsOut<'a> {
    q: &'a mut [i8],
    k4: usize,
    scales: &'a mut [f32],
    offsets: &'a mut [i32],
    zeros: &'a mut [i32],
}

impl RowsOut<'_> {
    /// Quantizes `x` (times `mul`) as this task's row `i`.
    fn put(&mut self, i: usize, x: &[f32], mul: Option<&[f32]>) {
        let at = i * self.k4;
        let rq = quantize_row(x, mul, &mut self.q[at..at + x.len()]);
        self.scales[i] = rq.scale;
        self.offsets[i] = 128 * rq.sum;
        self.zeros[i] = rq.zero;
    }
}

/// How one activation row was quantized.
#[derive(Debug, Clone, Copy, Default)]
struct RowQuant {
    scale: f32,
    zero: i32,
    /// `Σ_k q[k]`.
    sum: i32,
}

fn quantize_row(x: &[f32], mul: Option<&[f32]>, q: &mut [i8]) -> RowQuant {
    #[cfg(target_arch = "x86_64")]
    match super::simd_level() {
        // SAFETY: the CPU has AVX-512 F/BW (checked by `simd_level`).
        4 => return unsafe { avx512_vnni::quantize_row(x, mul, q) },
        // SAFETY: the CPU has AVX2 (checked by `simd_level`).
        3 => return unsafe { avx2::quantize_row(x, mul, q) },
        _ => {}
    }
    let mut out = RowQuant::default();
    match mul {
        Some(m) => {
            let scaled: Vec<f32> = x.iter().zip(m).map(|(a, b)| a * b).collect();
            portable::quantize_row_into(&scaled, q, &mut out);
        }
        None => portable::quantize_row_into(x, q, &mut out),
    }
    out
}

/// `y = dequant(acts × packedᵀ) + bias`, `y` is `acts.rows × out_dim` row-major.
pub fn matmul(
    acts: &QuantizedActs,
    w: &PackedInt8,
    bias: Option<&[f32]>,
    kernel: Int8Kernel,
    y: &mut [f32],
) {
    // SAFETY: f32 → MaybeUninit<f32> has the same layout, and every element stays initialised.
    let y = unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) };
    matmul_into(acts, w, bias, kernel, y)
}

/// [`matmul`] into memory that need not be initialised: every element of `y` is written.
fn matmul_into(
    acts: &QuantizedActs,
    w: &PackedInt8,
    bias: Option<&[f32]>,
    kernel: Int8Kernel,
    y: &mut [MaybeUninit<f32>],
) {
    let n = w.out_dim;
    assert_eq!(acts.k4, w.k4, "int8 matmul: inner dimensions differ");
    assert_eq!(y.len(), acts.rows * n, "int8 matmul: output size");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "int8 matmul: bias size");
    }
    if n == 0 || acts.rows == 0 {
        return;
    }
    y.par_chunks_mut(TASK_ROWS * n)
        .enumerate()
        .for_each(|(t, out)| {
            let rows = out.len() / n;
            run_tile(acts, w, bias, kernel, t * TASK_ROWS, rows, out);
        });
}

/// Rows `r0 .. r0 + rows` of the product into `out` (`rows × w.out_dim`).
fn run_tile(
    acts: &QuantizedActs,
    w: &PackedInt8,
    bias: Option<&[f32]>,
    kernel: Int8Kernel,
    r0: usize,
    rows: usize,
    out: &mut [MaybeUninit<f32>],
) {
    let tile = Tile {
        acts,
        w,
        bias,
        r0,
        rows,
    };
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Amx` is only chosen where the CPU has AMX and AVX-512 and Linux granted the
        // tile state (`Isa::Amx` is active only then; `available` checks the same).
        Int8Kernel::Amx => unsafe { amx::task(&tile, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Vnni` is only chosen when the CPU has these features (or by a test that
        // checked them).
        Int8Kernel::Vnni => unsafe { avx512_vnni::task(&tile, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2 + AVX-VNNI.
        Int8Kernel::AvxVnni => unsafe { avx_vnni::kernel::task(&tile, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2.
        Int8Kernel::Avx2 if w.seven_bit => unsafe { avx2::seven_bit::task(&tile, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2.
        Int8Kernel::Avx2 => unsafe { avx2::eight_bit::task(&tile, out) },
        _ => portable::task(&tile, out),
    }
}

/// The feed-forward block's first half for int8 layers: `gelu(acts × upᵀ + b)`, quantized
/// straight away as the input of `down` (with its smoothing). Each task keeps its rows' f32
/// product in a cache-sized scratch, so the wide intermediate activations never go to memory
/// in f32 and are never re-read for quantization.
pub fn up_gelu_quantized(
    acts: &QuantizedActs,
    up: &PackedInt8,
    bias: Option<&[f32]>,
    down: &PackedInt8,
    kernel: Int8Kernel,
) -> QuantizedActs {
    let n = up.out_dim;
    assert_eq!(acts.k4, up.k4, "int8 ffn: inner dimensions differ");
    assert_eq!(n, down.in_dim, "int8 ffn: up and down do not chain");
    QuantizedActs::build(
        acts.rows,
        down.k4,
        Vec::new,
        |scratch: &mut Vec<f32>, r0, here, out| {
            // Uninitialised room, not a zero-filled one: rayon makes a new scratch for each
            // piece of work it splits off, and filling it showed as 4% of an int8 encode.
            scratch.clear();
            scratch.reserve(here * n);
            let buf = &mut scratch.spare_capacity_mut()[..here * n];
            run_tile(acts, up, bias, kernel, r0, here, buf);
            // SAFETY: `run_tile` wrote all `here × n` values.
            let y = unsafe { &mut *(buf as *mut [MaybeUninit<f32>] as *mut [f32]) };
            for (i, row) in y.chunks_mut(n).enumerate() {
                super::gelu::gelu_in_place(row);
                out.put(i, row, down.inv_smooth.as_deref());
            }
        },
    )
}

/// The product as a new vector, written without a zero-filling pass.
fn product(
    acts: &QuantizedActs,
    w: &PackedInt8,
    bias: Option<&[f32]>,
    kernel: Int8Kernel,
) -> Vec<f32> {
    let len = acts.rows * w.out_dim;
    let mut y: Vec<MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { y.set_len(len) };
    matmul_into(acts, w, bias, kernel, &mut y);
    // SAFETY: `matmul_into` initialised all `len` elements; the layouts are equal.
    let mut y = std::mem::ManuallyDrop::new(y);
    unsafe { Vec::from_raw_parts(y.as_mut_ptr() as *mut f32, len, y.capacity()) }
}

/// One task's share: activation rows `r0 .. r0 + rows` against all of `w`.
struct Tile<'a> {
    acts: &'a QuantizedActs,
    w: &'a PackedInt8,
    bias: Option<&'a [f32]>,
    r0: usize,
    rows: usize,
}

#[cfg(test)]
mod tests;

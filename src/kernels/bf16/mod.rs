//! bf16 matrix products for the dense layers of a float model at inference (`--bf16`).
//!
//! bf16 keeps f32's exponent and 8 bits of its mantissa. Weights are rounded to bf16 once, at
//! load (round to nearest even), and packed into panels; activations are rounded per product.
//! The product of two bf16 values is exact in f32, and every sum is accumulated in f32, so the
//! only loss is the two roundings of the inputs (a relative 2⁻⁹ each). Bias, GELU, layer norms,
//! and softmax stay in f32; attention's two products run in bf16 too (`attention`).
//!
//! Kernels, chosen at run time (`LECR_ISA` caps the choice, see `kernels::isa`):
//! - AMX (`tdpbf16ps` on the tile registers: 16 × 16 outputs × 32 inputs per instruction,
//!   Sapphire Rapids and later), at level `amx`; the panels below are already its B tiles;
//! - AVX512_BF16 (`vdpbf16ps` on zmm: 16 lanes × 2 bf16 products per instruction, added to f32;
//!   Cooper Lake, Sapphire Rapids and Zen 4 and later), at level `avx512` and above;
//! - portable loops (the reference: exact products, f32 sums; much slower than the f32 model,
//!   so a load on such a CPU says so).
//!
//! Layout: this file holds the kernel choice, the weights and activations in bf16 and the one
//! dispatch table ([`run_tile`]); the AMX path is `amx`, the AVX512_BF16 one `avx512`, the reference `portable`,
//! and the candle operations that run them `ops`.

use rayon::prelude::*;
use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod attention;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod ops;
mod portable;
mod train;

pub use ops::{ffn_bf16, linear_bf16};
pub use train::linear_train_bf16;

/// Rows of activations per micro-tile.
const MR: usize = 8;
/// Output columns per packed panel (one 512-bit register of f32).
const NR: usize = 16;
/// Rows of activations per parallel task.
const TASK_ROWS: usize = 64;

/// Which kernel runs the bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX tiles (`tdpbf16ps`); conversions and the rest on AVX512_BF16.
    Amx,
    /// AVX512_BF16 (`vdpbf16ps` on zmm).
    Avx512Bf16,
    /// Portable loops.
    Portable,
}

impl Bf16Kernel {
    /// The best kernel for the active instruction set (checked once).
    pub fn detect() -> Self {
        static K: std::sync::OnceLock<Bf16Kernel> = std::sync::OnceLock::new();
        *K.get_or_init(|| Self::best_for(super::isa::active(), super::isa::CpuFeatures::detect()))
    }

    /// The best kernel at level `isa` on a CPU with `cpu`.
    pub fn best_for(isa: super::isa::Isa, cpu: super::isa::CpuFeatures) -> Self {
        use super::isa::Isa;
        match isa {
            Isa::Amx if cpu.amx && cpu.avx512_bf16 => Bf16Kernel::Amx,
            Isa::Amx | Isa::Avx512 if cpu.avx512_bf16 => Bf16Kernel::Avx512Bf16,
            _ => Bf16Kernel::Portable,
        }
    }

    /// Every kernel this CPU can run (tests and benchmarks), best first.
    pub fn available() -> Vec<Self> {
        let cpu = super::isa::CpuFeatures::detect();
        let mut k = Vec::new();
        if cpu.amx && cpu.avx512_bf16 && super::isa::amx_permission().is_ok() {
            k.push(Bf16Kernel::Amx);
        }
        if cpu.avx512_bf16 {
            k.push(Bf16Kernel::Avx512Bf16);
        }
        k.push(Bf16Kernel::Portable);
        k
    }

    /// Whether this kernel's CPU has the AVX512_BF16 vector instructions (conversions and the
    /// attention products use them beside either of the fast kernels).
    pub fn vector(self) -> bool {
        matches!(self, Bf16Kernel::Amx | Bf16Kernel::Avx512Bf16)
    }

    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "AMX-BF16",
            Bf16Kernel::Avx512Bf16 => "AVX512-BF16",
            Bf16Kernel::Portable => "portable",
        }
    }
}

/// `x` rounded to bf16 as the vector conversion `vcvtneps2bf16` does: to nearest, ties to
/// even, subnormal inputs as signed zero, NaN stays a (quiet) NaN.
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7f80_0000 == 0 {
        return ((b >> 16) & 0x8000) as u16;
    }
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bf16.
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// A weight matrix `out_dim × in_dim` in bf16, packed for the kernels: panels of 16 output
/// rows; within a panel, for each pair of inputs, 16 × 2 values (input `2g` then `2g + 1`).
/// Inputs are padded to an even count and outputs to whole panels with zeros.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    pub out_dim: usize,
    pub in_dim: usize,
    /// `in_dim` rounded up to even.
    k2: usize,
    data: Vec<u16>,
}

impl PackedBf16 {
    /// Rounds `w` (`out_dim × in_dim`, row-major f32) to bf16 and packs it.
    pub fn pack(w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        assert_eq!(w.len(), out_dim * in_dim, "bf16 pack: matrix size");
        let k2 = in_dim.next_multiple_of(2);
        let panels = out_dim.div_ceil(NR);
        let mut data = vec![0u16; panels * NR * k2];
        for n in 0..out_dim {
            for k in 0..in_dim {
                data[Self::index(k2, n, k)] = to_bf16(w[n * in_dim + k]);
            }
        }
        PackedBf16 {
            out_dim,
            in_dim,
            k2,
            data,
        }
    }

    /// The rows of several matrices with the same inputs stacked into one (a fused product).
    pub fn stack(parts: &[&PackedBf16]) -> Option<PackedBf16> {
        let first = parts.first()?;
        if parts.iter().any(|p| p.in_dim != first.in_dim) {
            return None;
        }
        let rows: usize = parts.iter().map(|p| p.out_dim).sum();
        let k2 = first.k2;
        let panels = rows.div_ceil(NR);
        let mut data = vec![0u16; panels * NR * k2];
        let mut n0 = 0;
        for p in parts {
            for n in 0..p.out_dim {
                for k in 0..p.in_dim {
                    data[Self::index(k2, n0 + n, k)] = p.data[Self::index(k2, n, k)];
                }
            }
            n0 += p.out_dim;
        }
        Some(PackedBf16 {
            out_dim: rows,
            in_dim: first.in_dim,
            k2,
            data,
        })
    }

    fn index(k2: usize, n: usize, k: usize) -> usize {
        (n / NR) * NR * k2 + (k / 2) * NR * 2 + (n % NR) * 2 + k % 2
    }

    /// Weight (`n`, `k`) as bf16.
    fn at(&self, n: usize, k: usize) -> u16 {
        self.data[Self::index(self.k2, n, k)]
    }

    fn panel_len(&self) -> usize {
        NR * self.k2
    }

    /// The f32 values these weights stand for (row-major), for tests and saving.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.out_dim * self.in_dim);
        for n in 0..self.out_dim {
            out.extend((0..self.in_dim).map(|k| from_bf16(self.at(n, k))));
        }
        out
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        2 * self.data.len()
    }
}

/// Activations in bf16: `rows` padded to whole micro-tiles with zero rows, each row `k2` long.
pub struct Bf16Acts {
    pub rows: usize,
    k2: usize,
    data: Vec<u16>,
}

impl Bf16Acts {
    /// Rounds `x` (`rows × cols`, row-major) to bf16.
    pub fn convert(x: &[f32], cols: usize) -> Self {
        let rows = x.len() / cols.max(1);
        Self::build(
            rows,
            cols.next_multiple_of(2),
            || (),
            |_, r0, here, out| {
                for i in 0..here {
                    convert_row(&x[(r0 + i) * cols..(r0 + i + 1) * cols], out.row(i));
                }
            },
        )
    }

    /// Activations for `rows` rows of `k2` inputs, written by parallel tasks of `TASK_ROWS`
    /// rows: `fill(scratch, first_row, rows_here, out)` writes each of its rows.
    fn build<S>(
        rows: usize,
        k2: usize,
        scratch: impl Fn() -> S + Sync + Send,
        fill: impl Fn(&mut S, usize, usize, &mut RowsOut) + Sync + Send,
    ) -> Self {
        let padded = rows.div_ceil(MR) * MR;
        let mut data = super::zeroed::<u16>(padded * k2);
        data.par_chunks_mut(TASK_ROWS * k2.max(1))
            .enumerate()
            .for_each_init(scratch, |sc, (t, q)| {
                let r0 = t * TASK_ROWS;
                let here = rows.saturating_sub(r0).min(TASK_ROWS);
                if here > 0 {
                    fill(sc, r0, here, &mut RowsOut { q, k2 });
                }
            });
        Bf16Acts { rows, k2, data }
    }
}

/// One task's rows of bf16 activations, being written.
struct RowsOut<'a> {
    q: &'a mut [u16],
    k2: usize,
}

impl RowsOut<'_> {
    fn row(&mut self, i: usize) -> &mut [u16] {
        &mut self.q[i * self.k2..(i + 1) * self.k2]
    }
}

/// `x` rounded into the front of `out` (the rest stays as it is: zero padding).
fn convert_row(x: &[f32], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if Bf16Kernel::detect().vector() {
        // SAFETY: those kernels are only chosen where the CPU has AVX512_BF16.
        return unsafe { avx512::convert_row(x, out) };
    }
    portable::convert_row(x, out)
}

/// One task's share: activation rows `r0 .. r0 + rows` against all of `w`.
struct Tile<'a> {
    acts: &'a Bf16Acts,
    w: &'a PackedBf16,
    bias: Option<&'a [f32]>,
    r0: usize,
    rows: usize,
}

/// `y = acts × wᵀ + bias`, `y` is `acts.rows × out_dim` row-major.
pub fn matmul(
    acts: &Bf16Acts,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    kernel: Bf16Kernel,
    y: &mut [f32],
) {
    // SAFETY: f32 → MaybeUninit<f32> has the same layout, and every element stays initialised.
    let y = unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) };
    matmul_into(acts, w, bias, kernel, y)
}

/// [`matmul`] into memory that need not be initialised: every element of `y` is written.
fn matmul_into(
    acts: &Bf16Acts,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    kernel: Bf16Kernel,
    y: &mut [MaybeUninit<f32>],
) {
    let n = w.out_dim;
    assert_eq!(acts.k2, w.k2, "bf16 matmul: inner dimensions differ");
    assert_eq!(y.len(), acts.rows * n, "bf16 matmul: output size");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bf16 matmul: bias size");
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
    acts: &Bf16Acts,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    kernel: Bf16Kernel,
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
        // SAFETY: `Amx` is only chosen where the CPU has AMX and AVX512_BF16 and Linux granted
        // the tile state (or by a test that checked them).
        Bf16Kernel::Amx => unsafe { amx::task(&tile, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512Bf16` is only chosen when the CPU has AVX512_BF16 (or by a test that
        // checked it).
        Bf16Kernel::Avx512Bf16 => unsafe { avx512::task(&tile, out) },
        _ => portable::task(&tile, out),
    }
}

/// The product as a new vector, written without a zero-filling pass.
fn product(acts: &Bf16Acts, w: &PackedBf16, bias: Option<&[f32]>, kernel: Bf16Kernel) -> Vec<f32> {
    let len = acts.rows * w.out_dim;
    let mut y: Vec<MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { y.set_len(len) };
    matmul_into(acts, w, bias, kernel, &mut y);
    // SAFETY: `matmul_into` initialised all `len` elements; the layouts are equal.
    let mut y = std::mem::ManuallyDrop::new(y);
    unsafe { Vec::from_raw_parts(y.as_mut_ptr() as *mut f32, len, y.capacity()) }
}

/// The feed-forward block's first half in bf16: `gelu(acts × upᵀ + b)`, rounded straight away
/// to bf16 as the input of the next product. Each task keeps its rows' f32 product in a
/// cache-sized scratch, so the wide intermediate activations never go to memory in f32.
fn up_gelu(acts: &Bf16Acts, up: &PackedBf16, bias: Option<&[f32]>, kernel: Bf16Kernel) -> Bf16Acts {
    let n = up.out_dim;
    assert_eq!(acts.k2, up.k2, "bf16 ffn: inner dimensions differ");
    Bf16Acts::build(
        acts.rows,
        n.next_multiple_of(2),
        Vec::new,
        |scratch: &mut Vec<f32>, r0, here, out| {
            scratch.clear();
            scratch.reserve(here * n);
            let buf = &mut scratch.spare_capacity_mut()[..here * n];
            run_tile(acts, up, bias, kernel, r0, here, buf);
            // SAFETY: `run_tile` wrote all `here × n` values.
            let y = unsafe { &mut *(buf as *mut [MaybeUninit<f32>] as *mut [f32]) };
            for (i, row) in y.chunks_mut(n).enumerate() {
                super::gelu::gelu_in_place(row);
                convert_row(row, out.row(i));
            }
        },
    )
}

#[cfg(test)]
mod tests;

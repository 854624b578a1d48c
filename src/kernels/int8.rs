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

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Rows of activations per micro-tile.
const MR: usize = 8;
/// Output columns per packed panel (one 512-bit register of i32).
const NR: usize = 16;
/// Rows of activations per parallel task.
const TASK_ROWS: usize = 64;

/// A weight matrix `rows × cols` (row-major) in int8 with one scale per row.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrix {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
    /// Per-input smoothing `s[k]` (SmoothQuant): the values hold `W · diag(s)` and inputs are
    /// divided by `s` before they are quantized, which moves activation outliers into the
    /// weights where per-row scales absorb them. `None`: all ones.
    pub smooth: Option<Vec<f32>>,
}

impl QuantizedMatrix {
    /// Symmetric per-row quantization: each row's largest magnitude maps to ±127.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Self {
        Self::quantize_bits(w, rows, cols, WeightBits::Eight)
    }

    /// The same with `bits` per weight: each row's largest magnitude maps to ±127 (8 bits) or
    /// ±63 (7 bits).
    pub fn quantize_bits(w: &[f32], rows: usize, cols: usize, bits: WeightBits) -> Self {
        assert_eq!(w.len(), rows * cols, "quantize: matrix size");
        let qmax = bits.max_value();
        let mut values = vec![0i8; rows * cols];
        let mut scales = vec![0f32; rows];
        for ((row, q), s) in w
            .chunks(cols.max(1))
            .zip(values.chunks_mut(cols.max(1)))
            .zip(scales.iter_mut())
        {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            if amax > 0.0 && amax.is_finite() {
                *s = amax / qmax;
                let inv = qmax / amax;
                for (q, &v) in q.iter_mut().zip(row) {
                    *q = (v * inv).round_ties_even().clamp(-qmax, qmax) as i8;
                }
            }
        }
        QuantizedMatrix {
            rows,
            cols,
            values,
            scales,
            smooth: None,
        }
    }

    /// Quantizes `W · diag(smooth)`; the product then divides its inputs by `smooth`.
    pub fn quantize_smoothed(
        w: &[f32],
        rows: usize,
        cols: usize,
        smooth: &[f32],
        bits: WeightBits,
    ) -> Self {
        assert_eq!(smooth.len(), cols, "quantize: smoothing size");
        let scaled: Vec<f32> = w
            .chunks(cols.max(1))
            .flat_map(|r| r.iter().zip(smooth).map(|(v, s)| v * s))
            .collect();
        let mut q = Self::quantize_bits(&scaled, rows, cols, bits);
        q.smooth = Some(smooth.to_vec());
        q
    }

    /// Whether every value is within ±63 ([`WeightBits::Seven`]).
    pub fn fits_seven_bits(&self) -> bool {
        self.values.iter().all(|v| (-63..=63).contains(v))
    }

    /// The float matrix these values stand for (smoothing undone).
    pub fn dequantize(&self) -> Vec<f32> {
        let ones = vec![1f32; self.cols];
        let smooth = self.smooth.as_deref().unwrap_or(&ones);
        self.values
            .chunks(self.cols.max(1))
            .zip(&self.scales)
            .flat_map(|(r, &s)| r.iter().zip(smooth).map(move |(&q, &k)| q as f32 * s / k))
            .collect()
    }
}

/// Bits per quantized weight. Seven (values in ±63) let the AVX2 kernel multiply unsigned
/// 8-bit activations by the weights directly: `vpmaddubsw`'s pair sums stay within
/// `2 · 255 · 63 < 2¹⁵`, so no sign transfer is needed (three instructions per 32 products
/// instead of four; ONNX Runtime's `reduce_range` makes the same trade). The other kernels
/// compute the same integers either way. Which one a model uses is a property of its values:
/// a quantized folder whose weights all fit in ±63 runs the 7-bit AVX2 kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightBits {
    #[default]
    Eight,
    Seven,
}

impl WeightBits {
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            8 => Some(WeightBits::Eight),
            7 => Some(WeightBits::Seven),
            _ => None,
        }
    }
    pub fn bits(self) -> u8 {
        match self {
            WeightBits::Eight => 8,
            WeightBits::Seven => 7,
        }
    }
    fn max_value(self) -> f32 {
        match self {
            WeightBits::Eight => 127.0,
            WeightBits::Seven => 63.0,
        }
    }
}

/// Which kernel runs the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
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
            Isa::Amx | Isa::Avx512 if cpu.avx512_vnni => Int8Kernel::Vnni,
            Isa::Amx | Isa::Avx512 | Isa::AvxVnni if cpu.avx_vnni => Int8Kernel::AvxVnni,
            Isa::Amx | Isa::Avx512 | Isa::AvxVnni | Isa::Avx2 if cpu.avx2_fma => Int8Kernel::Avx2,
            _ => Int8Kernel::Scalar,
        }
    }

    /// Every kernel this CPU can run (tests and benchmarks), best first.
    pub fn available() -> Vec<Self> {
        let cpu = super::isa::CpuFeatures::detect();
        [
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
            Int8Kernel::Vnni => "AVX-512 VNNI",
            Int8Kernel::AvxVnni => "AVX-VNNI",
            Int8Kernel::Avx2 => "AVX2",
            Int8Kernel::Scalar => "portable",
        }
    }
}

/// A quantized weight matrix packed for the kernels: panels of 16 output rows; within a panel,
/// for each group of 4 inputs, 16 × 4 bytes (`q_w + 128`). Inputs are padded to a multiple of 4
/// and outputs to a multiple of 16 with zero weights.
#[derive(Debug, Clone)]
pub struct PackedInt8 {
    pub out_dim: usize,
    pub in_dim: usize,
    /// `in_dim` rounded up to a multiple of 4.
    k4: usize,
    data: Vec<u8>,
    /// Per output row (padded with zeros to whole panels).
    scales: Vec<f32>,
    /// `Σ_k q_w[n, k]` per output row (padded): the zero-point correction.
    wsum: Vec<i32>,
    /// Per input, `1 / smooth[k]`, applied while quantizing the activations.
    smooth: Option<Vec<f32>>,
    inv_smooth: Option<Vec<f32>>,
    /// Row-major `q_w` for the portable kernel, built on its first use (VNNI never needs it).
    row_major: std::sync::OnceLock<Vec<i8>>,
    /// Every weight is within ±63 ([`WeightBits::Seven`]).
    seven_bit: bool,
}

impl PackedInt8 {
    pub fn pack(m: &QuantizedMatrix) -> Self {
        let k4 = m.cols.div_ceil(4) * 4;
        let panels = m.rows.div_ceil(NR);
        let mut data = vec![128u8; panels * NR * k4];
        for n in 0..m.rows {
            let (p, c) = (n / NR, n % NR);
            for k in 0..m.cols {
                let at = p * NR * k4 + (k / 4) * NR * 4 + c * 4 + k % 4;
                data[at] = (m.values[n * m.cols + k] as i16 + 128) as u8;
            }
        }
        let mut scales = m.scales.clone();
        scales.resize(panels * NR, 0.0);
        let mut wsum: Vec<i32> = m
            .values
            .chunks(m.cols.max(1))
            .map(|r| r.iter().map(|&v| v as i32).sum())
            .collect();
        wsum.resize(panels * NR, 0);
        PackedInt8 {
            seven_bit: m.fits_seven_bits(),
            row_major: std::sync::OnceLock::new(),
            wsum,
            out_dim: m.rows,
            in_dim: m.cols,
            k4,
            data,
            scales,
            smooth: m.smooth.clone(),
            inv_smooth: m
                .smooth
                .as_ref()
                .map(|s| s.iter().map(|v| 1.0 / v).collect()),
        }
    }

    /// The rows of several matrices stacked into one (a fused product), if they read the same
    /// inputs the same way (input size and smoothing).
    pub fn stack(parts: &[&PackedInt8]) -> Option<PackedInt8> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.in_dim != first.in_dim || p.smooth != first.smooth)
        {
            return None;
        }
        let mut all = first.unpack();
        for p in &parts[1..] {
            let m = p.unpack();
            all.rows += m.rows;
            all.values.extend(m.values);
            all.scales.extend(m.scales);
        }
        Some(PackedInt8::pack(&all))
    }

    /// The quantized matrix back (for saving).
    pub fn unpack(&self) -> QuantizedMatrix {
        let mut values = vec![0i8; self.out_dim * self.in_dim];
        for n in 0..self.out_dim {
            for k in 0..self.in_dim {
                values[n * self.in_dim + k] = (self.byte(n, k) as i16 - 128) as i8;
            }
        }
        QuantizedMatrix {
            rows: self.out_dim,
            cols: self.in_dim,
            values,
            scales: self.scales[..self.out_dim].to_vec(),
            smooth: self.smooth.clone(),
        }
    }

    fn panel_len(&self) -> usize {
        NR * self.k4
    }

    fn byte(&self, n: usize, k: usize) -> u8 {
        self.data[(n / NR) * self.panel_len() + (k / 4) * NR * 4 + (n % NR) * 4 + k % 4]
    }

    /// Whether every weight fits in 7 bits (the AVX2 kernel then skips the sign transfer).
    pub fn seven_bit(&self) -> bool {
        self.seven_bit
    }

    /// Bytes held (weights and scales).
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 4 * self.scales.len()
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

simd_fn! {
    /// One row to int8 over its own range (which always includes 0, so zeros stay exact);
    /// rounds half to even, as the vector conversion does.
    fn quantize_row_into(x: &[f32], q: &mut [i8], out: &mut RowQuant) {
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

fn quantize_row(x: &[f32], mul: Option<&[f32]>, q: &mut [i8]) -> RowQuant {
    #[cfg(target_arch = "x86_64")]
    match super::simd_level() {
        // SAFETY: the CPU has AVX-512 F/BW (checked by `simd_level`).
        4 => return unsafe { vnni::quantize_row(x, mul, q) },
        // SAFETY: the CPU has AVX2 (checked by `simd_level`).
        3 => return unsafe { quantize_avx2::quantize_row(x, mul, q) },
        _ => {}
    }
    let mut out = RowQuant::default();
    match mul {
        Some(m) => {
            let scaled: Vec<f32> = x.iter().zip(m).map(|(a, b)| a * b).collect();
            quantize_row_into(&scaled, q, &mut out);
        }
        None => quantize_row_into(x, q, &mut out),
    }
    out
}

/// The AVX2 form of `quantize_row_into` (same rounding, same results): the portable loop
/// compiled for AVX2 did not vectorise its float-to-byte conversion and took 8% of an AVX2
/// int8 encode.
#[cfg(target_arch = "x86_64")]
mod quantize_avx2 {
    use super::RowQuant;
    use std::arch::x86_64::*;

    /// Element `i` of `x` (times `mul`).
    fn at(x: &[f32], mul: Option<&[f32]>, i: usize) -> f32 {
        mul.map_or(x[i], |m| x[i] * m[i])
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_row(x: &[f32], mul: Option<&[f32]>, q: &mut [i8]) -> RowQuant {
        let n = x.len();
        let body = n - n % 8;
        // SAFETY (whole function): vector loads and stores cover `..body`, inside `x`, `mul`
        // and `q` (all `n` long); the rest goes through the scalar tail.
        let load = |i: usize| {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            match mul {
                Some(m) => _mm256_mul_ps(v, _mm256_loadu_ps(m.as_ptr().add(i))),
                None => v,
            }
        };
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..body).step_by(8) {
            let v = load(i);
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
        }
        let (mut lo_s, mut hi_s) = (0f32, 0f32);
        let (mut l8, mut h8) = ([0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(l8.as_mut_ptr(), lo);
        _mm256_storeu_ps(h8.as_mut_ptr(), hi);
        for (l, h) in l8.iter().zip(&h8) {
            lo_s = lo_s.min(*l);
            hi_s = hi_s.max(*h);
        }
        for i in body..n {
            let v = at(x, mul, i);
            lo_s = lo_s.min(v);
            hi_s = hi_s.max(v);
        }
        let scale = (hi_s - lo_s) / 255.0;
        if !(scale > 0.0 && scale.is_finite()) {
            return RowQuant::default();
        }
        let inv = 1.0 / scale;
        let zero = (-128.0 - lo_s * inv).round_ties_even().clamp(-128.0, 127.0);
        let (vinv, vzero) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zero as i32));
        let (qmin, qmax) = (_mm256_set1_epi32(-128), _mm256_set1_epi32(127));
        let mut sum = _mm256_setzero_si256();
        for i in (0..body).step_by(8) {
            // |v · inv| ≤ 255 (the row's range spans 0), so the conversion cannot overflow;
            // it rounds half to even (the default rounding mode), as the scalar loop does.
            let r = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(load(i), vinv)), vzero);
            let r = _mm256_min_epi32(_mm256_max_epi32(r, qmin), qmax);
            sum = _mm256_add_epi32(sum, r);
            let mut w = [0i32; 8];
            _mm256_storeu_si256(w.as_mut_ptr() as *mut __m256i, r);
            for (d, v) in q[i..i + 8].iter_mut().zip(w) {
                *d = v as i8;
            }
        }
        let mut lanes = [0i32; 8];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, sum);
        let mut total: i32 = lanes.iter().sum();
        for (i, d) in q.iter_mut().enumerate().take(n).skip(body) {
            let r = ((at(x, mul, i) * inv).round_ties_even() + zero).clamp(-128.0, 127.0) as i32;
            *d = r as i8;
            total += r;
        }
        RowQuant {
            scale,
            zero: zero as i32,
            sum: total,
        }
    }
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
        // SAFETY: `Vnni` is only chosen when the CPU has these features (or by a test that
        // checked them).
        Int8Kernel::Vnni => unsafe { vnni::task(&tile, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2 + AVX-VNNI.
        Int8Kernel::AvxVnni => unsafe { ymm_vnni::task(&tile, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2.
        Int8Kernel::Avx2 if w.seven_bit => unsafe { ymm_avx2_7bit::task(&tile, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2.
        Int8Kernel::Avx2 => unsafe { ymm_avx2::task(&tile, out) },
        _ => scalar_task(&tile, out),
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

/// `down(gelu(up(x)))` for int8 layers (see [`up_gelu_quantized`]). No backward pass.
pub fn ffn_int8(
    x: &Tensor,
    up: (&Arc<PackedInt8>, Option<&Tensor>),
    down: (&Arc<PackedInt8>, Option<&Tensor>),
) -> candle_core::Result<Tensor> {
    let vec = |b: Option<&Tensor>| b.map(|b| b.to_vec1::<f32>()).transpose();
    x.contiguous()?.apply_op1_no_bwd(&FfnInt8 {
        up: up.0.clone(),
        up_bias: vec(up.1)?,
        down: down.0.clone(),
        down_bias: vec(down.1)?,
    })
}

struct FfnInt8 {
    up: Arc<PackedInt8>,
    up_bias: Option<Vec<f32>>,
    down: Arc<PackedInt8>,
    down_bias: Option<Vec<f32>>,
}

impl CustomOp1 for FfnInt8 {
    fn name(&self) -> &'static str {
        "lecr-ffn-int8"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::f32_slice(s, l, self.name())?;
        let dims = l.dims();
        if dims.last() != Some(&self.up.in_dim) || self.up.out_dim != self.down.in_dim {
            candle_core::bail!("int8 ffn: shapes do not chain ({dims:?})");
        }
        let kernel = Int8Kernel::detect();
        let acts = QuantizedActs::for_weight(x, &self.up);
        let mid = up_gelu_quantized(&acts, &self.up, self.up_bias.as_deref(), &self.down, kernel);
        let y = product(&mid, &self.down, self.down_bias.as_deref(), kernel);
        let mut out = dims.to_vec();
        *out.last_mut().expect("non-empty dims") = self.down.out_dim;
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
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

simd_fn! {
    /// `Σ x·w` of two int8 rows, exact in i32 (integer sums vectorise, e.g. with AVX2).
    fn dot_i8(x: &[i8], w: &[i8], out: &mut i32) {
        *out = x.iter().zip(w).map(|(&a, &b)| a as i32 * b as i32).sum();
    }
}

/// The portable kernel: plain int8 dot products over row-major weights. Computes the same
/// integers as the VNNI kernel (`Σ q_x q_w`), so both give the same results.
fn scalar_task(t: &Tile, out: &mut [MaybeUninit<f32>]) {
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

#[cfg(target_arch = "x86_64")]
mod vnni {
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
}

/// The 256-bit kernels (AVX-VNNI and AVX2), written once. `$prep` turns 32 packed weight bytes
/// into the operand `$dot` takes; `$dot` adds four products `w·x` per i32 lane; `$signed`:
/// whether `$prep` removed the `+128` of the packed weights (so no `128 · Σ q_x` to subtract);
/// `$unsigned_x`: whether `$dot` multiplies `q_x + 128` (so `128 · Σ q_w` is subtracted).
/// Micro-tiles of 4 activation rows × one 16-column panel (two ymm halves): 8 accumulators,
/// which leaves registers for the weights and the broadcast activations.
#[cfg(target_arch = "x86_64")]
macro_rules! ymm_kernel {
    (
        $module:ident, $features:literal, signed: $signed:literal, unsigned_x: $unsigned_x:literal,
        |$pw:ident| $prep:expr, |$acc:ident, $w:ident, $x:ident| $dot:expr
    ) => {
        mod $module {
            use super::{Tile, NR};
            use std::arch::x86_64::*;
            use std::mem::MaybeUninit;

            /// Activation rows per micro-tile (divides `MR`, to which rows are padded).
            const ROWS: usize = 4;

            #[target_feature(enable = $features)]
            pub(super) unsafe fn task(t: &Tile, out: &mut [MaybeUninit<f32>]) {
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

#[cfg(target_arch = "x86_64")]
ymm_kernel!(
    ymm_vnni, "avx2,avxvnni", signed: false, unsigned_x: false,
    |w| w,
    |acc, w, x| _mm256_dpbusd_avx_epi32(acc, w, x)
);

#[cfg(target_arch = "x86_64")]
ymm_kernel!(
    ymm_avx2, "avx2", signed: true, unsigned_x: false,
    // Back to signed weights: flipping the top bit subtracts 128.
    |w| _mm256_xor_si256(w, _mm256_set1_epi8(i8::MIN)),
    // |x| · (w · sign x) = x · w; pair sums ≤ 2 · 128 · 127 fit the i16 of `vpmaddubsw`.
    |acc, w, x| _mm256_add_epi32(
        acc,
        _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(w, x)),
            _mm256_set1_epi16(1),
        )
    )
);

#[cfg(target_arch = "x86_64")]
ymm_kernel!(
    ymm_avx2_7bit, "avx2", signed: true, unsigned_x: true,
    // Back to signed weights (within ±63 here).
    |w| _mm256_xor_si256(w, _mm256_set1_epi8(i8::MIN)),
    // (q_x + 128) · q_w: pair sums ≤ 2 · 255 · 63 fit the i16 of `vpmaddubsw`; the excess
    // 128 · Σ q_w is removed with the zero point.
    |acc, w, x| _mm256_add_epi32(
        acc,
        _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_xor_si256(x, _mm256_set1_epi8(i8::MIN)), w),
            _mm256_set1_epi16(1),
        )
    )
);

/// The inference dense layer with int8 weights: `x` is quantized per row, multiplied by `w`,
/// scaled back, biased (and passed through GELU when `gelu`). No backward pass.
pub fn linear_int8(
    x: &Tensor,
    w: &Arc<PackedInt8>,
    bias: Option<&Tensor>,
    gelu: bool,
) -> candle_core::Result<Tensor> {
    let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
    x.contiguous()?.apply_op1_no_bwd(&LinearInt8 {
        w: w.clone(),
        bias,
        gelu,
    })
}

struct LinearInt8 {
    w: Arc<PackedInt8>,
    bias: Option<Vec<f32>>,
    gelu: bool,
}

impl CustomOp1 for LinearInt8 {
    fn name(&self) -> &'static str {
        "lecr-linear-int8"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::f32_slice(s, l, self.name())?;
        let dims = l.dims();
        let in_dim = *dims.last().unwrap_or(&0);
        if in_dim != self.w.in_dim {
            candle_core::bail!(
                "int8 linear: input has {in_dim} features, the layer expects {}",
                self.w.in_dim
            );
        }
        let kernel = Int8Kernel::detect();
        let acts = QuantizedActs::for_weight(x, &self.w);
        let mut y = product(&acts, &self.w, self.bias.as_deref(), kernel);
        if self.gelu {
            let dim = 4096.min(y.len().max(1));
            super::for_rows(&mut y, dim, |_, r| super::gelu::gelu_in_place(r));
        }
        let mut out = dims.to_vec();
        *out.last_mut().expect("non-empty dims") = self.w.out_dim;
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
    }

    /// The integer product written out directly from the definitions.
    fn reference(x: &[f32], w: &QuantizedMatrix, bias: &[f32]) -> Vec<f32> {
        let k = w.cols;
        let rows = x.len() / k;
        let mut y = vec![0f32; rows * w.rows];
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            let lo = xr.iter().fold(0f32, |m, &v| m.min(v));
            let hi = xr.iter().fold(0f32, |m, &v| m.max(v));
            let scale = (hi - lo) / 255.0;
            let zero = (-128.0 - lo * (1.0 / scale)).round_ties_even();
            let q: Vec<i32> = xr
                .iter()
                .map(|v| {
                    ((v * (1.0 / scale)).round_ties_even() + zero).clamp(-128.0, 127.0) as i32
                        - zero as i32
                })
                .collect();
            for c in 0..w.rows {
                let acc: i32 = (0..k).map(|i| q[i] * w.values[c * k + i] as i32).sum();
                y[r * w.rows + c] = acc as f32 * (scale * w.scales[c]) + bias[c];
            }
        }
        y
    }

    /// Every kernel this CPU runs; names the ones it cannot.
    fn kernels() -> Vec<Int8Kernel> {
        let k = Int8Kernel::available();
        for missing in [Int8Kernel::Vnni, Int8Kernel::AvxVnni, Int8Kernel::Avx2] {
            if !k.contains(&missing) {
                eprintln!("not tested on this CPU: the {} int8 kernel", missing.name());
            }
        }
        k
    }

    #[test]
    fn weight_quantization_round_trips_within_half_a_step() {
        let w = random(37 * 53, 1, 0.3);
        let q = QuantizedMatrix::quantize(&w, 37, 53);
        let back = q.dequantize();
        for r in 0..37 {
            let amax = w[r * 53..(r + 1) * 53]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            // The largest value of each row is exactly ±127.
            assert_eq!(
                q.values[r * 53..(r + 1) * 53]
                    .iter()
                    .map(|v| v.unsigned_abs())
                    .max(),
                Some(127)
            );
            for c in 0..53 {
                let e = (back[r * 53 + c] - w[r * 53 + c]).abs();
                assert!(e <= amax / 127.0 * 0.5 + 1e-7, "row {r} col {c}: {e}");
            }
        }
        assert_eq!(PackedInt8::pack(&q).unpack(), q);
        // A zero row quantizes to zeros with a zero scale.
        let z = QuantizedMatrix::quantize(&[0.0; 6], 2, 3);
        assert_eq!(z.values, vec![0; 6]);
        assert_eq!(z.dequantize(), vec![0.0; 6]);
    }

    #[test]
    fn kernels_compute_the_exact_integer_product() {
        // Odd shapes: partial micro-tiles, partial panels, inputs not a multiple of 4, more
        // rows than one task, one and two trailing panels.
        for (rows, k, n) in [
            (1, 1, 1),
            (7, 5, 17),
            (70, 33, 40),
            (131, 64, 48),
            (9, 384, 96),
        ] {
            let x = random(rows * k, rows as u64, 2.0);
            let wf = random(n * k, k as u64, 0.5);
            let bias = random(n, 7, 1.0);
            // 7-bit weights take their own AVX2 kernel.
            for bits in [WeightBits::Eight, WeightBits::Seven] {
                let q = QuantizedMatrix::quantize_bits(&wf, n, k, bits);
                let packed = PackedInt8::pack(&q);
                assert_eq!(packed.seven_bit(), bits == WeightBits::Seven);
                let acts = QuantizedActs::quantize(&x, k);
                let want = reference(&x, &q, &bias);
                for kern in kernels() {
                    let mut y = vec![f32::NAN; rows * n];
                    matmul(&acts, &packed, Some(&bias), kern, &mut y);
                    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                            "{kern:?} {bits:?} {rows}×{k}×{n} at {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn int8_product_is_close_to_the_float_product() {
        let (rows, k, n) = (40, 384, 64);
        let x = random(rows * k, 3, 1.0);
        let wf = random(n * k, 4, 0.1);
        let q = QuantizedMatrix::quantize(&wf, n, k);
        let mut y = vec![0f32; rows * n];
        matmul(
            &QuantizedActs::quantize(&x, k),
            &PackedInt8::pack(&q),
            None,
            Int8Kernel::detect(),
            &mut y,
        );
        let mut worst = 0f32;
        for r in 0..rows {
            for c in 0..n {
                let exact: f32 = (0..k).map(|i| x[r * k + i] * wf[c * k + i]).sum();
                worst = worst.max((y[r * n + c] - exact).abs());
            }
        }
        // Each product carries at most half a step of error from each side.
        assert!(worst < 0.05, "largest error {worst}");
    }

    #[test]
    fn kernels_agree_bit_for_bit_and_do_not_saturate_at_the_extremes() {
        // Runs of extreme values of equal sign (weights ±127, activations at both ends of
        // their range, including -128): the i16 pair sums of `vpmaddubsw` are as large as they
        // get, so a saturation would show as a difference from the portable kernel.
        let (rows, k, n) = (13, 68, 35);
        let mut x = random(rows * k, 31, 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            if i % 3 != 0 {
                *v = if (i / 2) % 2 == 0 { 5.0 } else { -5.0 };
            }
        }
        let mut wf = random(n * k, 32, 0.2);
        for (i, v) in wf.iter_mut().enumerate() {
            if i % 5 != 0 {
                *v = if (i / 4) % 2 == 0 { 0.2 } else { -0.2 };
            }
        }
        // Weights at ±127, or at ±63 for the 7-bit kernel (unsigned activations up to 255).
        for bits in [WeightBits::Eight, WeightBits::Seven] {
            let q = QuantizedMatrix::quantize_bits(&wf, n, k, bits);
            let packed = PackedInt8::pack(&q);
            let bias = random(n, 33, 1.0);
            let acts = QuantizedActs::quantize(&x, k);
            let exact = reference(&x, &q, &bias);
            let mut want = vec![0f32; rows * n];
            matmul(&acts, &packed, Some(&bias), Int8Kernel::Scalar, &mut want);
            for (a, b) in want.iter().zip(&exact) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "portable: {a} vs {b}"
                );
            }
            for kern in kernels() {
                let mut got = vec![0f32; rows * n];
                matmul(&acts, &packed, Some(&bias), kern, &mut got);
                assert_eq!(
                    got, want,
                    "{kern:?} {bits:?} differs from the portable kernel"
                );
            }
        }
    }

    #[test]
    fn kernel_choice_follows_the_instruction_set_level() {
        use crate::kernels::isa::{CpuFeatures, Isa};
        let all = CpuFeatures {
            avx2_fma: true,
            avx_vnni: true,
            avx512: true,
            avx512_vnni: true,
            amx: true,
        };
        // No AMX kernel yet: the AMX level runs the AVX-512 VNNI one.
        assert_eq!(Int8Kernel::best_for(Isa::Amx, all), Int8Kernel::Vnni);
        assert_eq!(Int8Kernel::best_for(Isa::Avx512, all), Int8Kernel::Vnni);
        assert_eq!(Int8Kernel::best_for(Isa::AvxVnni, all), Int8Kernel::AvxVnni);
        assert_eq!(Int8Kernel::best_for(Isa::Avx2, all), Int8Kernel::Avx2);
        assert_eq!(Int8Kernel::best_for(Isa::Scalar, all), Int8Kernel::Scalar);
        // Skylake-SP: AVX-512 without any VNNI.
        let skx = CpuFeatures {
            avx_vnni: false,
            avx512_vnni: false,
            ..all
        };
        assert_eq!(Int8Kernel::best_for(Isa::Avx512, skx), Int8Kernel::Avx2);
        // Ice Lake server: AVX-512 VNNI but no AVX-VNNI.
        let icx = CpuFeatures {
            avx_vnni: false,
            ..all
        };
        assert_eq!(Int8Kernel::best_for(Isa::AvxVnni, icx), Int8Kernel::Avx2);
        // No AVX2 at all.
        let none = CpuFeatures {
            avx2_fma: false,
            avx_vnni: false,
            avx512: false,
            avx512_vnni: false,
            amx: false,
        };
        assert_eq!(Int8Kernel::best_for(Isa::Avx512, none), Int8Kernel::Scalar);
    }

    #[test]
    fn vector_and_scalar_activation_quantization_agree() {
        let cpu = crate::kernels::isa::CpuFeatures::detect();
        if !cpu.avx2_fma {
            eprintln!("no AVX2: nothing to compare");
            return;
        }
        for (n, seed) in [(1, 1), (15, 2), (16, 3), (33, 4), (384, 5), (1536, 6)] {
            let mut x = random(n, seed, 3.0);
            x[0] = 9.0; // an outlier
            let mul = random(n, seed + 50, 1.0);
            for m in [None, Some(mul.as_slice())] {
                let mut qb = vec![0i8; n];
                let mut b = RowQuant::default();
                let scaled: Vec<f32> = match m {
                    Some(m) => x.iter().zip(m).map(|(a, b)| a * b).collect(),
                    None => x.clone(),
                };
                quantize_row_into(&scaled, &mut qb, &mut b);
                let mut qa = vec![0i8; n];
                // SAFETY: checked above.
                let a = unsafe { quantize_avx2::quantize_row(&x, m, &mut qa) };
                assert_eq!(qa, qb, "AVX2, n {n}");
                assert_eq!(
                    (a.scale, a.zero, a.sum),
                    (b.scale, b.zero, b.sum),
                    "AVX2, n {n}"
                );
                if !cpu.avx512 {
                    eprintln!("no AVX-512: its quantization is not compared");
                    continue;
                }
                let mut qa = vec![0i8; n];
                // SAFETY: checked above.
                let a = unsafe { vnni::quantize_row(&x, m, &mut qa) };
                assert_eq!(qa, qb, "AVX-512, n {n}");
                assert_eq!(
                    (a.scale, a.zero, a.sum),
                    (b.scale, b.zero, b.sum),
                    "AVX-512, n {n}"
                );
            }
        }
    }

    #[test]
    fn fused_feed_forward_equals_the_two_products_with_gelu_between() {
        let (rows, h, mid) = (70, 24, 40);
        let x = random(rows * h, 8, 1.0);
        let up = QuantizedMatrix::quantize(&random(mid * h, 9, 0.3), mid, h);
        let smooth: Vec<f32> = (0..mid).map(|i| 0.5 + i as f32 / mid as f32).collect();
        let down = QuantizedMatrix::quantize_smoothed(
            &random(h * mid, 10, 0.3),
            h,
            mid,
            &smooth,
            WeightBits::Eight,
        );
        let (up, down) = (PackedInt8::pack(&up), PackedInt8::pack(&down));
        let (b1, b2) = (random(mid, 11, 0.5), random(h, 12, 0.5));
        for kern in kernels() {
            let acts = QuantizedActs::for_weight(&x, &up);
            let mut m = vec![0f32; rows * mid];
            matmul(&acts, &up, Some(&b1), kern, &mut m);
            crate::kernels::gelu::gelu_in_place(&mut m);
            let mut want = vec![0f32; rows * h];
            matmul(
                &QuantizedActs::for_weight(&m, &down),
                &down,
                Some(&b2),
                kern,
                &mut want,
            );
            let fused = up_gelu_quantized(&acts, &up, Some(&b1), &down, kern);
            let got = product(&fused, &down, Some(&b2), kern);
            assert_eq!(got, want, "{kern:?}");
        }
    }

    #[test]
    fn stacked_matrices_give_the_separate_products_side_by_side() {
        let (rows, k) = (19, 20);
        let x = random(rows * k, 21, 1.0);
        let smooth: Vec<f32> = (0..k).map(|i| 1.0 + i as f32 / 10.0).collect();
        let a = QuantizedMatrix::quantize_smoothed(
            &random(17 * k, 22, 0.3),
            17,
            k,
            &smooth,
            WeightBits::Eight,
        );
        let b = QuantizedMatrix::quantize_smoothed(
            &random(5 * k, 23, 0.3),
            5,
            k,
            &smooth,
            WeightBits::Eight,
        );
        let (pa, pb) = (PackedInt8::pack(&a), PackedInt8::pack(&b));
        let both = PackedInt8::stack(&[&pa, &pb]).unwrap();
        let acts = QuantizedActs::for_weight(&x, &pa);
        let kern = Int8Kernel::detect();
        let (ya, yb, yab) = (
            product(&acts, &pa, None, kern),
            product(&acts, &pb, None, kern),
            product(&acts, &both, None, kern),
        );
        for r in 0..rows {
            assert_eq!(&yab[r * 22..r * 22 + 17], &ya[r * 17..(r + 1) * 17]);
            assert_eq!(&yab[r * 22 + 17..(r + 1) * 22], &yb[r * 5..(r + 1) * 5]);
        }
        // Different smoothing: no stacking.
        let c = PackedInt8::pack(&QuantizedMatrix::quantize(&random(3 * k, 24, 0.3), 3, k));
        assert!(PackedInt8::stack(&[&pa, &c]).is_none());
    }

    #[test]
    fn zero_rows_give_the_bias() {
        let q = QuantizedMatrix::quantize(&random(20 * 8, 5, 1.0), 20, 8);
        let acts = QuantizedActs::quantize(&[0.0; 16], 8);
        for kern in kernels() {
            let mut y = vec![0f32; 40];
            let bias: Vec<f32> = (0..20).map(|i| i as f32).collect();
            matmul(&acts, &PackedInt8::pack(&q), Some(&bias), kern, &mut y);
            assert_eq!(&y[..20], bias.as_slice());
            assert_eq!(&y[20..], bias.as_slice());
        }
    }
}

//! Int8 weights: quantized once per output row, then packed into the panels the kernels read.

use super::NR;

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

/// A quantized weight matrix packed for the kernels: panels of 16 output rows; within a panel,
/// for each group of 4 inputs, 16 × 4 bytes (`q_w + 128`). Inputs are padded to a multiple of 4
/// and outputs to a multiple of 16 with zero weights.
#[derive(Debug, Clone)]
pub struct PackedInt8 {
    pub out_dim: usize,
    pub in_dim: usize,
    /// `in_dim` rounded up to a multiple of 4.
    pub(super) k4: usize,
    pub(super) data: Vec<u8>,
    /// Per output row (padded with zeros to whole panels).
    pub(super) scales: Vec<f32>,
    /// `Σ_k q_w[n, k]` per output row (padded): the zero-point correction.
    pub(super) wsum: Vec<i32>,
    /// Per input, `1 / smooth[k]`, applied while quantizing the activations.
    pub(super) smooth: Option<Vec<f32>>,
    pub(super) inv_smooth: Option<Vec<f32>>,
    /// Row-major `q_w` for the portable kernel, built on its first use (VNNI never needs it).
    pub(super) row_major: std::sync::OnceLock<Vec<i8>>,
    /// Every weight is within ±63 ([`WeightBits::Seven`]).
    pub(super) seven_bit: bool,
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

    pub(super) fn panel_len(&self) -> usize {
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

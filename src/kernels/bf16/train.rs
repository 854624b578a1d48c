//! Mixed-precision training's dense layer (`precision = "bf16"` in the training settings).
//!
//! The three products of a dense layer's step (forward `x Wᵀ`, the input gradient `dY W`, the
//! weight gradient `dYᵀ x`) take their operands rounded to bf16 and sum in f32, with the same
//! kernels as `--bf16` inference. Everything else stays f32: the master weights (the model's
//! variables) and the optimizer's state, the bias and its gradient (a column sum of the f32
//! `dY`), layer norms, softmax, the loss and every reduction. The weights change every step, so
//! they are rounded and packed on each use (a pass over `out × in` values, against a product of
//! `rows × out × in`).

use super::{product, to_bf16, Bf16Acts, Bf16Kernel, PackedBf16, NR};
use crate::kernels::f32_slice;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// An f32 matrix read through strides: element (`r`, `c`) is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix.
    pub(super) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose of a row-major `rows × cols` matrix (a `cols × rows` view).
    pub(super) fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, cols, rows, 1, cols)
    }

    fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "bf16 view: {rows}×{cols} does not fit in {} values",
            data.len()
        );
        View {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.rs + c * self.cs]
    }
}

impl PackedBf16 {
    /// Rounds the matrix `v` (`out_dim × in_dim`) to bf16 and packs it as [`PackedBf16::pack`]
    /// does, one panel per parallel task.
    pub(super) fn pack_view(v: View) -> Self {
        let (out_dim, in_dim) = (v.rows, v.cols);
        let k2 = in_dim.next_multiple_of(2);
        let mut data = crate::kernels::zeroed::<u16>(out_dim.div_ceil(NR) * NR * k2);
        if k2 > 0 {
            data.par_chunks_mut(NR * k2).enumerate().for_each_init(
                || vec![0u16; k2],
                |row, (p, panel)| {
                    let n0 = p * NR;
                    let here = (out_dim - n0).min(NR);
                    pack_panel(&v, n0, here, panel, row);
                },
            );
        }
        PackedBf16 {
            out_dim,
            in_dim,
            k2,
            data,
        }
    }
}

impl Bf16Acts {
    /// Rounds the matrix `v` to bf16 activations (as [`Bf16Acts::convert`] for a row-major
    /// one; a transposed view is read down its columns, which are contiguous).
    pub(super) fn convert_view(v: View) -> Self {
        let k2 = v.cols.next_multiple_of(2);
        Self::build(
            v.rows,
            k2,
            || (),
            |_, r0, here, out| {
                if v.cs == 1 {
                    for i in 0..here {
                        let start = (r0 + i) * v.rs;
                        super::convert_row(&v.data[start..start + v.cols], out.row(i));
                    }
                } else {
                    convert_columns(&v, r0, here, out);
                }
            },
        )
    }
}

/// Whether the vector conversions below may run (the CPU has AVX512_BF16, by the kernel choice).
fn vector() -> bool {
    cfg!(target_arch = "x86_64") && Bf16Kernel::detect().vector()
}

/// Rows `n0 .. n0 + here` of `v` into one panel (`row`: scratch of `k2` values).
fn pack_panel(v: &View, n0: usize, here: usize, panel: &mut [u16], row: &mut [u16]) {
    let k2 = v.cols.next_multiple_of(2);
    #[cfg(target_arch = "x86_64")]
    if vector() && v.rs == 1 {
        // Consecutive outputs lie side by side: each pair of inputs is two vector loads.
        for kp in 0..k2 / 2 {
            let k = 2 * kp;
            let hi = k + 1 < v.cols;
            // SAFETY: the AVX512_BF16 kernel was chosen, so the CPU has it; the view's
            // elements (n0 .. n0 + here, k and k + 1 when `hi`) are inside `v.data` (checked
            // when the view was made), and the store writes pair slot `kp` of this panel.
            unsafe {
                let p = simd::pairs(
                    v.data.as_ptr().add(n0 + k * v.cs),
                    v.data.as_ptr().add(n0 + (k + hi as usize) * v.cs),
                    hi,
                    here,
                );
                simd::store(panel[kp * NR * 2..(kp + 1) * NR * 2].as_mut_ptr(), p);
            }
        }
        return;
    }
    if v.cs == 1 {
        // Each output's inputs are one contiguous row: convert it, then interleave.
        for j in 0..here {
            let start = (n0 + j) * v.rs;
            super::convert_row(&v.data[start..start + v.cols], row);
            for kp in 0..k2 / 2 {
                panel[kp * NR * 2 + j * 2] = row[2 * kp];
                panel[kp * NR * 2 + j * 2 + 1] = row[2 * kp + 1];
            }
        }
        return;
    }
    for k in 0..v.cols {
        let at = (k / 2) * NR * 2 + k % 2;
        for j in 0..here {
            panel[at + j * 2] = to_bf16(v.at(n0 + j, k));
        }
    }
}

/// Rows `r0 .. r0 + here` of a view whose rows are not contiguous (a transpose) into `out`.
fn convert_columns(v: &View, r0: usize, here: usize, out: &mut super::RowsOut) {
    #[cfg(target_arch = "x86_64")]
    if vector() && v.rs == 1 {
        let mut lanes = [0u32; 16];
        for kp in 0..v.cols.div_ceil(2) {
            let c = 2 * kp;
            let hi = c + 1 < v.cols;
            for i0 in (0..here).step_by(16) {
                let m = (here - i0).min(16);
                // SAFETY: as in `pack_panel`: rows r0 + i0 .. + m of columns c (and c + 1)
                // are inside `v.data`; the store writes the 16 lanes of `lanes`.
                unsafe {
                    let p = simd::pairs(
                        v.data.as_ptr().add(r0 + i0 + c * v.cs),
                        v.data.as_ptr().add(r0 + i0 + (c + hi as usize) * v.cs),
                        hi,
                        m,
                    );
                    simd::store(lanes.as_mut_ptr() as *mut u16, p);
                }
                for (j, &pair) in lanes[..m].iter().enumerate() {
                    let at = (i0 + j) * out.k2 + c;
                    out.q[at] = pair as u16;
                    out.q[at + 1] = (pair >> 16) as u16;
                }
            }
        }
        return;
    }
    for c in 0..v.cols {
        for i in 0..here {
            out.q[i * out.k2 + c] = to_bf16(v.at(r0 + i, c));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Lane `i < count` = bf16(`lo[i]`) in the low half and bf16(`hi[i]`) in the high half
    /// (`vcvtne2ps2bf16`, the rounding of `to_bf16`), the other lanes and, without `has_hi`,
    /// the high halves zero. Reads `lo[.. count]` (and `hi[.. count]`) only.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pairs(
        lo: *const f32,
        hi: *const f32,
        has_hi: bool,
        count: usize,
    ) -> __m512i {
        let mask: __mmask16 = if count >= 16 {
            0xffff
        } else {
            (1u16 << count) - 1
        };
        let order = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        let a = _mm512_maskz_loadu_ps(mask, lo);
        let b = if has_hi {
            _mm512_maskz_loadu_ps(mask, hi)
        } else {
            _mm512_setzero_ps()
        };
        let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
        _mm512_permutexvar_epi16(order, both)
    }

    /// The 32 bf16 of `p` to `at .. at + 32`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn store(at: *mut u16, p: __m512i) {
        _mm512_storeu_si512(at as *mut _, p)
    }
}

/// `x Wᵀ + b` with bf16 products (f32 sums), differentiable in `x`, `W` and `b`; the
/// gradients' products are bf16 too, the bias gradient f32.
pub fn linear_train_bf16(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LinearTrainBf16)
}

struct LinearTrainBf16;

/// The last dimension of a layout (1 for a scalar, so that divisions stay defined).
fn last(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

fn with_last(l: &Layout, n: usize) -> Shape {
    let mut dims = l.dims().to_vec();
    if let Some(d) = dims.last_mut() {
        *d = n;
    }
    Shape::from(dims)
}

impl CustomOp3 for LinearTrainBf16 {
    fn name(&self) -> &'static str {
        "lecr-linear-train-bf16"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let b = f32_slice(s3, l3, self.name())?;
        let (out_dim, in_dim) = l2.shape().dims2()?;
        if last(l1) != in_dim || b.len() != out_dim {
            candle_core::bail!(
                "bf16 linear: input {:?}, weight {out_dim}×{in_dim}, bias {}",
                l1.dims(),
                b.len()
            );
        }
        let acts = Bf16Acts::convert(x, in_dim);
        let packed = PackedBf16::pack_view(View::rows(w, out_dim, in_dim));
        let y = product(&acts, &packed, Some(b), Bf16Kernel::detect());
        Ok((CpuStorage::F32(y), with_last(l1, out_dim)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let dx = g.apply_op2_no_bwd(w, &InputGrad)?;
        let dw = g.apply_op2_no_bwd(x, &WeightGrad)?;
        let db = crate::kernels::linear::bias_grad(&g)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `dX = dY · W` (`rows × out` times `out × in`): the weights packed as the `in × out` `Wᵀ`.
struct InputGrad;

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "lecr-linear-input-grad-bf16"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let (out_dim, in_dim) = l2.shape().dims2()?;
        let acts = Bf16Acts::convert(g, out_dim);
        let wt = PackedBf16::pack_view(View::transposed(w, out_dim, in_dim));
        let dx = product(&acts, &wt, None, Bf16Kernel::detect());
        Ok((CpuStorage::F32(dx), with_last(l1, in_dim)))
    }
}

/// `dW = dYᵀ · X` (`out × rows` times `rows × in`): `dYᵀ` as the activations, `X` packed as
/// the `in × rows` `Xᵀ` (pairs of consecutive rows, which is how `X` lies in memory).
struct WeightGrad;

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "lecr-linear-weight-grad-bf16"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s1, l1, self.name())?;
        let x = f32_slice(s2, l2, self.name())?;
        let (out_dim, in_dim) = (last(l1), last(l2));
        let rows = g.len() / out_dim;
        if x.len() != rows * in_dim {
            candle_core::bail!(
                "bf16 weight gradient: {rows} gradient rows, input {:?}",
                l2.dims()
            );
        }
        if rows == 0 {
            return Ok((
                CpuStorage::F32(vec![0.0; out_dim * in_dim]),
                Shape::from((out_dim, in_dim)),
            ));
        }
        let gt = Bf16Acts::convert_view(View::transposed(g, rows, out_dim));
        let xt = PackedBf16::pack_view(View::transposed(x, rows, in_dim));
        let dw = product(&gt, &xt, None, Bf16Kernel::detect());
        Ok((CpuStorage::F32(dw), Shape::from((out_dim, in_dim))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{from_bf16, to_bf16};
    use candle_core::{Device, Tensor, Var};

    fn round(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| from_bf16(to_bf16(x)) as f64).collect()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Largest |a − b| over the largest |b|.
    fn rel(a: &[f32], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y).abs())
            .fold(0f64, f64::max)
            / scale
    }

    #[test]
    fn views_pack_and_convert_exactly_as_the_materialised_matrices() {
        use super::super::{Bf16Acts, PackedBf16};
        use super::View;
        let d = Device::Cpu;
        for (rows, cols) in [(1usize, 1usize), (37, 45), (64, 16), (70, 33), (5, 130)] {
            let m = values(&Tensor::randn(0f32, 1.0, (rows, cols), &d).unwrap());
            let mut t = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = m[r * cols + c];
                }
            }
            // Row-major and transposed views against `pack` / `convert` of the same values.
            let direct = PackedBf16::pack(&m, rows, cols);
            let viewed = PackedBf16::pack_view(View::rows(&m, rows, cols));
            assert_eq!(viewed.data, direct.data, "{rows}×{cols} rows");
            let direct_t = PackedBf16::pack(&t, cols, rows);
            let viewed_t = PackedBf16::pack_view(View::transposed(&m, rows, cols));
            assert_eq!(viewed_t.data, direct_t.data, "{rows}×{cols} transposed");
            let acts_t = Bf16Acts::convert(&t, rows);
            let view_t = Bf16Acts::convert_view(View::transposed(&m, rows, cols));
            assert_eq!((view_t.rows, view_t.k2), (acts_t.rows, acts_t.k2));
            assert_eq!(view_t.data, acts_t.data, "{rows}×{cols} acts transposed");
        }
    }

    #[test]
    fn products_and_gradients_are_those_of_bf16_rounded_operands() {
        let d = Device::Cpu;
        println!("bf16 kernel: {}", super::Bf16Kernel::detect().name());
        // Odd sizes: rows not a multiple of the micro-tile, inputs and outputs not of a panel.
        for (batch, len, inp, out) in [(3usize, 13usize, 45usize, 19usize), (1, 70, 64, 33)] {
            let rows = batch * len;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, len, inp), &d).unwrap())
                .unwrap();
            let w = Var::from_tensor(&Tensor::randn(0f32, 0.3, (out, inp), &d).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, out, &d).unwrap()).unwrap();
            let r = Tensor::randn(0f32, 1.0, (batch, len, out), &d).unwrap();
            let y = super::linear_train_bf16(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (xv, wv, bv, rv) = (values(&x), values(&w), values(&b), values(&r));
            let (xr, wr, rr) = (round(&xv), round(&wv), round(&rv));
            // f64 references over the bf16-rounded operands.
            let mut want_y = vec![0f64; rows * out];
            let mut want_dx = vec![0f64; rows * inp];
            let mut want_dw = vec![0f64; out * inp];
            let mut want_db = vec![0f64; out];
            for i in 0..rows {
                for o in 0..out {
                    let mut s = bv[o] as f64;
                    for k in 0..inp {
                        s += xr[i * inp + k] * wr[o * inp + k];
                        want_dx[i * inp + k] += rr[i * out + o] * wr[o * inp + k];
                        want_dw[o * inp + k] += rr[i * out + o] * xr[i * inp + k];
                    }
                    want_y[i * out + o] = s;
                    want_db[o] += rv[i * out + o] as f64;
                }
            }
            let get = |v: &Var| values(grads.get(v).expect("gradient"));
            for (name, got, want) in [
                ("y", values(&y), &want_y),
                ("dx", get(&x), &want_dx),
                ("dw", get(&w), &want_dw),
                ("db", get(&b), &want_db),
            ] {
                // Only the f32 sums differ from the reference.
                let e = rel(&got, want);
                assert!(e < 1e-5, "{rows}×{inp}→{out} {name}: {e}");
            }
            // And the rounding did happen: the float products differ by about 2⁻⁹.
            let float_dw: Vec<f64> = {
                let mut v = vec![0f64; out * inp];
                for i in 0..rows {
                    for o in 0..out {
                        for k in 0..inp {
                            v[o * inp + k] += rv[i * out + o] as f64 * xv[i * inp + k] as f64;
                        }
                    }
                }
                v
            };
            let e = rel(&get(&w), &float_dw);
            assert!(e > 1e-5 && e < 1e-2, "dw against the float product: {e}");
        }
    }
}

//! The dense layer `x Wᵀ + b` in one matrix product (the bias pre-fills the output, which gemm
//! accumulates into): for inference optionally followed by GELU in the same pass, and for
//! training as one differentiable op whose backward pass is two products and a column sum.
//! Built from candle primitives (reshape, matmul, transpose, broadcast add, reshape) a dense
//! layer is five graph nodes, and candle's backward pass zero-fills and adds a full-size
//! gradient for each of them.

use super::{f32_slice, for_rows};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct LinearInfer {
    gelu: bool,
}

impl CustomOp3 for LinearInfer {
    fn name(&self) -> &'static str {
        "lecr-linear-infer"
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
        let (out_dim, in_dim) = (l2.dims()[0], l2.dims()[1]);
        let rows = x.len() / in_dim.max(1);
        let mut y = super::zeroed(rows * out_dim);
        for_rows(&mut y, out_dim, |_, r| r.copy_from_slice(b));
        // x is rows × in; w (out × in) is read as its transpose.
        matmul(
            rows,
            out_dim,
            in_dim,
            &mut y,
            Operand::rows(x, in_dim),
            Operand::cols(w, in_dim),
            true,
        );
        if self.gelu {
            let dim = 4096.min(y.len().max(1));
            for_rows(&mut y, dim, |_, r| super::gelu::gelu_in_place(r));
        }
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("non-empty dims") = out_dim;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

/// A matrix operand of [`matmul`]: its elements with the strides of its rows and columns.
struct Operand<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// Row-major with rows of `width`.
    fn rows(data: &'a [f32], width: usize) -> Self {
        Operand {
            data,
            row_stride: width,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major matrix with rows of `width`.
    fn cols(data: &'a [f32], width: usize) -> Self {
        Operand {
            data,
            row_stride: 1,
            col_stride: width,
        }
    }
    /// Whether element (`r`, `c`) of an `rows × cols` view lies inside `data`.
    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst = lhs · rhs` (`m × k` times `k × n` into row-major `m × n`), or `dst += …` when
/// `accumulate`; multi-threaded with gemm.
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    assert!(
        dst.len() >= m * n && lhs.covers(m, k) && rhs.covers(k, n),
        "matmul: operands smaller than {m}×{k} · {k}×{n}"
    );
    // SAFETY: the assertion above keeps every element gemm touches inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// `lhs · rhs` (`m × k` times `k × n`) into a new row-major `m × n` matrix, written once by
/// gemm (no zero-fill first).
fn product(m: usize, n: usize, k: usize, lhs: Operand, rhs: Operand) -> Vec<f32> {
    if k == 0 {
        return vec![0.0; m * n];
    }
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let spare = &mut out.spare_capacity_mut()[..m * n];
    // SAFETY: `MaybeUninit<f32>` has f32's layout; gemm with `accumulate == false` (and k > 0)
    // writes every element of the m × n destination without reading it.
    let dst = unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<f32>(), m * n) };
    matmul(m, n, k, dst, lhs, rhs, false);
    // SAFETY: all m·n elements were just written.
    unsafe { out.set_len(m * n) };
    out
}

/// The sums of the columns of a row-major matrix (last dimension = columns): the bias
/// gradient. Rows are summed in blocks on all threads, then the block sums in order.
struct ColumnSum;

simd_fn! {
    fn add_rows(acc: &mut [f32], rows: &[f32]) {
        for r in rows.chunks_exact(acc.len()) {
            for (a, &v) in acc.iter_mut().zip(r) {
                *a += v;
            }
        }
    }
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "lecr-column-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, self.name())?;
        let cols = *l.dims().last().unwrap_or(&1);
        if cols == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from(0)));
        }
        let per = (1 << 15) / cols + 1;
        let partial: Vec<Vec<f32>> = g
            .par_chunks(per * cols)
            .map(|block| {
                let mut acc = vec![0f32; cols];
                add_rows(&mut acc, block);
                acc
            })
            .collect();
        let mut sum = vec![0f32; cols];
        for p in &partial {
            add_rows(&mut sum, p);
        }
        Ok((CpuStorage::F32(sum), Shape::from(cols)))
    }
}

/// The bias gradient of a dense layer: the column sums of the contiguous output gradient.
pub(crate) fn bias_grad(g: &Tensor) -> Result<Tensor> {
    g.apply_op1_no_bwd(&ColumnSum)
}

/// `x Wᵀ + b`, differentiable in `x`, `W` and `b`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LinearTrain)
}

struct LinearTrain;

impl CustomOp3 for LinearTrain {
    fn name(&self) -> &'static str {
        "lecr-linear"
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
        LinearInfer { gelu: false }.cpu_fwd(s1, l1, s2, l2, s3, l3)
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
        let db = bias_grad(&g)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `dX = dY · W` (`rows × out` times `out × in`).
struct InputGrad;

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "lecr-linear-input-grad"
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
        let (out_dim, in_dim) = (l2.dims()[0], l2.dims()[1]);
        let rows = g.len() / out_dim.max(1);
        let dx = product(
            rows,
            in_dim,
            out_dim,
            Operand::rows(g, out_dim),
            Operand::rows(w, in_dim),
        );
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("non-empty dims") = in_dim;
        Ok((CpuStorage::F32(dx), Shape::from(dims)))
    }
}

/// `dW = dYᵀ · X` (`out × rows` times `rows × in`).
struct WeightGrad;

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "lecr-linear-weight-grad"
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
        let out_dim = *l1.dims().last().unwrap_or(&1);
        let in_dim = *l2.dims().last().unwrap_or(&1);
        let rows = g.len() / out_dim.max(1);
        // g (rows × out) is read as its transpose.
        let dw = product(
            out_dim,
            in_dim,
            rows,
            Operand::cols(g, out_dim),
            Operand::rows(x, in_dim),
        );
        Ok((CpuStorage::F32(dw), Shape::from((out_dim, in_dim))))
    }
}

/// `x Wᵀ + b` (then GELU when `gelu`), without a backward pass.
pub fn linear_infer(x: &Tensor, w: &Tensor, b: &Tensor, gelu: bool) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &LinearInfer { gelu })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_matmul_plus_bias_and_gelu() {
        let d = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 70, 48), &d).unwrap();
        let w = Tensor::randn(0f32, 0.2, (96, 48), &d).unwrap();
        let b = Tensor::randn(0f32, 1.0, 96, &d).unwrap();
        let want = x
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        for gelu in [false, true] {
            let got = super::linear_infer(&x, &w, &b, gelu).unwrap();
            let want = if gelu {
                want.gelu_erf().unwrap()
            } else {
                want.clone()
            };
            assert_eq!(got.dims(), &[3, 70, 96]);
            let diff = super::super::max_diff(&got, &want);
            assert!(diff < 1e-4, "gelu {gelu}: {diff}");
        }
    }
}

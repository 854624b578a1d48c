//! Fused CPU kernels with forward and backward passes, written because candle's own fused
//! `layer_norm` and `softmax_last_dim` have no backward (gradients silently stop) and its
//! element-wise GELU is slow on CPU. Each op is f32, contiguous, multi-threaded over rows with
//! rayon, and checked against a composition of candle primitives in the tests.

/// Defines `fn NAME(args)` that runs its body compiled for AVX-512 or AVX2+FMA when the CPU
/// has them (checked once), else for the baseline target. The body is written once.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])* $vis fn $name($($a: $t),*) {
            #[inline(always)]
            fn imp($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($a: $t),*) { imp($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($a: $t),*) { imp($($a),*) }
                match $crate::kernels::simd_level() {
                    // SAFETY: the CPU has the features these were compiled for.
                    4 => return unsafe { v4($($a),*) },
                    3 => return unsafe { v3($($a),*) },
                    _ => {}
                }
            }
            imp($($a),*)
        }
    };
}

/// 4: AVX-512, 3: AVX2 + FMA, 0: baseline (the active level of [`isa`], capped by `LECR_ISA`).
pub fn simd_level() -> u8 {
    match isa::active() {
        isa::Isa::Amx | isa::Isa::Avx512 => 4,
        isa::Isa::AvxVnni | isa::Isa::Avx2 => 3,
        isa::Isa::Scalar => 0,
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
pub mod attention;
pub mod bf16;
pub mod dropout;
pub mod gelu;
pub mod int8;
pub mod isa;
pub mod layer_norm;
pub mod linear;
pub mod math;
pub mod quantized;
pub mod scores;
pub mod softmax;

pub use dropout::Dropout;
pub use gelu::gelu;
pub use layer_norm::layer_norm;
pub use softmax::{masked_softmax, softmax_last_dim};

use candle_core::{bail, CpuStorage, Layout, Result};
use rayon::prelude::*;

/// A zero-filled vector, filled by all threads when large: single-threaded zero-filling of the
/// big activation buffers showed up in inference profiles.
pub(crate) fn zeroed<T: Copy + Send + Sync + Default>(len: usize) -> Vec<T> {
    if len < 1 << 16 {
        return vec![T::default(); len];
    }
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(1 << 15)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(T::default())));
    // SAFETY: all `len` elements were just written.
    unsafe { v.set_len(len) };
    v
}

/// The contiguous f32 data behind a storage and layout.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!("{op}: only f32 tensors are supported"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Runs `f(row_index, out_row)` over the rows of `out` (each `dim` long; the last one may be
/// shorter), in parallel when big.
pub(crate) fn for_rows(out: &mut [f32], dim: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if dim == 0 {
        return;
    }
    let rows = out.len() / dim;
    // About 16k elements per task keeps scheduling overhead small.
    let per = (16_384 / dim).max(1);
    if rows <= per {
        for (i, r) in out.chunks_mut(dim).enumerate() {
            f(i, r);
        }
        return;
    }
    out.par_chunks_mut(per * dim)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, r) in chunk.chunks_mut(dim).enumerate() {
                f(c * per + j, r);
            }
        });
}

/// Largest absolute difference between two tensors of the same shape (kernel tests).
#[cfg(test)]
pub(crate) fn max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    //! Each fused op against the same function built from candle primitives: values and
    //! gradients (of a random projection of the output) must agree.
    use candle_core::{Device, Tensor, Var, D};

    fn rand(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| r.gen_range(-scale..scale)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    use super::max_diff;

    /// Compares `fused` and `reference` on inputs `xs`: outputs and all input gradients.
    fn check(
        xs: Vec<Tensor>,
        fused: impl Fn(&[Tensor]) -> Tensor,
        reference: impl Fn(&[Tensor]) -> Tensor,
        tol: f32,
    ) {
        let vars: Vec<Var> = xs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let yf = fused(&ts);
        let yr = reference(&ts);
        assert!(
            max_diff(&yf, &yr) < tol,
            "forward differs by {}",
            max_diff(&yf, &yr)
        );
        let proj = rand(yf.dims(), 99, 1.0);
        let gf = (yf * &proj).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &proj).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let a = gf
                .get(v)
                .unwrap_or_else(|| panic!("fused op gave input {i} no gradient"));
            let b = gr.get(v).unwrap();
            let d = max_diff(a, b);
            assert!(d < tol, "gradient of input {i} differs by {d}");
        }
    }

    #[test]
    fn softmax_matches_primitives() {
        // Large enough to take the parallel path.
        let x = rand(&[4, 3, 70, 70], 1, 8.0);
        check(
            vec![x],
            |t| super::softmax_last_dim(&t[0]).unwrap(),
            |t| candle_nn::ops::softmax(&t[0], D::Minus1).unwrap(),
            1e-5,
        );
    }

    #[test]
    fn linear_matches_primitives() {
        // Three-dimensional input (as in the encoder), sizes that are not multiples of the
        // vector width; the second has rows enough for several blocks of the bias gradient.
        for rows in [37, 900] {
            let x = rand(&[3, rows, 24], 5, 1.0);
            let w = rand(&[19, 24], 6, 0.5);
            let b = rand(&[19], 7, 1.0);
            check(
                vec![x, w, b],
                |t| super::linear::linear(&t[0], &t[1], &t[2]).unwrap(),
                |t| {
                    t[0].broadcast_matmul(&t[1].t().unwrap())
                        .unwrap()
                        .broadcast_add(&t[2])
                        .unwrap()
                },
                2e-3,
            );
        }
    }

    #[test]
    fn gelu_matches_primitives() {
        let x = rand(&[3, 50, 200], 2, 6.0);
        check(
            vec![x],
            |t| super::gelu(&t[0]).unwrap(),
            |t| t[0].gelu_erf().unwrap(),
            1e-5,
        );
    }

    #[test]
    fn layer_norm_matches_primitives() {
        let x = (rand(&[5, 40, 96], 3, 3.0) + 0.7).unwrap();
        let g = (rand(&[96], 4, 0.5) + 1.0).unwrap();
        let b = rand(&[96], 5, 0.5);
        let reference = |t: &[Tensor]| {
            let mean = t[0].mean_keepdim(D::Minus1).unwrap();
            let xc = t[0].broadcast_sub(&mean).unwrap();
            let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let y = xc
                .broadcast_div(&(var + 1e-12).unwrap().sqrt().unwrap())
                .unwrap();
            y.broadcast_mul(&t[1])
                .unwrap()
                .broadcast_add(&t[2])
                .unwrap()
        };
        check(
            vec![x, g, b],
            |t| super::layer_norm(&t[0], &t[1], &t[2], 1e-12).unwrap(),
            reference,
            2e-4,
        );
    }

    #[test]
    fn dropout_is_seeded_and_scales_kept_values() {
        let x = Tensor::ones((1000,), candle_core::DType::F32, &Device::Cpu).unwrap();
        let a = super::Dropout::new(7)
            .apply(&x, 0.25)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = super::Dropout::new(7)
            .apply(&x, 0.25)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b);
        let zeros = a.iter().filter(|&&v| v == 0.0).count();
        assert!((180..320).contains(&zeros), "{zeros} dropped of 1000");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    }
}

#[cfg(test)]
mod masked_tests {
    use super::max_diff;
    use candle_core::{Device, Tensor, Var, D};

    #[test]
    fn masked_softmax_equals_scaled_softmax_with_a_large_negative_bias() {
        let dev = Device::Cpu;
        let (b, h, l) = (3, 2, 5);
        let x: Vec<f32> = (0..b * h * l * l)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3)
            .collect();
        let mask = Tensor::new(
            &[
                [1f32, 1., 1., 0., 0.],
                [1., 1., 1., 1., 1.],
                [1., 0., 0., 0., 0.],
            ],
            &dev,
        )
        .unwrap();
        let xv = Var::from_vec(x, (b, h, l, l), &dev).unwrap();
        let scale = 0.7;
        let fused = super::masked_softmax(xv.as_tensor(), &mask, scale).unwrap();
        let bias = ((mask.ones_like().unwrap() - &mask).unwrap() * -1e9)
            .unwrap()
            .reshape((b, 1, 1, l))
            .unwrap();
        let reference = candle_nn::ops::softmax(
            &(xv.as_tensor() * scale)
                .unwrap()
                .broadcast_add(&bias)
                .unwrap(),
            D::Minus1,
        )
        .unwrap();
        let diff = max_diff(&fused, &reference);
        assert!(diff < 1e-6, "forward differs by {diff}");
        let w = Tensor::arange(0f32, (b * h * l * l) as f32, &dev)
            .unwrap()
            .reshape((b, h, l, l))
            .unwrap()
            .sin()
            .unwrap();
        let g1 = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = max_diff(g1.get(&xv).unwrap(), g2.get(&xv).unwrap());
        assert!(d < 1e-5, "gradient differs by {d}");
    }
}

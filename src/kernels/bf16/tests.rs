//! The bf16 kernels against exact sums of the rounded inputs, against f32, and each other.

use super::*;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// Every kernel this CPU runs; names the ones it cannot.
fn kernels() -> Vec<Bf16Kernel> {
    let k = Bf16Kernel::available();
    if !k.contains(&Bf16Kernel::Avx512Bf16) {
        eprintln!("not tested on this CPU: the AVX512-BF16 kernel (the CPU lacks AVX512_BF16)");
    }
    if !k.contains(&Bf16Kernel::Amx) {
        eprintln!("not tested on this CPU: the AMX-BF16 kernel (no AMX, or Linux refused it)");
    }
    k
}

/// `(Σ x̂ ŵ in f64, Σ |x̂ ŵ|)` per output, from the bf16-rounded inputs.
fn exact(x: &[f32], w: &[f32], k: usize, n: usize) -> Vec<(f64, f64)> {
    let r = |v: f32| from_bf16(to_bf16(v)) as f64;
    let rows = x.len() / k;
    let mut out = Vec::with_capacity(rows * n);
    for i in 0..rows {
        for c in 0..n {
            let (mut s, mut m) = (0f64, 0f64);
            for j in 0..k {
                let p = r(x[i * k + j]) * r(w[c * k + j]);
                s += p;
                m += p.abs();
            }
            out.push((s, m));
        }
    }
    out
}

#[test]
fn rounding_is_to_nearest_even_and_flushes_subnormals() {
    assert_eq!(to_bf16(1.0), 0x3f80);
    // Exactly halfway: to the even neighbour, down from 0x3f80 and up from 0x3f81.
    assert_eq!(to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
    assert_eq!(to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert_eq!(to_bf16(-2.5), 0xc020);
    assert_eq!(to_bf16(f32::from_bits(1)), 0);
    assert_eq!(to_bf16(-f32::from_bits(0x0040_0000)), 0x8000);
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
    for v in random(1000, 9, 100.0) {
        let back = from_bf16(to_bf16(v));
        // 8 significant bits: half a unit in the last place is at most 2⁻⁸ of the value.
        assert!((back - v).abs() <= v.abs() * 2f32.powi(-8), "{v} -> {back}");
    }
}

#[test]
fn vector_conversion_equals_the_portable_one() {
    if Bf16Kernel::detect() != Bf16Kernel::Portable {
        let mut x = random(1000, 3, 10.0);
        // Ties, subnormals, zeros of both signs.
        x.extend([
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(3),
            -0.0,
            0.0,
        ]);
        for len in [0, 1, 15, 16, 17, x.len()] {
            let (mut a, mut b) = (vec![7u16; len + 3], vec![7u16; len + 3]);
            convert_row(&x[..len], &mut a);
            portable::convert_row(&x[..len], &mut b);
            assert_eq!(a, b, "length {len}");
            assert!(a[len..].iter().all(|&v| v == 7), "wrote past the row");
        }
    } else {
        eprintln!("not tested on this CPU: the AVX512-BF16 conversion");
    }
}

#[test]
fn every_kernel_matches_exact_sums_of_the_rounded_inputs_on_odd_shapes() {
    for (rows, k, n) in [
        (1, 1, 1),
        (3, 7, 5),
        (9, 33, 17),
        (8, 64, 48),
        (17, 384, 49),
        (70, 131, 100),
        // Whole 64-byte tile rows, more than one task, an odd last panel (AMX).
        (130, 768, 80),
    ] {
        let x = random(rows * k, 1 + k as u64, 2.0);
        let w = random(n * k, 2 + n as u64, 0.2);
        let bias = random(n, 3, 1.0);
        let packed = PackedBf16::pack(&w, n, k);
        let acts = Bf16Acts::convert(&x, k);
        let want = exact(&x, &w, k, n);
        let mut first: Option<Vec<f32>> = None;
        for kernel in kernels() {
            let mut y = vec![f32::NAN; rows * n];
            matmul(&acts, &packed, Some(&bias), kernel, &mut y);
            for (j, (&got, &(s, m))) in y.iter().zip(&want).enumerate() {
                let e = s + bias[j % n] as f64;
                // f32 sums of exact products: within k roundings of the magnitudes.
                let tol = (k as f64 + 2.0) * 2f64.powi(-24) * (m + bias[j % n].abs() as f64);
                assert!(
                    (got as f64 - e).abs() <= tol + 1e-30,
                    "{} {rows}x{k}x{n} [{j}]: {got} vs {e} (tol {tol})",
                    kernel.name()
                );
            }
            if let Some(f) = &first {
                // The kernels add the same exact products in different groupings: equal to
                // within those roundings, not to the bit.
                for (a, b) in y.iter().zip(f) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
                }
            } else {
                first = Some(y);
            }
        }
    }
}

#[test]
fn bf16_products_stay_within_the_input_rounding_of_f32() {
    let (rows, k, n) = (33, 384, 64);
    let x = random(rows * k, 11, 1.5);
    let w = random(n * k, 12, 0.1);
    let acts = Bf16Acts::convert(&x, k);
    let packed = PackedBf16::pack(&w, n, k);
    for kernel in kernels() {
        let mut y = vec![0f32; rows * n];
        matmul(&acts, &packed, None, kernel, &mut y);
        let mut worst = 0f64;
        for i in 0..rows {
            for c in 0..n {
                let (mut f, mut m) = (0f64, 0f64);
                for j in 0..k {
                    let p = x[i * k + j] as f64 * w[c * k + j] as f64;
                    f += p;
                    m += p.abs();
                }
                // Each product is off by at most two input roundings (2⁻⁹ each, relative).
                let err = (y[i * n + c] as f64 - f).abs();
                assert!(
                    err <= m * 2f64.powi(-8) * 1.01,
                    "{}: {err} > {m}·2⁻⁸",
                    kernel.name()
                );
                worst = worst.max(err / m);
            }
        }
        // Errors of independent roundings mostly cancel: far inside the bound.
        assert!(
            worst < 2f64.powi(-10),
            "{}: worst relative {worst}",
            kernel.name()
        );
    }
}

#[test]
fn stacked_weights_give_the_columns_of_each_part() {
    let k = 37;
    let parts: Vec<(usize, Vec<f32>)> = [5usize, 16, 21]
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, random(n * k, 20 + i as u64, 0.3)))
        .collect();
    let packed: Vec<PackedBf16> = parts
        .iter()
        .map(|(n, w)| PackedBf16::pack(w, *n, k))
        .collect();
    let stacked = PackedBf16::stack(&packed.iter().collect::<Vec<_>>()).expect("same inputs");
    assert_eq!(stacked.out_dim, 42);
    let all: Vec<f32> = parts.iter().flat_map(|(_, w)| w.clone()).collect();
    assert_eq!(stacked.to_f32(), PackedBf16::pack(&all, 42, k).to_f32());
    let x = random(9 * k, 30, 1.0);
    let acts = Bf16Acts::convert(&x, k);
    for kernel in kernels() {
        let mut y = vec![0f32; 9 * 42];
        matmul(&acts, &stacked, None, kernel, &mut y);
        let mut col = 0;
        for p in &packed {
            let mut part = vec![0f32; 9 * p.out_dim];
            matmul(&acts, p, None, kernel, &mut part);
            for r in 0..9 {
                assert_eq!(
                    &y[r * 42 + col..r * 42 + col + p.out_dim],
                    &part[r * p.out_dim..(r + 1) * p.out_dim]
                );
            }
            col += p.out_dim;
        }
    }
    let other = PackedBf16::pack(&random(4 * 8, 1, 1.0), 4, 8);
    assert!(PackedBf16::stack(&[&packed[0], &other]).is_none());
}

#[test]
fn the_fused_feed_forward_equals_its_two_layers() {
    use candle_core::{Device, Tensor};
    let (rows, h, mid) = (13, 40, 70);
    let x = Tensor::from_vec(random(rows * h, 40, 1.0), (rows, h), &Device::Cpu).unwrap();
    let up = Arc::new(PackedBf16::pack(&random(mid * h, 41, 0.2), mid, h));
    let down = Arc::new(PackedBf16::pack(&random(h * mid, 42, 0.2), h, mid));
    let bu = Tensor::from_vec(random(mid, 43, 0.5), mid, &Device::Cpu).unwrap();
    let bd = Tensor::from_vec(random(h, 44, 0.5), h, &Device::Cpu).unwrap();
    let fused = ffn_bf16(&x, (&up, Some(&bu)), (&down, Some(&bd))).unwrap();
    let i = linear_bf16(&x, &up, Some(&bu), true).unwrap();
    let two = linear_bf16(&i, &down, Some(&bd), false).unwrap();
    assert_eq!(fused.dims(), &[rows, h]);
    assert_eq!(
        fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        two.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let wrong = Tensor::zeros((2, h + 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = linear_bf16(&wrong, &up, None, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("41 features") && e.contains("expects 40"), "{e}");
}

#[test]
fn kernel_choice_follows_the_instruction_set_level() {
    use crate::kernels::isa::{CpuFeatures, Isa};
    let zen4 = CpuFeatures {
        avx2_fma: true,
        avx_vnni: false,
        avx512: true,
        avx512_vnni: true,
        avx512_bf16: true,
        amx: false,
    };
    assert_eq!(
        Bf16Kernel::best_for(Isa::Avx512, zen4),
        Bf16Kernel::Avx512Bf16
    );
    assert_eq!(Bf16Kernel::best_for(Isa::Amx, zen4), Bf16Kernel::Avx512Bf16);
    // Sapphire Rapids: the tiles at the AMX level, the vector kernel capped at avx512.
    let spr = CpuFeatures { amx: true, ..zen4 };
    assert_eq!(Bf16Kernel::best_for(Isa::Amx, spr), Bf16Kernel::Amx);
    assert_eq!(
        Bf16Kernel::best_for(Isa::Avx512, spr),
        Bf16Kernel::Avx512Bf16
    );
    // LECR_ISA=avx2 on the same CPU: the zmm kernel is off.
    assert_eq!(Bf16Kernel::best_for(Isa::Avx2, zen4), Bf16Kernel::Portable);
    // Ice Lake server: AVX-512 without BF16.
    let icx = CpuFeatures {
        avx512_bf16: false,
        ..zen4
    };
    assert_eq!(Bf16Kernel::best_for(Isa::Avx512, icx), Bf16Kernel::Portable);
}

//! Every int8 kernel against the integer definitions and against each other.

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
    for missing in [
        Int8Kernel::Amx,
        Int8Kernel::Vnni,
        Int8Kernel::AvxVnni,
        Int8Kernel::Avx2,
    ] {
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
        // Whole and partial 64-input tile rows, 32-row blocks and panel pairs (AMX).
        (33, 192, 80),
        (97, 130, 33),
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
fn amx_tiles_give_the_vnni_kernel_floats_bit_for_bit() {
    let k = Int8Kernel::available();
    if !k.contains(&Int8Kernel::Amx) {
        eprintln!(
            "skipped: no AMX here ({})",
            crate::kernels::isa::CpuFeatures::detect()
                .missing(crate::kernels::isa::Isa::Amx)
                .unwrap_or_else(|| "AMX is capped".into())
        );
        return;
    }
    // MiniLM's shapes (384 → 1152 fused QKV, 384 → 1536, 1536 → 384) and odd ones: rows not a
    // multiple of 16 or 32, inputs not a multiple of 64, an odd number of panels.
    for (i, (rows, k, n)) in [
        (256, 384, 1152),
        (100, 1536, 384),
        (17, 384, 1536),
        (31, 100, 16),
        (65, 68, 49),
        (1, 4, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let x = random(rows * k, 40 + i as u64, 3.0);
        let q = QuantizedMatrix::quantize(&random(n * k, 50 + i as u64, 0.4), n, k);
        let packed = PackedInt8::pack(&q);
        let bias = random(n, 60, 1.0);
        let acts = QuantizedActs::quantize(&x, k);
        let mut vnni = vec![0f32; rows * n];
        let mut amx = vec![f32::NAN; rows * n];
        matmul(&acts, &packed, Some(&bias), Int8Kernel::Vnni, &mut vnni);
        matmul(&acts, &packed, Some(&bias), Int8Kernel::Amx, &mut amx);
        assert_eq!(
            amx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            vnni.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{rows}×{k}×{n}"
        );
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
        avx512_bf16: true,
        amx: true,
    };
    assert_eq!(Int8Kernel::best_for(Isa::Amx, all), Int8Kernel::Amx);
    // The AMX level on a CPU without the tiles runs the AVX-512 VNNI kernel.
    let no_tiles = CpuFeatures { amx: false, ..all };
    assert_eq!(Int8Kernel::best_for(Isa::Amx, no_tiles), Int8Kernel::Vnni);
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
        avx512_bf16: false,
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
            portable::quantize_row_into(&scaled, &mut qb, &mut b);
            let mut qa = vec![0i8; n];
            // SAFETY: checked above.
            let a = unsafe { avx2::quantize_row(&x, m, &mut qa) };
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
            let a = unsafe { avx512_vnni::quantize_row(&x, m, &mut qa) };
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

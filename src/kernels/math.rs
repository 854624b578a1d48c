//! Branch-free `exp` and `erf` that the compiler can vectorise; accurate to a few ulp in f32,
//! far inside the 1e-4 parity budget.

/// e^x for f32, Cody–Waite range reduction and a degree-6 polynomial.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest with the 1.5·2²³ trick: vectorises everywhere, no libm call.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    // x - n ln 2 in two steps for precision.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_524 + r * 0.001_388_89)))));
    // n as an integer straight from t's low mantissa bits (t = 1.5·2²³ + n exactly): an
    // integer subtraction, which vectorises, where `n as i32` (a saturating conversion) does
    // not.
    let ni = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    p * scale
}

/// Σ x, with 16 independent accumulators so the compiler can vectorise it.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for k in 0..16 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// Σ a·b, vectorisable.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (mut ia, mut ib) = (a.chunks_exact(16), b.chunks_exact(16));
    for (ca, cb) in (&mut ia).zip(&mut ib) {
        for k in 0..16 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let tail: f32 = ia
        .remainder()
        .iter()
        .zip(ib.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// max x, vectorisable.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for k in 0..16 {
            acc[k] = acc[k].max(c[k]);
        }
    }
    it.remainder()
        .iter()
        .chain(&acc)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// erf(x) as a rational function of x² on [-4, 4] (the approximation Eigen and XLA use for
/// f32; absolute error below 1e-7, beyond ±4 erf is ±1 in f32). No exp, so it is cheap: GELU
/// over the feed-forward activations is a visible share of inference.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10_f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024e-6;
    let p = p * x2 - 5.692_506_4e-5;
    let p = p * x2 - 7.349_906_3e-4;
    let p = p * x2 - 2.954_600_1e-3;
    let p = p * x2 - 1.609_603_3e-2;
    let q = -1.456_607_2e-5_f32;
    let q = q * x2 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329e-3;
    let q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_std_within_a_few_ulp() {
        let mut worst = 0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((super::exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 2e-6, "max relative error {worst}");
        assert_eq!(super::exp(-1000.0), super::exp(-87.3));
    }

    #[test]
    fn erf_stays_within_3e_7_everywhere() {
        // Against a double-precision series/continued-fraction-free reference: std has no erf,
        // so compare with the integral of the Gaussian by Simpson's rule.
        let reference = |x: f64| {
            let n = 2000;
            let h = x / n as f64;
            let f = |t: f64| (-t * t).exp();
            let mut s = f(0.0) + f(x);
            for i in 1..n {
                s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(i as f64 * h);
            }
            s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
        };
        let mut worst = 0f64;
        let mut x = -6.0f64;
        while x < 6.0 {
            worst = worst.max((super::erf(x as f32) as f64 - reference(x)).abs());
            x += 0.0173;
        }
        assert!(worst < 3e-7, "max abs error {worst}");
    }

    #[test]
    fn erf_matches_reference_values() {
        // erf values from tables.
        for (x, e) in [
            (0.0, 0.0),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.0, -0.842_700_8),
            (4.0, 0.999_999_98),
        ] {
            assert!(
                (super::erf(x) - e).abs() < 3e-7,
                "erf({x}) = {} not {e}",
                super::erf(x)
            );
        }
    }
}

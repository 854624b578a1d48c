//! The AVX2 path: activation quantization, and the products with 8-bit weights (sign moved
//! onto the weights, `vpsignb`) and with 7-bit weights (unsigned activations straight in).

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

ymm_kernel!(
    eight_bit, "avx2", signed: true, unsigned_x: false,
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

ymm_kernel!(
    seven_bit, "avx2", signed: true, unsigned_x: true,
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

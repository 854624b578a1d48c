//! Attention's two products in bf16 for the bf16 models (`--bf16`): the scores q·kᵀ and the
//! weighted sum of values, each with `vdpbf16ps` (two products per f32 lane), f32 sums. Scaling,
//! the masked softmax and its normalisation stay in f32; the probabilities are rounded to bf16
//! only as inputs of the second product (as PyTorch's bf16 autocast does), while the sum that
//! normalises them is taken over the f32 values.
//!
//! Per item and head, like the f32 kernel in `kernels::attention`: the head's keys and values
//! are rounded and packed once (keys in pairs of features, values in pairs of keys), then
//! blocks of [`QB`] queries are scored against all keys, so no more than `QB × keys` scores
//! exist at a time. Only the AVX512_BF16 path exists: without it the bf16 model's attention
//! runs the f32 kernel, which is then both faster and closer to f32.

use crate::kernels::math;
use std::arch::x86_64::*;

/// Queries per block: `QB` rows of accumulators share every key (or value) load.
pub(crate) const QB: usize = 8;
/// Keys per score vector, features per output vector (16 f32 lanes).
const W: usize = 16;
/// Key blocks (or feature blocks) per pass: `QB × NB` accumulators plus `NB` loads stay in
/// the 32 zmm registers.
const NB: usize = 3;

/// One item's inputs: rows `stride` apart, q/k/v starting at their own column (already
/// offset), `width` = heads × dh features each; `keep` is 1 for keys that count.
pub(crate) struct Item<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub stride: usize,
    pub width: usize,
    pub heads: usize,
    pub scale: f32,
    pub keep: &'a [f32],
}

/// Per-task buffers, reused across items and heads.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Keys of one head: blocks of W keys, within a block per pair of features W × 2 values.
    kp: Vec<u16>,
    /// Values of one head: blocks of W features, within a block per pair of keys W × 2 values.
    vp: Vec<u16>,
    /// QB query rows of the head in bf16 (dh rounded up to even).
    qb: Vec<u16>,
    /// QB rows of scores, then of f32 probabilities (keys rounded up to W).
    scores: Vec<f32>,
    /// QB rows of probabilities in bf16 (keys rounded up to even).
    pb: Vec<u16>,
    /// One head's keys in bf16, row by row (dh rounded up to even).
    kb: Vec<u16>,
    /// Weight of each key (keys rounded up to W; 0 past the item).
    keepw: Vec<f32>,
    /// 0 for keys that count, -∞ for the rest.
    neg: Vec<f32>,
}

#[inline(always)]
fn as_bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512-bit plain-data vectors; every bit pattern is valid for either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// One item's attention into `out` (`n × width`, zero where nothing is written; rows of
/// masked queries stay untouched). Keys and queries after the last kept position are ignored
/// (padding is on the right).
///
/// # Safety
/// The CPU must have AVX512_BF16 (`Bf16Kernel::Avx512Bf16`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")]
pub(crate) unsafe fn item(it: &Item, sc: &mut Scratch, out: &mut [f32]) {
    let (rs, h, heads) = (it.stride, it.width, it.heads);
    let dh = h / heads;
    let keep = it.keep;
    let n = keep.iter().rposition(|&m| m != 0.0).map_or(0, |p| p + 1);
    if n == 0 {
        return;
    }
    let need = (n - 1) * rs + h;
    assert!(it.q.len() >= need && it.k.len() >= need && it.v.len() >= need);
    assert!(out.len() >= n * h);
    let dh2 = dh.next_multiple_of(2);
    let npw = n.next_multiple_of(W);
    let n2 = n.next_multiple_of(2);
    let dw = dh.next_multiple_of(W);
    sc.kp.clear();
    sc.kp.resize(npw * dh2, 0);
    sc.kb.clear();
    sc.kb.resize(n * dh2, 0);
    sc.vp.clear();
    sc.vp.resize(dw * n2, 0);
    sc.qb.clear();
    sc.qb.resize(QB * dh2, 0);
    sc.scores.clear();
    sc.scores.resize(QB * npw, 0.0);
    sc.pb.clear();
    sc.pb.resize(QB * n2, 0);
    // Keys that count weigh 1 (`keep`), the rest 0; their scores are -∞ before the max.
    sc.keepw.clear();
    sc.keepw.extend_from_slice(&keep[..n]);
    sc.keepw.resize(npw, 0.0);
    sc.neg.clear();
    sc.neg.extend(
        sc.keepw
            .iter()
            .map(|&m| if m != 0.0 { 0.0 } else { f32::NEG_INFINITY }),
    );
    for hd in 0..heads {
        let c0 = hd * dh;
        pack_keys(it, sc, n, c0, dh, dh2);
        pack_values(it, sc, n, c0, dh, n2);
        let mut i0 = 0;
        while i0 < n {
            let nq = (n - i0).min(QB);
            // The block's queries in bf16; rows past nq repeat the last (never stored).
            for r in 0..QB {
                let qi = i0 + r.min(nq - 1);
                let row = &mut sc.qb[r * dh2..r * dh2 + dh2];
                super::avx512::convert_row(&it.q[qi * rs + c0..qi * rs + c0 + dh], row);
            }
            scores(sc, dh2, npw);
            let mut inv = [0f32; QB];
            let scale = _mm512_set1_ps(it.scale);
            for (r, inv) in inv.iter_mut().enumerate() {
                let sr = &mut sc.scores[r * npw..(r + 1) * npw];
                let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
                for c in (0..npw).step_by(W) {
                    // SAFETY: c + W <= npw, the length of sr and of neg.
                    let v = _mm512_fmadd_ps(
                        _mm512_loadu_ps(sr.as_ptr().add(c)),
                        scale,
                        _mm512_loadu_ps(sc.neg.as_ptr().add(c)),
                    );
                    _mm512_storeu_ps(sr.as_mut_ptr().add(c), v);
                    mx = _mm512_max_ps(mx, v);
                }
                let max = _mm512_reduce_max_ps(mx);
                for (s, &m) in sr.iter_mut().zip(&sc.keepw) {
                    *s = math::exp(*s - max) * m;
                }
                *inv = 1.0 / math::sum(sr);
                // Keys n .. n2 weigh 0: the pair past an odd count adds nothing.
                super::avx512::convert_row(&sr[..n2], &mut sc.pb[r * n2..(r + 1) * n2]);
            }
            values(sc, n2, dw, |r, db, acc| {
                let qi = i0 + r;
                if r < nq && keep[qi] != 0.0 {
                    let c = c0 + db;
                    let left = dh - db;
                    let mask: __mmask16 = if left >= W {
                        0xffff
                    } else {
                        (1u16 << left) - 1
                    };
                    let v = _mm512_mul_ps(acc, _mm512_set1_ps(inv[r]));
                    // SAFETY: qi < n, c + (lanes in mask) <= h, out holds n × h.
                    _mm512_mask_storeu_ps(out.as_mut_ptr().add(qi * h + c), mask, v);
                }
            });
            i0 += nq;
        }
    }
}

/// The head's keys at columns `c0 .. c0 + dh`, rounded (row by row, into `kb`) and packed into
/// `kp`: element (key j, feature d) at block j/W, pair d/2, lane j%W, half d%2.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_keys(it: &Item, sc: &mut Scratch, n: usize, c0: usize, dh: usize, dh2: usize) {
    let rs = it.stride;
    for j in 0..n {
        super::avx512::convert_row(
            &it.k[j * rs + c0..j * rs + c0 + dh],
            &mut sc.kb[j * dh2..(j + 1) * dh2],
        );
    }
    let pairs = dh2 / 2;
    let lanes = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(pairs as i32),
    );
    let kb = sc.kb.as_ptr() as *const i32;
    let kp = sc.kp.as_mut_ptr() as *mut i32;
    for b in 0..n.div_ceil(W) {
        let left = n - b * W;
        let mask: __mmask16 = if left >= W {
            0xffff
        } else {
            (1u16 << left) - 1
        };
        // SAFETY: the gather reads pairs g of keys b·W .. b·W + left (< n rows of kb); the
        // store writes block b of kp (npw / W blocks of W × pairs).
        let base = kb.add(b * W * pairs);
        for g in 0..pairs {
            let idx = _mm512_add_epi32(lanes, _mm512_set1_epi32(g as i32));
            let v = _mm512_mask_i32gather_epi32::<4>(
                _mm512_setzero_si512(),
                mask,
                idx,
                base as *const _,
            );
            _mm512_storeu_si512(kp.add((b * pairs + g) * W) as *mut _, v);
        }
    }
}

/// The head's values at columns `c0 .. c0 + dh`, rounded and packed into `vp`: element
/// (key j, feature d) at block d/W, pair j/2, lane d%W, half j%2.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_values(it: &Item, sc: &mut Scratch, n: usize, c0: usize, dh: usize, n2: usize) {
    let rs = it.stride;
    // Lane 2i takes feature i of the first key, 2i + 1 feature i of the second.
    let order = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    let v = it.v.as_ptr();
    let vp = sc.vp.as_mut_ptr();
    for db in (0..dh).step_by(W) {
        let left = dh - db;
        let mask: __mmask16 = if left >= W {
            0xffff
        } else {
            (1u16 << left) - 1
        };
        for j in (0..n).step_by(2) {
            // SAFETY: rows j (and j + 1 when < n) are inside the item; the masked loads read
            // columns c0 + db .. c0 + dh only; the store writes pair j/2 of block db/W.
            let a = _mm512_maskz_loadu_ps(mask, v.add(j * rs + c0 + db));
            let b = if j + 1 < n {
                _mm512_maskz_loadu_ps(mask, v.add((j + 1) * rs + c0 + db))
            } else {
                _mm512_setzero_ps()
            };
            let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
            let pairs = _mm512_permutexvar_epi16(order, both);
            _mm512_storeu_si512(vp.add((db / W) * W * n2 + (j / 2) * W * 2) as *mut _, pairs);
        }
    }
}

/// `scores[r][j] = q_r · k_j` for the QB queries in `sc.qb` and every key block.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
unsafe fn scores(sc: &mut Scratch, dh2: usize, npw: usize) {
    let blocks = npw / W;
    let block_len = W * dh2;
    let mut b = 0;
    while b < blocks {
        let nb = (blocks - b).min(NB);
        match nb {
            3 => score_blocks::<3>(sc, dh2, npw, b, block_len),
            2 => score_blocks::<2>(sc, dh2, npw, b, block_len),
            _ => score_blocks::<1>(sc, dh2, npw, b, block_len),
        }
        b += nb;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
unsafe fn score_blocks<const B: usize>(
    sc: &mut Scratch,
    dh2: usize,
    npw: usize,
    b: usize,
    block_len: usize,
) {
    // SAFETY (whole body): blocks b .. b + B exist in kp (npw / W blocks of block_len), query
    // rows hold dh2 values, and score rows npw ≥ (b + B) × W.
    let kp = sc.kp.as_ptr().add(b * block_len);
    let qb = sc.qb.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); B]; QB];
    for g in 0..dh2 / 2 {
        let mut kv = [_mm512_setzero_si512(); B];
        for (j, kv) in kv.iter_mut().enumerate() {
            *kv = _mm512_loadu_si512(kp.add(j * block_len + g * W * 2) as *const _);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let qv = _mm512_set1_epi32((qb.add(r * dh2 + g * 2) as *const i32).read_unaligned());
            for (a, &kv) in row.iter_mut().zip(&kv) {
                *a = _mm512_dpbf16_ps(*a, as_bh(kv), as_bh(qv));
            }
        }
    }
    let s = sc.scores.as_mut_ptr();
    for (r, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            _mm512_storeu_ps(s.add(r * npw + (b + j) * W), a);
        }
    }
}

/// `Σ_j p[r][j] · v_j` for the QB probability rows in `sc.pb`, handed per W features to
/// `store(row, first feature, sums)`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
unsafe fn values(sc: &Scratch, n2: usize, dw: usize, mut store: impl FnMut(usize, usize, __m512)) {
    let blocks = dw / W;
    let block_len = W * n2;
    let mut b = 0;
    while b < blocks {
        let nb = (blocks - b).min(NB);
        match nb {
            3 => value_blocks::<3>(sc, n2, b, block_len, &mut store),
            2 => value_blocks::<2>(sc, n2, b, block_len, &mut store),
            _ => value_blocks::<1>(sc, n2, b, block_len, &mut store),
        }
        b += nb;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
unsafe fn value_blocks<const B: usize>(
    sc: &Scratch,
    n2: usize,
    b: usize,
    block_len: usize,
    store: &mut impl FnMut(usize, usize, __m512),
) {
    // SAFETY (whole body): feature blocks b .. b + B exist in vp (dw / W blocks of
    // block_len), probability rows hold n2 values.
    let vp = sc.vp.as_ptr().add(b * block_len);
    let pb = sc.pb.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); B]; QB];
    for g in 0..n2 / 2 {
        let mut vv = [_mm512_setzero_si512(); B];
        for (j, vv) in vv.iter_mut().enumerate() {
            *vv = _mm512_loadu_si512(vp.add(j * block_len + g * W * 2) as *const _);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let pv = _mm512_set1_epi32((pb.add(r * n2 + g * 2) as *const i32).read_unaligned());
            for (a, &vv) in row.iter_mut().zip(&vv) {
                *a = _mm512_dpbf16_ps(*a, as_bh(vv), as_bh(pv));
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            store(r, (b + j) * W, a);
        }
    }
}

//! Content vectors held as int8 for ranking (a quarter of f32's memory and memory traffic),
//! each score with a proven upper bound, so that a caller can rescore with the exact f32
//! vectors only the rows that can reach its top and still get the exact answer.
//!
//! Row j is stored as `q_j · s_j` (symmetric, one scale per row: `s_j = max|c_j| / 127`,
//! `q = round(c / s)`), with the norm of what that leaves out, `e_j = ‖c_j − s_j q_j‖₂`, and
//! the norm of what it keeps, `n_j = ‖s_j q_j‖₂`. A topic t is quantized the same way (`t ≈
//! s_t p`, `r_t = ‖t − s_t p‖₂`), so the product is one integer dot product, exact on every
//! instruction set (AVX-512 VNNI's `vpdpbusd`, or portable integer loops: the same value to
//! the bit), and the approximate score is `a = (s_j s_t) · (q_j · p)`. With `c̃ = s_j q_j` and
//! `t̃ = s_t p`, `c·t = c̃·t̃ + c̃·(t − t̃) + (c − c̃)·t`, so by Cauchy–Schwarz
//!
//! ```text
//! c_j · t  ≤  a + ‖t‖₂ e_j + n_j r_t + (d + 1) 2⁻²² · max|c_j| · ‖t‖₁ + 2⁻²¹ |a| + 10⁻⁶
//! ```
//!
//! holds for the f32 value of `c_j · t` as [`chain_dot`] computes it: the fourth term is twice
//! the worst-case rounding of that f32 sum (below `d · 2⁻²⁴` times the sum of the magnitudes,
//! which is at most `max|c_j| · ‖t‖₁`), the fifth the rounding of `a`'s two products, and the
//! constant that of the bound's own additions (similarities are at most 1 in magnitude).
//! The same terms bound `c_j · t` from below.
//!
//! The layout is blocks of 16 rows, four dimensions at a time (`vpdpbusd`'s operand: 16 rows ×
//! 4 int8), blocks kept in pairs; a pair stays in cache while every topic of a call passes
//! over it, so a large language is read from memory once per call, not once per topic.

use super::int8::Int8Kernel;
use super::scores::BLOCK;
use rayon::prelude::*;

/// Dimensions one `vpdpbusd` lane takes at once.
const GROUP: usize = 4;
/// Topics one pass of the kernel holds accumulators for (2 blocks each: 16 zmm registers).
const TOPICS: usize = 8;

/// `c · t` as the exact scores compute it: one fused multiply-add chain over the dimensions in
/// order (equal to [`super::scores::PackedRows::dot`] and to its block product, to the bit).
pub fn chain_dot(c: &[f32], t: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (&x, &y) in c.iter().zip(t) {
        acc = x.mul_add(y, acc);
    }
    acc
}

/// Rows quantized to int8 for approximate scoring, with each row's scale and norms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantizedRows {
    d: usize,
    n: usize,
    data: Vec<i8>,
    /// Per row: the scale `s_j`.
    scale: Vec<f32>,
    /// Per row: `‖c_j − s_j q_j‖₂`, rounded up.
    residual: Vec<f32>,
    /// Per row: `‖s_j q_j‖₂`, rounded up.
    kept: Vec<f32>,
    /// Per row: `128 · Σ_k q_jk`, what the unsigned topic offset adds to its dot product.
    offset: Vec<i32>,
}

/// A topic's norms, for its bounds.
#[derive(Debug, Clone, Copy)]
pub struct TopicNorms {
    l2: f32,
    l1: f32,
    /// `‖t − s_t p‖₂` of its quantization.
    residual: f32,
}

impl TopicNorms {
    pub fn of(t: &[f32]) -> Self {
        let l2 = t.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let l1 = t.iter().map(|&x| x.abs() as f64).sum::<f64>();
        let (_, residual) = quantize_topic(t, &mut vec![0u8; t.len().next_multiple_of(GROUP)]);
        // Rounded up: the bound must not shrink in the conversion.
        TopicNorms {
            l2: (l2 * (1.0 + 1e-6)) as f32,
            l1: (l1 * (1.0 + 1e-6)) as f32,
            residual,
        }
    }
}

/// Quantizes a topic into `out` as `p + 128` (`p = round(t / s_t)`, `s_t = max|t| / 127`; the
/// padding after `t` is `128`, a zero): returns `s_t` and the residual norm, rounded up.
fn quantize_topic(t: &[f32], out: &mut [u8]) -> (f32, f32) {
    let max = t.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let s = max / 127.0;
    out.fill(128);
    let mut residual = 0f64;
    for (o, &x) in out.iter_mut().zip(t) {
        let q = if s > 0.0 {
            (x / s).round().clamp(-127.0, 127.0)
        } else {
            0.0
        };
        *o = (q as i32 + 128) as u8;
        let r = x as f64 - (s as f64) * q as f64;
        residual += r * r;
    }
    (s, (residual.sqrt() * (1.0 + 1e-6)) as f32)
}

impl QuantizedRows {
    pub fn new(d: usize) -> Self {
        QuantizedRows {
            d,
            ..Default::default()
        }
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The dimensions as stored (a multiple of [`GROUP`], zeros after `d`).
    fn d4(&self) -> usize {
        self.d.next_multiple_of(GROUP)
    }

    pub fn shrink_to_fit(&mut self) {
        self.data.shrink_to_fit();
        self.scale.shrink_to_fit();
        self.residual.shrink_to_fit();
        self.kept.shrink_to_fit();
        self.offset.shrink_to_fit();
    }

    /// Bytes held (allocations, padding and spare capacity included).
    pub fn memory_bytes(&self) -> usize {
        self.data.capacity()
            + 4 * (self.scale.capacity()
                + self.residual.capacity()
                + self.kept.capacity()
                + self.offset.capacity())
    }

    fn at(&self, i: usize, k: usize) -> usize {
        ((i / BLOCK) * self.d4() + (k - k % GROUP)) * BLOCK + (i % BLOCK) * GROUP + k % GROUP
    }

    pub fn push(&mut self, row: &[f32]) {
        assert_eq!(row.len(), self.d, "row of the quantized dimension");
        let blocks = (self.n + 1).div_ceil(BLOCK).next_multiple_of(2);
        let need = blocks * self.d4() * BLOCK;
        if self.data.len() < need {
            // Grow by an eighth, as the f32 rows do (no doubling of a large catalog).
            if self.data.capacity() < need {
                let step = (need - self.data.len()).max(self.data.len() / 8);
                self.data.reserve_exact(step);
            }
            self.data.resize(need, 0);
        }
        for v in [&mut self.scale, &mut self.residual, &mut self.kept] {
            if v.len() == v.capacity() {
                v.reserve_exact((v.len() / 8).max(16));
            }
            v.push(0.0);
        }
        if self.offset.len() == self.offset.capacity() {
            self.offset.reserve_exact((self.offset.len() / 8).max(16));
        }
        self.offset.push(0);
        self.n += 1;
        self.set(self.n - 1, row);
    }

    pub fn set(&mut self, i: usize, row: &[f32]) {
        assert!(i < self.n && row.len() == self.d);
        let max = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
        let s = max / 127.0;
        let (mut residual, mut kept, mut sum) = (0f64, 0f64, 0i32);
        for (k, &x) in row.iter().enumerate() {
            let q = if s > 0.0 {
                (x / s).round().clamp(-127.0, 127.0)
            } else {
                0.0
            };
            let at = self.at(i, k);
            self.data[at] = q as i8;
            sum += q as i32;
            let c = (s as f64) * q as f64;
            kept += c * c;
            residual += (x as f64 - c) * (x as f64 - c);
        }
        self.scale[i] = s;
        self.residual[i] = (residual.sqrt() * (1.0 + 1e-6)) as f32;
        self.kept[i] = (kept.sqrt() * (1.0 + 1e-6)) as f32;
        self.offset[i] = 128 * sum;
    }

    /// Moves the last row into slot `i` (as `Vec::swap_remove`).
    pub fn swap_remove(&mut self, i: usize) {
        assert!(i < self.n);
        let last = self.n - 1;
        if i != last {
            for k in 0..self.d {
                let (from, to) = (self.at(last, k), self.at(i, k));
                self.data[to] = self.data[from];
            }
            self.scale[i] = self.scale[last];
            self.residual[i] = self.residual[last];
            self.kept[i] = self.kept[last];
            self.offset[i] = self.offset[last];
        }
        for k in 0..self.d {
            let at = self.at(last, k);
            self.data[at] = 0;
        }
        self.scale.pop();
        self.residual.pop();
        self.kept.pop();
        self.offset.pop();
        self.n -= 1;
        let blocks = self.n.div_ceil(BLOCK).next_multiple_of(2);
        self.data.truncate(blocks * self.d4() * BLOCK);
    }

    /// How far row `j`'s exact score for a topic of these norms can lie from its approximate
    /// one `a` (see the module's bound).
    pub fn slack(&self, j: usize, a: f32, t: TopicNorms) -> f32 {
        let max = self.scale[j] * 127.0;
        let rounding = (self.d + 1) as f32 * (2f32).powi(-22) * max * t.l1;
        let terms = t.l2 * self.residual[j] + self.kept[j] * t.residual + rounding;
        terms * (1.0 + 1e-6) + a.abs() * (2f32).powi(-21) + 1e-6
    }

    /// The upper bounds of a row of approximate scores (one topic's, of these norms).
    pub fn upper_bounds(&self, approx: &[f32], t: TopicNorms) -> Vec<f32> {
        approx
            .iter()
            .enumerate()
            .map(|(j, &a)| a + self.slack(j, a, t))
            .collect()
    }

    /// `m × len` approximate similarities of `topics` (`m × d`, row-major).
    pub fn scores(&self, topics: &[f32], m: usize) -> Vec<f32> {
        self.scores_with(Int8Kernel::detect(), topics, m)
    }

    /// [`scores`](Self::scores) on a given kernel (every kernel gives the same values to
    /// the bit: the products are exact integers).
    pub fn scores_with(&self, kernel: Int8Kernel, topics: &[f32], m: usize) -> Vec<f32> {
        let (d, d4, n) = (self.d, self.d4(), self.n);
        assert!(topics.len() >= m * d, "scores: topics slice");
        let mut out = vec![0f32; m * n];
        if m == 0 || n == 0 {
            return out;
        }
        let mut q = vec![0u8; m * d4];
        let scales: Vec<f32> = q
            .chunks_mut(d4)
            .zip(topics.chunks(d.max(1)))
            .map(|(o, t)| quantize_topic(t, o).0)
            .collect();
        let block = d4 * BLOCK;
        let pairs = self.data.len() / (2 * block);
        let ptr = SendPtr(out.as_mut_ptr());
        (0..pairs).into_par_iter().for_each(|pair| {
            let p = ptr;
            let b = &self.data[2 * pair * block..(2 * pair + 2) * block];
            let mut acc = [[[0i32; BLOCK]; 2]; TOPICS];
            for q0 in (0..m).step_by(TOPICS) {
                let nt = (m - q0).min(TOPICS);
                let t = &q[q0 * d4..(q0 + nt) * d4];
                pair_dots(kernel, t, nt, d4, b, &mut acc);
                for (dq, a) in acc.iter().enumerate().take(nt) {
                    let qi = q0 + dq;
                    for (half, a) in a.iter().enumerate() {
                        let j0 = (2 * pair + half) * BLOCK;
                        for (l, &v) in a.iter().enumerate().take(n.saturating_sub(j0)) {
                            let j = j0 + l;
                            let dot = (v - self.offset[j]) as f32;
                            // SAFETY: qi < m and j < n index inside `out`; each task writes
                            // only the columns of its own two blocks.
                            unsafe { *p.0.add(qi * n + j) = (self.scale[j] * scales[qi]) * dot };
                        }
                    }
                }
            }
        });
        out
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for the disjoint writes in `scores_with`.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `acc[q][h][l]` = unsigned topic `q` (of `nt`, `d4` bytes each) · int8 row `l` of block `h`
/// of the pair `b`.
fn pair_dots(
    kernel: Int8Kernel,
    t: &[u8],
    nt: usize,
    d4: usize,
    b: &[i8],
    acc: &mut [[[i32; BLOCK]; 2]; TOPICS],
) {
    #[cfg(target_arch = "x86_64")]
    if matches!(kernel, Int8Kernel::Vnni | Int8Kernel::Amx) {
        // SAFETY: `Int8Kernel::Vnni` is chosen (or offered to tests) only where the CPU has
        // AVX-512 VNNI, and `Amx` only where it has AMX too (every AMX CPU has AVX-512 VNNI);
        // these catalog scores run on VNNI either way.
        unsafe {
            match nt {
                1 => vnni::pair_dots::<1>(t, d4, b, acc),
                2 => vnni::pair_dots::<2>(t, d4, b, acc),
                3 => vnni::pair_dots::<3>(t, d4, b, acc),
                4 => vnni::pair_dots::<4>(t, d4, b, acc),
                5 => vnni::pair_dots::<5>(t, d4, b, acc),
                6 => vnni::pair_dots::<6>(t, d4, b, acc),
                7 => vnni::pair_dots::<7>(t, d4, b, acc),
                _ => vnni::pair_dots::<8>(t, d4, b, acc),
            }
        }
        return;
    }
    let _ = kernel;
    portable_pair_dots(t, nt, d4, b, acc);
}

simd_fn! {
    /// The portable form of [`vnni::pair_dots`] (the same integers).
    fn portable_pair_dots(t: &[u8], nt: usize, d4: usize, b: &[i8], acc: &mut [[[i32; BLOCK]; 2]; TOPICS]) {
        let block = d4 * BLOCK;
        for (q, a) in acc.iter_mut().enumerate().take(nt) {
            let tq = &t[q * d4..(q + 1) * d4];
            for (h, a) in a.iter_mut().enumerate() {
                let bh = &b[h * block..(h + 1) * block];
                let mut s = [0i32; BLOCK];
                for (g, tg) in tq.chunks_exact(GROUP).enumerate() {
                    let rows = &bh[g * BLOCK * GROUP..(g + 1) * BLOCK * GROUP];
                    for (l, r) in rows.chunks_exact(GROUP).enumerate() {
                        let mut x = 0i32;
                        for k in 0..GROUP {
                            x += tg[k] as i32 * r[k] as i32;
                        }
                        s[l] += x;
                    }
                }
                *a = s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{BLOCK, GROUP, TOPICS};
    use std::arch::x86_64::*;

    /// `acc[q][h][l]` for the first `N` topics: per four dimensions, one load of each block
    /// and one `vpdpbusd` per topic and block.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn pair_dots<const N: usize>(
        t: &[u8],
        d4: usize,
        b: &[i8],
        acc: &mut [[[i32; BLOCK]; 2]; TOPICS],
    ) {
        let block = d4 * BLOCK;
        assert!(t.len() >= N * d4 && b.len() >= 2 * block && N <= TOPICS);
        let mut a0 = [_mm512_setzero_si512(); N];
        let mut a1 = [_mm512_setzero_si512(); N];
        let (tp, bp) = (t.as_ptr(), b.as_ptr());
        for g in 0..d4 / GROUP {
            // SAFETY: the asserts above keep every read inside `t` and `b`.
            let r0 = _mm512_loadu_si512(bp.add(g * BLOCK * GROUP) as *const _);
            let r1 = _mm512_loadu_si512(bp.add(block + g * BLOCK * GROUP) as *const _);
            for q in 0..N {
                let x = (tp.add(q * d4 + g * GROUP) as *const i32).read_unaligned();
                let x = _mm512_set1_epi32(x);
                a0[q] = _mm512_dpbusd_epi32(a0[q], x, r0);
                a1[q] = _mm512_dpbusd_epi32(a1[q], x, r1);
            }
        }
        for q in 0..N {
            _mm512_storeu_si512(acc[q][0].as_mut_ptr() as *mut _, a0[q]);
            _mm512_storeu_si512(acc[q][1].as_mut_ptr() as *mut _, a1[q]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::scores::PackedRows;

    fn data(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
    }

    fn normalised(mut v: Vec<f32>, d: usize) -> Vec<f32> {
        for r in v.chunks_mut(d) {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            r.iter_mut().for_each(|x| *x /= n);
        }
        v
    }

    #[test]
    fn every_exact_score_lies_within_its_bound_on_odd_shapes() {
        for (m, n, d) in [
            (1, 1, 1),
            (3, 5, 7),
            (5, 33, 40),
            (9, 513, 384),
            (6, 47, 17),
        ] {
            let t = normalised(data(m * d, 1.0), d);
            let mut c = normalised(data(n * d, 2.0), d);
            // An outlier component and a zero row: the scale and the bound must cope.
            c[0] = 3.0;
            if n > 2 {
                c[d..2 * d].fill(0.0);
            }
            let q = {
                let mut q = QuantizedRows::new(d);
                c.chunks(d).for_each(|r| q.push(r));
                q
            };
            let approx = q.scores(&t, m);
            let exact = PackedRows::from_rows(&c, d).scores(&t, m);
            let mut widest = 0f32;
            for i in 0..m {
                let ti = &t[i * d..(i + 1) * d];
                let up = q.upper_bounds(&approx[i * n..(i + 1) * n], TopicNorms::of(ti));
                for j in 0..n {
                    let e = exact[i * n + j];
                    assert_eq!(e.to_bits(), chain_dot(&c[j * d..(j + 1) * d], ti).to_bits());
                    assert!(e <= up[j], "{m}x{n}x{d} ({i},{j}): {e} > {}", up[j]);
                    let below = 2.0 * approx[i * n + j] - up[j];
                    assert!(e >= below, "{m}x{n}x{d} ({i},{j}): {e} < {below}");
                    if j >= 2 {
                        widest = widest.max(up[j] - approx[i * n + j]);
                    }
                }
            }
            // The bound is useful, not just true: int8 keeps it to a few hundredths (past the
            // outlier row and the zero row).
            if d >= 40 {
                assert!(widest < 0.05, "{m}x{n}x{d}: bound {widest}");
            }
        }
    }

    #[test]
    fn every_kernel_gives_the_same_scores_to_the_bit() {
        let kernels = Int8Kernel::available();
        if !kernels.contains(&Int8Kernel::Vnni) {
            println!("AVX-512 VNNI scan not tested: this CPU has no AVX-512 VNNI");
        }
        for (m, n, d) in [(1, 1, 1), (3, 5, 7), (9, 70, 384), (17, 33, 18), (8, 64, 4)] {
            let t = normalised(data(m * d, 3.0), d);
            let c = normalised(data(n * d, 4.0), d);
            let mut q = QuantizedRows::new(d);
            c.chunks(d).for_each(|r| q.push(r));
            let want = q.scores_with(Int8Kernel::Scalar, &t, m);
            for &k in &kernels {
                let got = q.scores_with(k, &t, m);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} differs on {m}x{n}x{d}", k.name());
            }
            // And each is the integer product it stands for.
            for i in 0..m {
                let mut p = vec![0u8; d.next_multiple_of(GROUP)];
                let (st, _) = quantize_topic(&t[i * d..(i + 1) * d], &mut p);
                for j in 0..n {
                    let dot: i32 = (0..d)
                        .map(|k| (p[k] as i32 - 128) * q.data[q.at(j, k)] as i32)
                        .sum();
                    let a = (q.scale[j] * st) * dot as f32;
                    assert_eq!(want[i * n + j].to_bits(), a.to_bits(), "({i},{j})");
                }
            }
        }
    }

    #[test]
    fn push_set_swap_remove_keep_rows() {
        let d = 9;
        let rows: Vec<Vec<f32>> = (0..40).map(|i| data(d, i as f32)).collect();
        let t = data(d, 0.5);
        let mut q = QuantizedRows::new(d);
        rows.iter().for_each(|r| q.push(r));
        q.swap_remove(3);
        q.set(5, &rows[0]);
        let mut want = rows.clone();
        want.swap_remove(3);
        want[5] = rows[0].clone();
        let mut fresh = QuantizedRows::new(d);
        want.iter().for_each(|r| fresh.push(r));
        assert_eq!(q, fresh);
        assert_eq!(q.scores(&t, 1), fresh.scores(&t, 1));
        for _ in 0..39 {
            q.swap_remove(0);
        }
        assert!(q.is_empty());
        assert_eq!(q.scores(&t, 1), Vec::<f32>::new());
    }
}

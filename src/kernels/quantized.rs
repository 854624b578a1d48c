//! Content vectors held as int8 for ranking (a quarter of f32's memory and memory traffic),
//! each score with a proven upper bound, so that a caller can rescore with the exact f32
//! vectors only the rows that can reach its top and still get the exact answer.
//!
//! Row j is stored as `q_j · s_j` (symmetric, one scale per row: `s_j = max|c_j| / 127`,
//! `q = round(c / s)`), with the norm of what that leaves out, `e_j = ‖c_j − s_j q_j‖₂`. For a
//! topic t, the approximate score `a = s_j (q_j · t)` is computed in f32, and
//!
//! ```text
//! c_j · t  ≤  a + ‖t‖₂ e_j + (d + 1) 2⁻²² · max|c_j| · ‖t‖₁ + 10⁻⁶
//! ```
//!
//! holds for the f32 value of `c_j · t` as [`chain_dot`] computes it: Cauchy–Schwarz bounds the
//! residual's share, the middle term is twice the worst-case rounding of both f32 sums (each
//! below `d · 2⁻²⁴` times the sum of the magnitudes, which is at most `max|c_j| · ‖t‖₁`), and the
//! constant covers the rounding of the bound's own addition (similarities are at most 1 in
//! magnitude).
//!
//! The layout is [`super::scores::PackedRows`]'s: blocks of 16 rows, dimension-major, blocks
//! kept in pairs, 4 topics × 2 blocks of accumulators.

use super::scores::{by_block_pairs, BLOCK};

/// `c · t` as the exact scores compute it: one fused multiply-add chain over the dimensions in
/// order (equal to [`super::scores::PackedRows::dot`] and to its block product, to the bit).
pub fn chain_dot(c: &[f32], t: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (&x, &y) in c.iter().zip(t) {
        acc = x.mul_add(y, acc);
    }
    acc
}

/// Rows quantized to int8 for approximate scoring, with each row's scale and residual norm.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantizedRows {
    d: usize,
    n: usize,
    data: Vec<i8>,
    /// Per row: the scale `s_j`.
    scale: Vec<f32>,
    /// Per row: `‖c_j − s_j q_j‖₂`, rounded up.
    residual: Vec<f32>,
}

/// A topic's norms, for its bounds.
#[derive(Debug, Clone, Copy)]
pub struct TopicNorms {
    l2: f32,
    l1: f32,
}

impl TopicNorms {
    pub fn of(t: &[f32]) -> Self {
        let l2 = t.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let l1 = t.iter().map(|&x| x.abs() as f64).sum::<f64>();
        // Rounded up: the bound must not shrink in the conversion.
        TopicNorms {
            l2: (l2 * (1.0 + 1e-6)) as f32,
            l1: (l1 * (1.0 + 1e-6)) as f32,
        }
    }
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

    pub fn shrink_to_fit(&mut self) {
        self.data.shrink_to_fit();
        self.scale.shrink_to_fit();
        self.residual.shrink_to_fit();
    }

    /// Bytes held (allocations, padding and spare capacity included).
    pub fn memory_bytes(&self) -> usize {
        self.data.capacity() + 4 * (self.scale.capacity() + self.residual.capacity())
    }

    fn at(&self, i: usize, k: usize) -> usize {
        ((i / BLOCK) * self.d + k) * BLOCK + i % BLOCK
    }

    pub fn push(&mut self, row: &[f32]) {
        assert_eq!(row.len(), self.d, "row of the quantized dimension");
        let blocks = (self.n + 1).div_ceil(BLOCK).next_multiple_of(2);
        let need = blocks * self.d * BLOCK;
        if self.data.len() < need {
            // Grow by an eighth, as the f32 rows do (no doubling of a large catalog).
            if self.data.capacity() < need {
                let step = (need - self.data.len()).max(self.data.len() / 8);
                self.data.reserve_exact(step);
            }
            self.data.resize(need, 0);
        }
        for v in [&mut self.scale, &mut self.residual] {
            if v.len() == v.capacity() {
                v.reserve_exact((v.len() / 8).max(16));
            }
            v.push(0.0);
        }
        self.n += 1;
        self.set(self.n - 1, row);
    }

    pub fn set(&mut self, i: usize, row: &[f32]) {
        assert!(i < self.n && row.len() == self.d);
        let max = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
        let s = max / 127.0;
        let mut residual = 0f64;
        let base = self.at(i, 0);
        for (k, &x) in row.iter().enumerate() {
            let q = if s > 0.0 {
                (x / s).round().clamp(-127.0, 127.0)
            } else {
                0.0
            };
            self.data[base + k * BLOCK] = q as i8;
            let r = x as f64 - (s as f64) * q as f64;
            residual += r * r;
        }
        self.scale[i] = s;
        self.residual[i] = (residual.sqrt() * (1.0 + 1e-6)) as f32;
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
        }
        for k in 0..self.d {
            let at = self.at(last, k);
            self.data[at] = 0;
        }
        self.scale.pop();
        self.residual.pop();
        self.n -= 1;
        let blocks = self.n.div_ceil(BLOCK).next_multiple_of(2);
        self.data.truncate(blocks * self.d * BLOCK);
    }

    /// How far row `j`'s exact score for a topic of these norms can lie above its
    /// approximate one (see the module's bound).
    pub fn slack(&self, j: usize, t: TopicNorms) -> f32 {
        let max = self.scale[j] * 127.0;
        let rounding = (self.d + 1) as f32 * (2f32).powi(-22) * max * t.l1;
        t.l2 * self.residual[j] + rounding * (1.0 + 1e-6) + 1e-6
    }

    /// The upper bounds of a row of approximate scores (one topic's, of these norms).
    pub fn upper_bounds(&self, approx: &[f32], t: TopicNorms) -> Vec<f32> {
        approx
            .iter()
            .enumerate()
            .map(|(j, &a)| a + self.slack(j, t))
            .collect()
    }

    /// `m × len` approximate similarities of `topics` (`m × d`, row-major).
    pub fn scores(&self, topics: &[f32], m: usize) -> Vec<f32> {
        let scale = &self.scale;
        by_block_pairs(
            &self.data,
            self.d,
            self.n,
            topics,
            m,
            four_by_two,
            |j, v| v * scale[j],
        )
    }
}

simd_fn! {
    /// acc[2q + h][l] = topic q · int8 row l of block h (b0, b1).
    fn four_by_two(t: &[f32], d: usize, b0: &[i8], b1: &[i8], acc: &mut [[f32; BLOCK]; 8]) {
        let (t0, t1, t2, t3) = (&t[..d], &t[d..2 * d], &t[2 * d..3 * d], &t[3 * d..4 * d]);
        let (mut a0, mut a1, mut a2, mut a3) = ([0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
        let (mut a4, mut a5, mut a6, mut a7) = ([0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
        for k in 0..d {
            let r0: &[i8; BLOCK] = b0[k * BLOCK..(k + 1) * BLOCK].try_into().expect("a block row");
            let r1: &[i8; BLOCK] = b1[k * BLOCK..(k + 1) * BLOCK].try_into().expect("a block row");
            let mut f0 = [0f32; BLOCK];
            let mut f1 = [0f32; BLOCK];
            for l in 0..BLOCK {
                f0[l] = r0[l] as f32;
                f1[l] = r1[l] as f32;
            }
            let (x0, x1, x2, x3) = (t0[k], t1[k], t2[k], t3[k]);
            for l in 0..BLOCK {
                a0[l] = f0[l].mul_add(x0, a0[l]);
                a1[l] = f1[l].mul_add(x0, a1[l]);
                a2[l] = f0[l].mul_add(x1, a2[l]);
                a3[l] = f1[l].mul_add(x1, a3[l]);
                a4[l] = f0[l].mul_add(x2, a4[l]);
                a5[l] = f1[l].mul_add(x2, a5[l]);
                a6[l] = f0[l].mul_add(x3, a6[l]);
                a7[l] = f1[l].mul_add(x3, a7[l]);
            }
        }
        *acc = [a0, a1, a2, a3, a4, a5, a6, a7];
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

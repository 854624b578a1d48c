//! Similarities of a few topic vectors against many content vectors (`T Cᵀ`): the hot loop of
//! ranking in `eval` / `predict` and of every recommend request of `lecr serve`.
//!
//! A general gemm packs the whole content matrix on every call, which triples the memory
//! traffic of a product with few topics. Here the contents are kept packed: blocks of 16 rows
//! stored dimension by dimension, so one vector load holds dimension k of 16 contents and a
//! broadcast topic value multiplies them all; 4 topics × 2 blocks give 8 independent
//! accumulator chains. Each similarity is one fused multiply-add chain over the dimensions in
//! order, whatever the block, the number of topics or the instruction set, so the service
//! and `predict` get bit-identical similarities from the same vectors.

use rayon::prelude::*;

/// Rows per block (one AVX-512 vector of f32).
pub const BLOCK: usize = 16;
const TOPICS: usize = 4;

/// Rows packed for scoring. Block b holds rows 16b..16b+16, dimension-major: value
/// `data[(b·d + k)·16 + l]` is dimension k of row 16b + l. Rows past `len` are zero, and the
/// block count is kept even (the kernel takes blocks in pairs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackedRows {
    d: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedRows {
    pub fn new(d: usize) -> Self {
        PackedRows {
            d,
            n: 0,
            data: Vec::new(),
        }
    }

    /// Packs `n` row-major rows of `d` values.
    pub fn from_rows(rows: &[f32], d: usize) -> Self {
        let mut p = PackedRows::new(d);
        for r in rows.chunks_exact(d.max(1)) {
            p.push(r);
        }
        p
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Gives back the allocation's spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.data.shrink_to_fit();
    }

    /// Bytes the packed values hold (their allocation, padding and spare capacity included).
    pub fn memory_bytes(&self) -> usize {
        self.data.capacity() * std::mem::size_of::<f32>()
    }

    fn at(&self, i: usize, k: usize) -> usize {
        ((i / BLOCK) * self.d + k) * BLOCK + i % BLOCK
    }

    pub fn push(&mut self, row: &[f32]) {
        assert_eq!(row.len(), self.d, "row of the packed dimension");
        let blocks = (self.n + 1).div_ceil(BLOCK).next_multiple_of(2);
        let need = blocks * self.d * BLOCK;
        if self.data.len() < need {
            // Grow by an eighth, not by doubling: a large catalog's matrix would otherwise
            // hold up to twice its size after one write past a full allocation.
            if self.data.capacity() < need {
                let step = (need - self.data.len()).max(self.data.len() / 8);
                self.data.reserve_exact(step);
            }
            self.data.resize(need, 0.0);
        }
        self.n += 1;
        self.set(self.n - 1, row);
    }

    pub fn set(&mut self, i: usize, row: &[f32]) {
        assert!(i < self.n && row.len() == self.d);
        for (k, &v) in row.iter().enumerate() {
            let at = self.at(i, k);
            self.data[at] = v;
        }
    }

    pub fn row(&self, i: usize) -> Vec<f32> {
        (0..self.d).map(|k| self.data[self.at(i, k)]).collect()
    }

    /// Row `i` · `v`: one fused multiply-add chain over the dimensions in order, so the value
    /// equals the same pair's in [`scores`](Self::scores) to the bit.
    pub fn dot(&self, i: usize, v: &[f32]) -> f32 {
        assert!(i < self.n && v.len() >= self.d, "dot: row and vector");
        let mut acc = 0f32;
        for (k, &x) in v[..self.d].iter().enumerate() {
            acc = self.data[self.at(i, k)].mul_add(x, acc);
        }
        acc
    }

    /// Moves the last row into slot `i` (as `Vec::swap_remove`).
    pub fn swap_remove(&mut self, i: usize) {
        assert!(i < self.n);
        let last = self.n - 1;
        if i != last {
            let r = self.row(last);
            self.set(i, &r);
        }
        self.set(last, &vec![0.0; self.d]);
        self.n -= 1;
        let blocks = self.n.div_ceil(BLOCK).next_multiple_of(2);
        self.data.truncate(blocks * self.d * BLOCK);
    }

    /// `m × len` similarities of `topics` (`m × d`, row-major) against the packed rows.
    pub fn scores(&self, topics: &[f32], m: usize) -> Vec<f32> {
        by_block_pairs(&self.data, self.d, self.n, topics, m, four_by_two, |_, v| v)
    }
}

/// Accumulators of one pass: `acc[2q + h][l]` is topic q · row l of block h.
pub(crate) type Acc = [[f32; BLOCK]; 2 * TOPICS];

/// The `m × n` product of `topics` (`m × d`, row-major) with rows packed as [`PackedRows`]
/// packs them (values of any type `T`), blocks in pairs over rayon's pool: `kernel` fills the
/// accumulators of 4 topics × 2 blocks, and `value(row, sum)` is what is stored for a row.
pub(crate) fn by_block_pairs<T: Sync>(
    data: &[T],
    d: usize,
    n: usize,
    topics: &[f32],
    m: usize,
    kernel: fn(&[f32], usize, &[T], &[T], &mut Acc),
    value: impl Fn(usize, f32) -> f32 + Sync,
) -> Vec<f32> {
    assert!(topics.len() >= m * d, "scores: topics slice");
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    // Topics padded with zero rows to a multiple of 4.
    let mp = m.next_multiple_of(TOPICS);
    let mut t = vec![0f32; mp * d];
    t[..m * d].copy_from_slice(&topics[..m * d]);
    let block = d * BLOCK;
    let pairs = data.len() / (2 * block);
    let ptr = SendPtr(out.as_mut_ptr());
    (0..pairs).into_par_iter().for_each(|pair| {
        let p = ptr;
        let b0 = &data[2 * pair * block..(2 * pair + 1) * block];
        let b1 = &data[(2 * pair + 1) * block..(2 * pair + 2) * block];
        let mut acc = [[0f32; BLOCK]; 2 * TOPICS];
        for q0 in (0..mp).step_by(TOPICS) {
            kernel(&t[q0 * d..(q0 + TOPICS) * d], d, b0, b1, &mut acc);
            for (s, a) in acc.iter().enumerate() {
                let (q, half) = (q0 + s / 2, s % 2);
                if q >= m {
                    continue;
                }
                let j0 = (2 * pair + half) * BLOCK;
                for (l, &v) in a.iter().enumerate().take(n.saturating_sub(j0)) {
                    // SAFETY: q < m and j0 + l < n index inside `out`; each task writes
                    // only the columns of its own two blocks.
                    unsafe { *p.0.add(q * n + j0 + l) = value(j0 + l, v) };
                }
            }
        }
    });
    out
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for the disjoint writes in `scores`.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

simd_fn! {
    /// acc[2q + h][l] = topic q · row l of block h (b0, b1), one FMA chain per value.
    fn four_by_two(t: &[f32], d: usize, b0: &[f32], b1: &[f32], acc: &mut [[f32; BLOCK]; 8]) {
        let (t0, t1, t2, t3) = (&t[..d], &t[d..2 * d], &t[2 * d..3 * d], &t[3 * d..4 * d]);
        let (mut a0, mut a1, mut a2, mut a3) = ([0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
        let (mut a4, mut a5, mut a6, mut a7) = ([0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
        for k in 0..d {
            let r0: &[f32; BLOCK] = b0[k * BLOCK..(k + 1) * BLOCK].try_into().expect("a block row");
            let r1: &[f32; BLOCK] = b1[k * BLOCK..(k + 1) * BLOCK].try_into().expect("a block row");
            let (x0, x1, x2, x3) = (t0[k], t1[k], t2[k], t3[k]);
            for l in 0..BLOCK {
                a0[l] = r0[l].mul_add(x0, a0[l]);
                a1[l] = r1[l].mul_add(x0, a1[l]);
                a2[l] = r0[l].mul_add(x1, a2[l]);
                a3[l] = r1[l].mul_add(x1, a3[l]);
                a4[l] = r0[l].mul_add(x2, a4[l]);
                a5[l] = r1[l].mul_add(x2, a5[l]);
                a6[l] = r0[l].mul_add(x3, a6[l]);
                a7[l] = r1[l].mul_add(x3, a7[l]);
            }
        }
        *acc = [a0, a1, a2, a3, a4, a5, a6, a7];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
    }

    #[test]
    fn matches_plain_dot_products_on_odd_shapes() {
        for (m, n, d) in [
            (1, 1, 1),
            (3, 5, 7),
            (5, 33, 40),
            (9, 513, 384),
            (16, 47, 17),
        ] {
            let t = data(m * d, 1.0);
            let c = data(n * d, 2.0);
            let y = PackedRows::from_rows(&c, d).scores(&t, m);
            assert_eq!(y.len(), m * n);
            for i in 0..m {
                for j in 0..n {
                    let p = |k: usize| t[i * d + k] as f64 * c[j * d + k] as f64;
                    let want: f64 = (0..d).map(p).sum();
                    // f32 rounding: relative to the sum of the magnitudes.
                    let scale: f64 = (0..d).map(|k| p(k).abs()).sum();
                    let err = (y[i * n + j] as f64 - want).abs();
                    assert!(err <= 2e-5 * scale + 1e-7, "{m}x{n}x{d}: {err} of {scale}");
                }
            }
        }
        assert!(PackedRows::new(4).scores(&[1.0; 4], 1).is_empty());
    }

    #[test]
    fn dot_equals_the_block_product_to_the_bit() {
        for (n, d) in [(1, 1), (5, 7), (37, 384), (70, 33)] {
            let c = data(n * d, 3.0);
            let t = data(2 * d, 4.0);
            let p = PackedRows::from_rows(&c, d);
            let y = p.scores(&t, 2);
            for q in 0..2 {
                for j in 0..n {
                    let v = p.dot(j, &t[q * d..(q + 1) * d]);
                    assert_eq!(v.to_bits(), y[q * n + j].to_bits(), "{n}x{d} row {j}");
                }
            }
        }
    }

    #[test]
    fn a_topic_scores_the_same_alone_or_in_any_block() {
        let (n, d) = (70, 384);
        let t = data(7 * d, 3.0);
        let c = data(n * d, 4.0);
        let p = PackedRows::from_rows(&c, d);
        let all = p.scores(&t, 7);
        for i in 0..7 {
            let alone = p.scores(&t[i * d..(i + 1) * d], 1);
            assert_eq!(alone, all[i * n..(i + 1) * n], "topic {i}: bit for bit");
        }
        // Position does not matter either: row 3 scored as row 0 of its own matrix.
        let single = PackedRows::from_rows(&c[3 * d..4 * d], d).scores(&t, 7);
        for i in 0..7 {
            assert_eq!(single[i], all[i * n + 3]);
        }
    }

    #[test]
    fn push_set_swap_remove_keep_rows() {
        let d = 5;
        let rows: Vec<Vec<f32>> = (0..40).map(|i| data(d, i as f32)).collect();
        let mut p = PackedRows::new(d);
        for r in &rows {
            p.push(r);
        }
        assert_eq!(p.len(), 40);
        assert_eq!(p.row(17), rows[17]);
        p.swap_remove(3);
        assert_eq!((p.len(), p.row(3)), (39, rows[39].clone()));
        for _ in 0..39 {
            p.swap_remove(0);
        }
        assert!(p.is_empty());
        assert_eq!(p, PackedRows::new(d));
    }
}

//! Inference-only self-attention core: for each batch item, for each head, scores of every
//! query against the unmasked keys, softmax, and the weighted sum of values, in one task.
//! Replaces a batched matrix product per (item, head) — hundreds of tiny products per layer
//! whose dispatch cost more than their arithmetic — and skips padded queries, whose rows no
//! token reads. It reads q, k, v in the dense layers' `B × L × H` layout and writes the output
//! in it, so the heads are never split into or merged from separate tensors. Keys are
//! transposed per head so that the scores of one query are a vector over keys (no horizontal
//! sums). Training keeps the differentiable path (matmul, masked softmax, matmul).

use super::{f32_slice, math};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct AttentionInfer {
    keys: Keys,
    heads: usize,
    scale: f32,
    cols: Cols,
    products: Products,
    /// Items with fewer tokens run the f32 kernel even when `products` is bf16.
    bf16_from: usize,
}

/// The shortest item whose attention runs in bf16 under [`Products::Bf16`]. Below about a
/// hundred tokens the f32 kernel was as fast or faster on Zen 4 (packing the keys and values
/// to bf16 costs about what the cheaper products save); at 512 tokens bf16 saved 13% of an
/// encode.
pub const BF16_MIN_KEYS: usize = 96;

/// The precision of attention's two products (scores, weighted values). Scaling, softmax and
/// its normalisation are f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Products {
    F32,
    /// bf16 inputs, f32 sums (`kernels::bf16::attention`) where the CPU has AVX512_BF16;
    /// elsewhere the f32 kernel.
    Bf16,
}

impl Products {
    /// Whether the bf16 kernel runs for this choice on this CPU (and `LECR_ISA`).
    pub fn runs_bf16(self) -> bool {
        self == Products::Bf16 && super::bf16::Bf16Kernel::detect().vector()
    }
}

/// Where q, k and v sit in their rows: separate `T × H` tensors (stride H, offsets 0), or one
/// fused `T × 3H` product (stride 3H, offsets 0, H, 2H). `width` is H.
#[derive(Debug, Clone, Copy)]
struct Cols {
    stride: usize,
    q: usize,
    k: usize,
    v: usize,
    width: usize,
}

impl Cols {
    fn separate(h: usize) -> Self {
        Cols {
            stride: h,
            q: 0,
            k: 0,
            v: 0,
            width: h,
        }
    }
}

/// Keys per score block and features per output block: one 512-bit register of f32.
const W: usize = 16;

/// Per-task scratch: one head's keys transposed (dh × keys rounded up to W, zero-padded) and
/// one query's scores.
struct Scratch {
    kt: Vec<f32>,
    scores: Vec<f32>,
    /// The bf16 kernel's buffers (when it runs).
    #[cfg(target_arch = "x86_64")]
    bf16: super::bf16::attention::Scratch,
    #[cfg(not(target_arch = "x86_64"))]
    bf16: (),
}

/// Queries scored together: independent accumulator chains that share each key (or value)
/// load. Six keeps 6 × 16 lanes in registers with AVX2 (12 of its 16) and enough chains to
/// hide the multiply-add latency with AVX-512.
const QB: usize = 6;

simd_fn! {
    /// One item: q, k, v and out are L × H (H = heads × dh); `dims` is (heads, scale).
    /// Keys and queries after the last unmasked position are never touched (padding is on the
    /// right); rows of masked queries are left zero.
    fn item(q: &[f32], k: &[f32], v: &[f32], keep: &[f32], dims: (usize, f32, Cols), sc: &mut Scratch, out: &mut [f32]) {
        let (heads, scale, cols) = dims;
        let (rs, h) = (cols.stride, cols.width);
        let dh = h / heads;
        // Each of q, k, v starts at its own column of rows `rs` wide.
        let (q, k, v) = (&q[cols.q..], &k[cols.k..], &v[cols.v..]);
        let n = keep.iter().rposition(|&m| m != 0.0).map_or(0, |p| p + 1);
        if n == 0 {
            return;
        }
        // Every row read below is one of the first n, every column below h: check once, so
        // the loops can index without checks.
        let need = (n - 1) * rs + h;
        assert!(q.len() >= need && k.len() >= need && v.len() >= need && out.len() >= n * h);
        let np = n.div_ceil(W) * W;
        sc.kt.clear();
        sc.kt.resize(dh * np, 0.0);
        sc.scores.clear();
        sc.scores.resize(QB * np, 0.0);
        let (kt, scores) = (&mut sc.kt, &mut sc.scores);
        for hd in 0..heads {
            let c0 = hd * dh;
            for (d, row) in kt.chunks_exact_mut(np).enumerate() {
                for (j, t) in row[..n].iter_mut().enumerate() {
                    // SAFETY: j < n and c0 + d < h (checked above).
                    *t = unsafe { *k.get_unchecked(j * rs + c0 + d) };
                }
            }
            let mut i0 = 0;
            while i0 < n {
                let nq = (n - i0).min(QB);
                // Always QB queries (the last repeated at the end), so the inner loops have
                // constant trip counts and their accumulators stay in registers.
                let qrow: [&[f32]; QB] = std::array::from_fn(|r| {
                    let at = (i0 + r.min(nq - 1)) * rs + c0;
                    &q[at..at + dh]
                });
                for jb in (0..np).step_by(W) {
                    let mut acc = [[0f32; W]; QB];
                    for d in 0..dh {
                        // SAFETY: d < dh and jb + W <= np: inside kt (dh × np).
                        let row: &[f32; W] = unsafe { &*kt.as_ptr().add(d * np + jb).cast() };
                        for r in 0..QB {
                            // SAFETY: d < dh = qrow[r].len().
                            let qv = unsafe { *qrow[r].get_unchecked(d) };
                            for t in 0..W {
                                acc[r][t] = qv.mul_add(row[t], acc[r][t]);
                            }
                        }
                    }
                    for (r, a) in acc.iter().enumerate() {
                        scores[r * np + jb..r * np + jb + W].copy_from_slice(a);
                    }
                }
                let mut inv = [0f32; QB];
                for (r, inv) in inv.iter_mut().enumerate() {
                    let sr = &mut scores[r * np..r * np + n];
                    // Branch-free masked softmax in separate maps and reductions, so each
                    // vectorises; masked keys weigh exactly 0.
                    for (s, &m) in sr.iter_mut().zip(keep) {
                        *s = if m != 0.0 { *s * scale } else { f32::NEG_INFINITY };
                    }
                    let max = math::max(sr);
                    for (s, &m) in sr.iter_mut().zip(keep) {
                        *s = math::exp(*s - max) * m;
                    }
                    *inv = 1.0 / math::sum(sr);
                }
                if dh.is_multiple_of(W) {
                    // Weighted values, W features of QB queries at a time (independent chains).
                    for db in (0..dh).step_by(W) {
                        let mut acc = [[0f32; W]; QB];
                        for j in 0..n {
                            // SAFETY: j < n and c0 + db + W <= h (checked above).
                            let vr: &[f32; W] = unsafe { &*v.as_ptr().add(j * rs + c0 + db).cast() };
                            for (r, a) in acc.iter_mut().enumerate() {
                                // SAFETY: r < QB and j < n <= np: inside scores (QB × np).
                                let p = unsafe { *scores.get_unchecked(r * np + j) };
                                for t in 0..W {
                                    a[t] = p.mul_add(vr[t], a[t]);
                                }
                            }
                        }
                        for r in 0..nq {
                            let qi = i0 + r;
                            if keep[qi] != 0.0 {
                                let o = &mut out[qi * h + c0 + db..qi * h + c0 + db + W];
                                for (o, a) in o.iter_mut().zip(acc[r]) {
                                    *o = a * inv[r];
                                }
                            }
                        }
                    }
                } else {
                    for r in 0..nq {
                        let qi = i0 + r;
                        if keep[qi] == 0.0 {
                            continue;
                        }
                        let oi = &mut out[qi * h + c0..qi * h + c0 + dh];
                        for j in 0..n {
                            let p = scores[r * np + j] * inv[r];
                            for (o, &vv) in oi.iter_mut().zip(&v[j * rs + c0..j * rs + c0 + dh]) {
                                *o += p * vv;
                            }
                        }
                    }
                }
                i0 += nq;
            }
        }
    }
}

impl CustomOp3 for AttentionInfer {
    fn name(&self) -> &'static str {
        "lecr-attention-infer"
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
        let q = f32_slice(s1, l1, self.name())?;
        let k = f32_slice(s2, l2, self.name())?;
        let v = f32_slice(s3, l3, self.name())?;
        let (rs, h) = (self.cols.stride, self.cols.width);
        if h == 0 || !h.is_multiple_of(self.heads) || l1.dims().last() != Some(&rs) {
            candle_core::bail!(
                "attention: {h} features do not split into {} heads",
                self.heads
            );
        }
        let rows = q.len() / rs;
        let items = self.items(rows)?;
        let dh = h / self.heads;
        let longest = items.iter().map(|r| r.len()).max().unwrap_or(0);
        let total = rows * h;
        let mut out: Vec<f32> = Vec::with_capacity(total);
        // Split the output into the items' row ranges (each task owns one item).
        let mut parts = Vec::with_capacity(items.len());
        let mut rest = &mut out.spare_capacity_mut()[..total];
        let mut at = 0;
        for r in &items {
            let (_, tail) = rest.split_at_mut((r.start - at) * h);
            let (part, tail) = tail.split_at_mut(r.len() * h);
            parts.push((r.clone(), part));
            rest = tail;
            at = r.end;
        }
        let bf16 = self.products.runs_bf16();
        parts.into_par_iter().for_each_init(
            || {
                let f32_scratch = (dh * longest.div_ceil(W) * W, QB * longest.div_ceil(W) * W);
                Scratch {
                    kt: Vec::with_capacity(f32_scratch.0),
                    scores: Vec::with_capacity(f32_scratch.1),
                    bf16: Default::default(),
                }
            },
            |sc, (r, o)| {
                // Each task zero-fills its own item while it is about to be written (in cache,
                // in parallel) instead of one single-threaded pass over the whole output.
                o.fill(std::mem::MaybeUninit::new(0.0));
                // SAFETY: just initialised; same layout.
                let o = unsafe { &mut *(o as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
                let (rows, keep) = match &self.keys {
                    Keys::Padded { mask, .. } => (r.clone(), &mask[r.clone()]),
                    Keys::Packed { ones, .. } => (r.clone(), &ones[..r.len()]),
                };
                let rr = rows.start * rs..rows.end * rs;
                #[cfg(target_arch = "x86_64")]
                if bf16 && r.len() >= self.bf16_from {
                    let c = self.cols;
                    let it = super::bf16::attention::Item {
                        q: &q[rr.start + c.q..rr.end],
                        k: &k[rr.start + c.k..rr.end],
                        v: &v[rr.start + c.v..rr.end],
                        stride: rs,
                        width: h,
                        heads: self.heads,
                        scale: self.scale,
                        keep,
                    };
                    // SAFETY: `runs_bf16` checked that the CPU has AVX512_BF16.
                    unsafe { super::bf16::attention::item(&it, &mut sc.bf16, o) };
                    return;
                }
                item(
                    &q[rr.clone()],
                    &k[rr.clone()],
                    &v[rr],
                    keep,
                    (self.heads, self.scale, self.cols),
                    sc,
                    o,
                );
            },
        );
        if at != rows {
            candle_core::bail!("attention: the items do not cover the rows");
        }
        // SAFETY: every item's rows were filled above, and the items cover all rows.
        unsafe { out.set_len(total) };
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("non-empty dims") = h;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Which rows form an item, and which of its keys count.
enum Keys {
    /// `B × L` rows, `mask` (1 for tokens, 0 for padding) per row.
    Padded { mask: Vec<f32>, len: usize },
    /// Only real tokens, item `b` in rows `offsets[b] .. offsets[b + 1]`, all keys count.
    Packed { offsets: Vec<usize>, ones: Vec<f32> },
}

impl Keys {
    fn packed(offsets: &[usize]) -> Keys {
        let longest = offsets
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .max()
            .unwrap_or(0);
        Keys::Packed {
            offsets: offsets.to_vec(),
            ones: vec![1.0; longest],
        }
    }
}

impl AttentionInfer {
    fn items(&self, rows: usize) -> Result<Vec<std::ops::Range<usize>>> {
        match &self.keys {
            Keys::Padded { mask, len } => {
                if mask.len() != rows || *len == 0 {
                    candle_core::bail!("attention: mask of {} for {rows} rows", mask.len());
                }
                Ok((0..rows / len).map(|b| b * len..(b + 1) * len).collect())
            }
            Keys::Packed { offsets, .. } => {
                if offsets.first() != Some(&0)
                    || offsets.last() != Some(&rows)
                    || offsets.windows(2).any(|w| w[0] > w[1])
                {
                    candle_core::bail!("attention: segment offsets do not cover {rows} rows");
                }
                Ok(offsets.windows(2).map(|w| w[0]..w[1]).collect())
            }
        }
    }
}

/// softmax(scale · q kᵀ over unmasked keys) · v per head, for q, k, v of shape B × L × H
/// (H = heads × dh, heads side by side as the dense layers write them); the output has the
/// same layout. Rows of padded queries are left zero. No backward pass.
pub fn attention_infer(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let len = mask.dim(1)?;
    let op = AttentionInfer {
        keys: Keys::Padded {
            mask: mask.flatten_all()?.to_vec1::<f32>()?,
            len,
        },
        heads,
        scale: scale as f32,
        cols: Cols::separate(q.dim(candle_core::D::Minus1)?),
        products: Products::F32,
        bf16_from: usize::MAX,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

/// The same for packed real tokens: q, k, v are `T × H`, item `b` holds rows
/// `offsets[b] .. offsets[b + 1]` (no padding anywhere).
pub fn attention_packed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    offsets: &[usize],
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let longest = offsets
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or(0);
    let op = AttentionInfer {
        keys: Keys::Packed {
            offsets: offsets.to_vec(),
            ones: vec![1.0; longest],
        },
        heads,
        scale: scale as f32,
        cols: Cols::separate(q.dim(candle_core::D::Minus1)?),
        products: Products::F32,
        bf16_from: usize::MAX,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

/// [`attention_packed`] (or, with `mask`, [`attention_infer`]) reading q, k and v from one
/// fused `rows × 3H` product (columns q | k | v), its two products in `products`.
pub fn attention_fused(
    qkv: &Tensor,
    mask: Option<&Tensor>,
    offsets: &[usize],
    heads: usize,
    scale: f64,
    products: Products,
) -> Result<Tensor> {
    fused_from(qkv, mask, offsets, heads, scale, products, BF16_MIN_KEYS)
}

/// [`attention_fused`] with bf16 products from items of `bf16_from` tokens on.
fn fused_from(
    qkv: &Tensor,
    mask: Option<&Tensor>,
    offsets: &[usize],
    heads: usize,
    scale: f64,
    products: Products,
    bf16_from: usize,
) -> Result<Tensor> {
    let w3 = qkv.dim(candle_core::D::Minus1)?;
    let h = w3 / 3;
    let keys = match mask {
        Some(m) => Keys::Padded {
            mask: m.flatten_all()?.to_vec1::<f32>()?,
            len: m.dim(1)?,
        },
        None => Keys::packed(offsets),
    };
    let op = AttentionInfer {
        keys,
        heads,
        scale: scale as f32,
        cols: Cols {
            stride: w3,
            q: 0,
            k: h,
            v: 2 * h,
            width: h,
        },
        products,
        bf16_from,
    };
    let qkv = qkv.contiguous()?;
    qkv.apply_op3_no_bwd(&qkv, &qkv, &op)
}

#[cfg(test)]
mod tests {
    use super::super::max_diff;
    use super::Products::{Bf16, F32};
    use crate::kernels::bf16::{from_bf16, to_bf16};
    use candle_core::{Device, Tensor};

    /// bf16 products against a reference that rounds as the kernel does (q, k, v to bf16, the
    /// probabilities to bf16 as inputs of the second product) and computes the rest in f64:
    /// what is left is f32 summation order and `exp`. Head sizes with and without whole pairs
    /// and register blocks, lengths across key blocks up to 512; padded and packed.
    #[test]
    fn bf16_products_match_a_bf16_reference() {
        if !Bf16.runs_bf16() {
            eprintln!(
                "skipped: the bf16 attention kernel needs AVX512_BF16 at level avx512 or above \
                 (this CPU and LECR_ISA give {})",
                crate::kernels::isa::describe()
            );
            // Without it the bf16 choice runs the f32 kernel: identical to F32.
            let qkv = Tensor::randn(0f32, 1.0, (7, 3 * 32), &Device::Cpu).unwrap();
            let a = super::attention_fused(&qkv, None, &[0, 3, 7], 2, 0.25, Bf16).unwrap();
            let b = super::attention_fused(&qkv, None, &[0, 3, 7], 2, 0.25, F32).unwrap();
            assert_eq!(max_diff(&a, &b), 0.0);
            return;
        }
        for (dh, lens) in [
            (32, vec![1, 2, 17]),
            (33, vec![5, 16, 31]),
            (12, vec![40, 3]),
            (64, vec![300, 47]),
            (32, vec![512, 511, 1]),
        ] {
            check_bf16(dh, &lens);
        }
        // Through the public entry, items shorter than BF16_MIN_KEYS run the f32 kernel and
        // longer ones the bf16 kernel.
        let n = super::BF16_MIN_KEYS;
        let qkv = Tensor::randn(0f32, 1.0, (n - 1 + n, 3 * 64), &Device::Cpu).unwrap();
        let offsets = [0, n - 1, 2 * n - 1];
        let a = super::attention_fused(&qkv, None, &offsets, 2, 0.18, Bf16).unwrap();
        let b = super::attention_fused(&qkv, None, &offsets, 2, 0.18, F32).unwrap();
        let short = |t: &Tensor| t.narrow(0, 0, n - 1).unwrap();
        let long = |t: &Tensor| t.narrow(0, n - 1, n).unwrap();
        assert_eq!(max_diff(&short(&a), &short(&b)), 0.0);
        assert!(max_diff(&long(&a), &long(&b)) > 0.0);
    }

    fn check_bf16(dh: usize, lens: &[usize]) {
        let d = Device::Cpu;
        let heads = 3;
        let h = heads * dh;
        let rows: usize = lens.iter().sum();
        let scale = 1.0 / (dh as f64).sqrt();
        let qkv = Tensor::randn(0f32, 1.0, (rows, 3 * h), &d).unwrap();
        let mut offsets = vec![0];
        for &n in lens {
            offsets.push(offsets.last().unwrap() + n);
        }
        let got = super::fused_from(&qkv, None, &offsets, heads, scale, Bf16, 0).unwrap();
        let got = got.to_vec2::<f32>().unwrap();
        let x = qkv.to_vec2::<f32>().unwrap();
        let r = |v: f32| from_bf16(to_bf16(v)) as f64;
        let mut worst = 0f64;
        for w in offsets.windows(2) {
            let (a, n) = (w[0], w[1] - w[0]);
            for hd in 0..heads {
                let c = hd * dh;
                for i in 0..n {
                    let s: Vec<f64> = (0..n)
                        .map(|j| {
                            (0..dh)
                                .map(|t| r(x[a + i][c + t]) * r(x[a + j][h + c + t]))
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let p: Vec<f64> = s.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = p.iter().sum();
                    for t in 0..dh {
                        let want: f64 = (0..n)
                            .map(|j| r(p[j] as f32) * r(x[a + j][2 * h + c + t]))
                            .sum::<f64>()
                            / sum;
                        worst = worst.max((want - got[a + i][c + t] as f64).abs());
                    }
                }
            }
        }
        // exp's error and a probability rounding to the other bf16 neighbour (2⁻⁸ of one
        // term) bound what is left.
        assert!(worst < 1e-3, "dh {dh}, lengths {lens:?}: worst {worst}");
        // And the padded layout gives the same rows as the packed one.
        let l = *lens.iter().max().unwrap();
        let mut padded = vec![0f32; lens.len() * l * 3 * h];
        let mut mask = vec![0f32; lens.len() * l];
        for (b, w) in offsets.windows(2).enumerate() {
            for i in 0..w[1] - w[0] {
                padded[(b * l + i) * 3 * h..(b * l + i + 1) * 3 * h].copy_from_slice(&x[w[0] + i]);
                mask[b * l + i] = 1.0;
            }
        }
        let padded = Tensor::from_vec(padded, (lens.len(), l, 3 * h), &d).unwrap();
        let mask = Tensor::from_vec(mask, (lens.len(), l), &d).unwrap();
        let p = super::fused_from(&padded, Some(&mask), &[], heads, scale, Bf16, 0).unwrap();
        for (b, w) in offsets.windows(2).enumerate() {
            for i in 0..w[1] - w[0] {
                let row = p.get(b).unwrap().get(i).unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(row, got[w[0] + i], "item {b} row {i}");
            }
        }
    }

    #[test]
    fn matches_the_differentiable_path_on_token_rows() {
        // Head sizes with and without whole register blocks.
        for (dh, l) in [(16, 9), (12, 9), (32, 40), (64, 23)] {
            check(dh, l);
        }
    }

    fn check(dh: usize, l: usize) {
        let d = Device::Cpu;
        let (b, h) = (3, 4);
        let q = Tensor::randn(0f32, 1.0, (b, h, l, dh), &d).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, h, l, dh), &d).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, h, l, dh), &d).unwrap();
        let lens = [l, l / 2 + 1, 1];
        let mask: Vec<f32> = lens
            .iter()
            .flat_map(|&n| (0..l).map(move |i| if i < n { 1.0 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (b, l), &d).unwrap();
        let scale = 0.25;
        let scores = q.matmul(&k.t().unwrap()).unwrap();
        let w4 = super::super::masked_softmax(&scores, &mask, scale)
            .unwrap()
            .matmul(&v)
            .unwrap();
        // The kernel takes and gives B × L × (heads · dh).
        let merge = |t: &Tensor| {
            t.transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((b, l, h * dh))
                .unwrap()
        };
        let got =
            super::attention_infer(&merge(&q), &merge(&k), &merge(&v), &mask, h, scale).unwrap();
        let w4 = merge(&w4);
        // Packed: only each item's real rows, one after another.
        let pack = |t: &Tensor| {
            let rows: Vec<Tensor> = lens
                .iter()
                .enumerate()
                .map(|(bi, &n)| t.get(bi).unwrap().narrow(0, 0, n).unwrap())
                .collect();
            Tensor::cat(&rows, 0).unwrap()
        };
        let mut offsets = vec![0];
        for &n in &lens {
            offsets.push(offsets.last().unwrap() + n);
        }
        let packed = super::attention_packed(
            &pack(&merge(&q)),
            &pack(&merge(&k)),
            &pack(&merge(&v)),
            &offsets,
            h,
            scale,
        )
        .unwrap();
        let diff = max_diff(&pack(&w4), &packed);
        assert!(diff < 1e-5, "packed: {diff}");
        // One fused q | k | v tensor (as the fused int8 product writes it), packed and padded.
        let cat = |ts: [Tensor; 3], dim| Tensor::cat(&ts, dim).unwrap();
        let fused = cat([pack(&merge(&q)), pack(&merge(&k)), pack(&merge(&v))], 1);
        let f = super::attention_fused(&fused, None, &offsets, h, scale, F32).unwrap();
        let diff = max_diff(&pack(&w4), &f);
        assert!(diff < 1e-5, "fused, packed: {diff}");
        let fused = cat([merge(&q), merge(&k), merge(&v)], 2);
        let f = super::attention_fused(&fused, Some(&mask), &[], h, scale, F32).unwrap();
        assert_eq!(f.dims(), &[b, l, h * dh]);
        let diff = max_diff(&pack(&w4), &pack(&f));
        assert!(diff < 1e-5, "fused, padded: {diff}");
        for (bi, &n) in lens.iter().enumerate() {
            let a = w4.get(bi).unwrap().narrow(0, 0, n).unwrap();
            let g = got.get(bi).unwrap().narrow(0, 0, n).unwrap();
            let diff = max_diff(&a, &g);
            assert!(diff < 1e-5, "item {bi}: {diff}");
        }
    }
}

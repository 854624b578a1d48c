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
}

/// Keys per score block and features per output block: one 512-bit register of f32.
const W: usize = 16;

/// Per-task scratch: one head's keys transposed (dh × keys rounded up to W, zero-padded) and
/// one query's scores.
struct Scratch {
    kt: Vec<f32>,
    scores: Vec<f32>,
}

/// Queries scored together (independent accumulator chains that share each key load).
const QB: usize = 4;

simd_fn! {
    /// One item: q, k, v and out are L × H (H = heads × dh); `dims` is (heads, scale).
    /// Keys and queries after the last unmasked position are never touched (padding is on the
    /// right); rows of masked queries are left zero.
    fn item(q: &[f32], k: &[f32], v: &[f32], keep: &[f32], dims: (usize, f32), sc: &mut Scratch, out: &mut [f32]) {
        let (heads, scale) = dims;
        let l = keep.len();
        let h = q.len() / l.max(1);
        let dh = h / heads;
        let n = keep.iter().rposition(|&m| m != 0.0).map_or(0, |p| p + 1);
        let np = n.div_ceil(W) * W;
        sc.kt.clear();
        sc.kt.resize(dh * np, 0.0);
        sc.scores.clear();
        sc.scores.resize(QB * np, 0.0);
        let (kt, scores) = (&mut sc.kt, &mut sc.scores);
        for hd in 0..heads {
            let c0 = hd * dh;
            for j in 0..n {
                for d in 0..dh {
                    kt[d * np + j] = k[j * h + c0 + d];
                }
            }
            let mut i0 = 0;
            while i0 < n {
                let nq = (n - i0).min(QB);
                // Scores of up to QB queries, W keys at a time, in registers across features.
                for jb in (0..np).step_by(W) {
                    let mut acc = [[0f32; W]; QB];
                    for d in 0..dh {
                        let row = &kt[d * np + jb..d * np + jb + W];
                        for (a, qi) in acc.iter_mut().zip(i0..i0 + nq) {
                            let qv = q[qi * h + c0 + d];
                            for t in 0..W {
                                a[t] = qv.mul_add(row[t], a[t]);
                            }
                        }
                    }
                    for (a, s) in acc.iter().zip(scores.chunks_mut(np)).take(nq) {
                        s[jb..jb + W].copy_from_slice(a);
                    }
                }
                for (r, qi) in (i0..i0 + nq).enumerate() {
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
                    let sum = math::sum(sr);
                    let oi = &mut out[qi * h + c0..qi * h + c0 + dh];
                    if keep[qi] == 0.0 {
                        continue;
                    }
                    let inv = 1.0 / sum;
                    if dh.is_multiple_of(W) {
                        for db in (0..dh).step_by(W) {
                            let mut acc = [0f32; W];
                            for (j, &p) in sr.iter().enumerate() {
                                let vr = &v[j * h + c0 + db..j * h + c0 + db + W];
                                for t in 0..W {
                                    acc[t] = p.mul_add(vr[t], acc[t]);
                                }
                            }
                            for (o, a) in oi[db..db + W].iter_mut().zip(acc) {
                                *o = a * inv;
                            }
                        }
                    } else {
                        for (j, &p) in sr.iter().enumerate() {
                            let p = p * inv;
                            for (o, &vv) in oi.iter_mut().zip(&v[j * h + c0..j * h + c0 + dh]) {
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
        let h = *l1.dims().last().unwrap_or(&0);
        if h == 0 || !h.is_multiple_of(self.heads) {
            candle_core::bail!(
                "attention: {h} features do not split into {} heads",
                self.heads
            );
        }
        let rows = q.len() / h;
        let items = self.items(rows)?;
        let dh = h / self.heads;
        let longest = items.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut out: Vec<f32> = Vec::with_capacity(q.len());
        // Split the output into the items' row ranges (each task owns one item).
        let mut parts = Vec::with_capacity(items.len());
        let mut rest = &mut out.spare_capacity_mut()[..q.len()];
        let mut at = 0;
        for r in &items {
            let (_, tail) = rest.split_at_mut((r.start - at) * h);
            let (part, tail) = tail.split_at_mut(r.len() * h);
            parts.push((r.clone(), part));
            rest = tail;
            at = r.end;
        }
        parts.into_par_iter().for_each_init(
            || Scratch {
                kt: Vec::with_capacity(dh * longest.div_ceil(W) * W),
                scores: Vec::with_capacity(QB * longest.div_ceil(W) * W),
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
                let rr = rows.start * h..rows.end * h;
                item(
                    &q[rr.clone()],
                    &k[rr.clone()],
                    &v[rr],
                    keep,
                    (self.heads, self.scale),
                    sc,
                    o,
                );
            },
        );
        if !matches!(self.keys, Keys::Packed { .. }) || at * h == q.len() {
            // SAFETY: every item's rows were filled above, and the items cover all rows.
            unsafe { out.set_len(q.len()) };
        } else {
            candle_core::bail!("attention: the segments do not cover the rows");
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Which rows form an item, and which of its keys count.
enum Keys {
    /// `B × L` rows, `mask` (1 for tokens, 0 for padding) per row.
    Padded { mask: Vec<f32>, len: usize },
    /// Only real tokens, item `b` in rows `offsets[b] .. offsets[b + 1]`, all keys count.
    Packed { offsets: Vec<usize>, ones: Vec<f32> },
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
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_the_differentiable_path_on_token_rows() {
        // Head sizes with and without whole register blocks.
        for dh in [16, 12] {
            check(dh);
        }
    }

    fn check(dh: usize) {
        let d = Device::Cpu;
        let (b, h, l) = (3, 4, 9);
        let q = Tensor::randn(0f32, 1.0, (b, h, l, dh), &d).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, h, l, dh), &d).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, h, l, dh), &d).unwrap();
        let lens = [9usize, 5, 1];
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
        let diff = (pack(&w4) - packed)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "packed: {diff}");
        for (bi, &n) in lens.iter().enumerate() {
            let a = w4.get(bi).unwrap().narrow(0, 0, n).unwrap();
            let g = got.get(bi).unwrap().narrow(0, 0, n).unwrap();
            let diff = (a - g)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "item {bi}: {diff}");
        }
    }
}

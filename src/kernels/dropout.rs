//! Dropout with its own seeded random stream, so training is reproducible for a seed (candle's
//! dropout draws from an unseeded generator), as one differentiable op.
//!
//! Each call draws one seed from the stream and fills the keep-mask from it in parallel blocks
//! (block `i` uses the ChaCha stream `i` of that seed): the mask depends only on the stream's
//! position and the tensor's size, never on the thread count. The mask is one byte per element
//! and lives in the op, so the backward pass is one multiplication. Built from candle's `mul`
//! with an f32 mask tensor, the backward pass also computed (and stored) a gradient for the
//! mask, and drawing one f64 per element on one thread showed up in training profiles.

use super::f32_slice;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Elements per block of the mask (each block has its own ChaCha stream).
const BLOCK: usize = 1 << 15;

pub struct Dropout {
    rng: Mutex<ChaCha8Rng>,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Dropout {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }
    pub fn reseed(&self, seed: u64) {
        *self.rng.lock().expect("dropout rng poisoned") = ChaCha8Rng::seed_from_u64(seed);
    }
    /// The stream's position: restoring it replays the same masks (activation recomputation).
    pub fn snapshot(&self) -> ChaCha8Rng {
        self.rng.lock().expect("dropout rng poisoned").clone()
    }
    pub fn restore(&self, state: ChaCha8Rng) {
        *self.rng.lock().expect("dropout rng poisoned") = state;
    }
    /// Zeroes each element with probability `p` and scales the rest by 1/(1−p).
    pub fn apply(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - p;
        let seed = self.rng.lock().expect("dropout rng poisoned").next_u64();
        let op = Masked {
            keep: Arc::new(keep_mask(seed, x.elem_count(), keep)),
            scale: (1.0 / keep) as f32,
        };
        x.contiguous()?.apply_op1(op)
    }
}

/// One byte per element, 1 where the element is kept (probability `keep`).
fn keep_mask(seed: u64, n: usize, keep: f64) -> Vec<u8> {
    // An element is kept when its u32 draw is below keep·2³².
    let below = (keep.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
    let mut mask = vec![0u8; n];
    mask.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(block, m)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(block as u64);
            for v in m {
                *v = u8::from((rng.next_u32() as u64) < below);
            }
        });
    mask
}

/// `x · mask · scale`; its gradient is the same product of the incoming gradient.
struct Masked {
    keep: Arc<Vec<u8>>,
    scale: f32,
}

simd_fn! {
    fn mask_block(dst: &mut [f32], src: &[f32], keep: &[u8], scale: f32) {
        for ((d, &s), &k) in dst.iter_mut().zip(src).zip(keep) {
            *d = s * (k as f32 * scale);
        }
    }
}

impl CustomOp1 for Masked {
    fn name(&self) -> &'static str {
        "lecr-dropout"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        if x.len() != self.keep.len() {
            candle_core::bail!(
                "dropout: {} elements for a mask of {}",
                x.len(),
                self.keep.len()
            );
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(BLOCK)
            .zip(x.par_chunks(BLOCK))
            .zip(self.keep.par_chunks(BLOCK))
            .for_each(|((d, s), k)| mask_block(d, s, k, self.scale));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let same = Masked {
            keep: self.keep.clone(),
            scale: self.scale,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&same)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn mask_depends_on_the_seed_and_size_only() {
        let a = keep_mask(3, 3 * BLOCK + 17, 0.9);
        let b = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| keep_mask(3, 3 * BLOCK + 17, 0.9));
        assert_eq!(a, b);
        assert_ne!(a, keep_mask(4, 3 * BLOCK + 17, 0.9));
        let kept = a.iter().filter(|&&k| k == 1).count() as f64 / a.len() as f64;
        assert!((kept - 0.9).abs() < 0.01, "kept {kept}");
        // Blocks differ from each other (each has its own stream).
        assert_ne!(a[..BLOCK], a[BLOCK..2 * BLOCK]);
    }

    #[test]
    fn gradient_is_the_mask_times_the_scale() {
        let dev = Device::Cpu;
        let x = Var::from_vec((0..999).map(|i| i as f32 * 0.01).collect(), 999, &dev).unwrap();
        let d = Dropout::new(11);
        let y = d.apply(x.as_tensor(), 0.3).unwrap();
        let w = Tensor::arange(0f32, 999.0, &dev).unwrap().cos().unwrap();
        let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = g.get(&x).unwrap().to_vec1::<f32>().unwrap();
        let (yv, xv, wv) = (
            y.to_vec1::<f32>().unwrap(),
            x.to_vec1::<f32>().unwrap(),
            w.to_vec1::<f32>().unwrap(),
        );
        for i in 1..999 {
            let kept = yv[i] != 0.0;
            let want = if kept { wv[i] / 0.7 } else { 0.0 };
            assert!((gx[i] - want).abs() < 1e-5, "{i}: {} vs {want}", gx[i]);
            if kept {
                assert!((yv[i] - xv[i] / 0.7).abs() < 1e-5);
            }
        }
    }
}

//! Dropout with its own seeded random stream, so training is reproducible for a seed (candle's
//! dropout draws from an unseeded generator).

use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Mutex;

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
        let scale = (1.0 / keep) as f32;
        let n = x.elem_count();
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().expect("dropout rng poisoned");
            (0..n)
                .map(|_| if rng.gen::<f64>() < keep { scale } else { 0.0 })
                .collect()
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        x.mul(&mask)
    }
}

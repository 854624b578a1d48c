//! AdamW that updates parameters in place (one fused, multi-threaded pass per tensor), with
//! optional gradient clipping by value. candle-nn's AdamW allocates several temporaries per
//! parameter per step, which dominated small training steps on CPU.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip every gradient element to [−clip, clip] before the update.
    pub clip_value: Option<f64>,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            clip_value: None,
        }
    }
}

pub struct AdamW {
    vars: Vec<Var>,
    /// First and second moments, one buffer per variable.
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub step: u64,
    pub params: AdamWParams,
}

struct Update<'a> {
    m: Mutex<&'a mut [f32]>,
    v: Mutex<&'a mut [f32]>,
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    decay: f32,
    /// 1/(1−β1ᵗ), 1/(1−β2ᵗ)
    c1: f32,
    c2: f32,
    clip: f32,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "lecr-adamw"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let p = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &mut v[a..b],
            _ => bail!("adamw: parameters must be contiguous f32"),
        };
        let g = crate::kernels::f32_slice(s2, l2, "adamw")?;
        let mut m = self.m.lock().expect("adamw state");
        let mut v = self.v.lock().expect("adamw state");
        const CHUNK: usize = 1 << 14;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for i in 0..p.len() {
                    let gi = g[i].clamp(-self.clip, self.clip);
                    m[i] = self.b1 * m[i] + (1.0 - self.b1) * gi;
                    v[i] = self.b2 * v[i] + (1.0 - self.b2) * gi * gi;
                    let upd = (m[i] * self.c1) / ((v[i] * self.c2).sqrt() + self.eps);
                    p[i] = p[i] * self.decay - self.lr * upd;
                }
            });
        Ok(())
    }
}

impl AdamW {
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Self {
        let m = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        let v2 = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        AdamW {
            vars,
            m,
            v: v2,
            step: 0,
            params,
        }
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let gs: Vec<Option<Tensor>> = self.vars.iter().map(|v| grads.get(v).cloned()).collect();
        self.step_with(&gs)
    }

    /// The gradient of each variable (in `vars()` order) from a backward pass.
    pub fn collect(&self, grads: &GradStore) -> Vec<Option<Tensor>> {
        self.vars.iter().map(|v| grads.get(v).cloned()).collect()
    }

    /// One update from per-variable gradients (e.g. summed over accumulated batches).
    pub fn step_with(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(i).and_then(|g| g.as_ref()) else {
                continue;
            };
            let g: Tensor = g.contiguous()?;
            let op = Update {
                m: Mutex::new(&mut self.m[i]),
                v: Mutex::new(&mut self.v[i]),
                lr: p.lr as f32,
                b1: p.beta1 as f32,
                b2: p.beta2 as f32,
                eps: p.eps as f32,
                decay: (1.0 - p.lr * p.weight_decay) as f32,
                c1: (1.0 / (1.0 - p.beta1.powi(t))) as f32,
                c2: (1.0 / (1.0 - p.beta2.powi(t))) as f32,
                clip: p.clip_value.map(|c| c as f32).unwrap_or(f32::INFINITY),
            };
            var.as_tensor().inplace_op2(&g, &op)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Our update against candle-nn's AdamW (same formula as PyTorch) over a few steps.
    #[test]
    fn matches_candle_nn_adamw() {
        use candle_nn::Optimizer;
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let a = Var::from_vec(init.clone(), 50, &dev).unwrap();
        let b = Var::from_vec(init, 50, &dev).unwrap();
        let params = AdamWParams {
            lr: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut ours = AdamW::new(vec![a.clone()], params);
        let mut theirs = candle_nn::AdamW::new(
            vec![b.clone()],
            candle_nn::ParamsAdamW {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.1,
            },
        )
        .unwrap();
        for _ in 0..5 {
            let la = a.as_tensor().sqr().unwrap().sum_all().unwrap();
            ours.step(&la.backward().unwrap()).unwrap();
            let lb = b.as_tensor().sqr().unwrap().sum_all().unwrap();
            theirs.backward_step(&lb).unwrap();
        }
        let (x, y) = (
            a.as_tensor().to_vec1::<f32>().unwrap(),
            b.as_tensor().to_vec1::<f32>().unwrap(),
        );
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
        assert_ne!(x[1], (0.37f32).sin(), "parameters moved");
    }

    #[test]
    fn clipping_limits_each_gradient_element() {
        let dev = Device::Cpu;
        let a = Var::from_vec(vec![0f32, 0.0], 2, &dev).unwrap();
        let params = AdamWParams {
            lr: 1.0,
            weight_decay: 0.0,
            clip_value: Some(0.5),
            ..Default::default()
        };
        let mut opt = AdamW::new(vec![a.clone()], params);
        // d/da (1000·a0 − 0.1·a1) = (1000, −0.1): clipped to (0.5, −0.1).
        let w = Tensor::new(&[1000f32, -0.1], &dev).unwrap();
        let loss = a.as_tensor().mul(&w).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        assert!(
            (opt.m[0][0] - 0.05).abs() < 1e-7,
            "first moment of the clipped gradient"
        );
        assert!((opt.m[0][1] + 0.01).abs() < 1e-7);
    }
}

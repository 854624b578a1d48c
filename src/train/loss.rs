//! Symmetric InfoNCE with a learnable temperature and label smoothing (method §5), and the
//! layer-drop distillation loss (method §9).

use anyhow::Result;
use candle_core::{Tensor, D};

/// log-softmax over the last dimension from differentiable primitives.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Cross-entropy of `logits` (B × K) against targets `i → i` with label smoothing `eps`:
/// mean over rows of −(1−eps)·log p_ii − eps/K · Σ_k log p_ik.
pub fn diagonal_cross_entropy(logits: &Tensor, eps: f64) -> Result<Tensor> {
    let (b, k) = logits.dims2()?;
    let lp = log_softmax(logits)?;
    let eye = Tensor::eye(b, candle_core::DType::F32, logits.device())?;
    let eye = if k == b {
        eye
    } else {
        eye.pad_with_zeros(1, 0, k - b)?
    };
    let nll = (lp.mul(&eye)?.sum(1)? * -(1.0 - eps))?;
    let smooth = (lp.sum(1)? * -(eps / k as f64))?;
    Ok((nll + smooth)?.mean_all()?)
}

/// Symmetric InfoNCE: `logits = exp(logit_scale) · T Cᵀ` over normalised embeddings,
/// (CE(logits) + CE(logitsᵀ)) / 2.
pub fn info_nce(
    topics: &Tensor,
    contents: &Tensor,
    logit_scale: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let logits = topics
        .matmul(&contents.t()?)?
        .broadcast_mul(&logit_scale.exp()?)?;
    let a = diagonal_cross_entropy(&logits, eps)?;
    let b = diagonal_cross_entropy(&logits.t()?.contiguous()?, eps)?;
    Ok(((a + b)? * 0.5)?)
}

/// Weights of the distillation loss terms: topic embeddings, content embeddings, masked last
/// hidden states (method §9).
#[derive(Debug, Clone, Copy)]
pub struct DistillWeights {
    pub topics: f64,
    pub contents: f64,
    pub hidden: f64,
}

impl Default for DistillWeights {
    fn default() -> Self {
        DistillWeights {
            topics: 0.25,
            contents: 0.25,
            hidden: 0.5,
        }
    }
}

/// Mean squared error over all elements.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.sub(b)?.sqr()?.mean_all()?)
}

/// Mean squared error of hidden states (`B × L × H`) over real tokens only (`mask` `B × L`,
/// 1.0 for tokens): Σ mask·(a − b)² / (tokens · H).
pub fn masked_mse(a: &Tensor, b: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let h = a.dim(D::Minus1)? as f64;
    let tokens = mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    let sq = a
        .sub(b)?
        .sqr()?
        .broadcast_mul(&mask.unsqueeze(D::Minus1)?)?;
    Ok((sq.sum_all()? / (tokens * h))?)
}

/// The distillation loss of a batch whose first `n` rows are topics and the rest contents:
/// `w.topics · MSE(topic embeddings) + w.contents · MSE(content embeddings)
///  + w.hidden · masked MSE(last hidden states)`, student against a frozen teacher.
pub fn distill_loss(
    student: &crate::model::Forward,
    teacher: &crate::model::Forward,
    n: usize,
    w: DistillWeights,
) -> Result<Tensor> {
    let (s, t) = (&student.embeddings, &teacher.embeddings);
    let rest = s.dim(0)? - n;
    let topics = mse(&s.narrow(0, 0, n)?, &t.narrow(0, 0, n)?.detach())?;
    let contents = mse(&s.narrow(0, n, rest)?, &t.narrow(0, n, rest)?.detach())?;
    let hidden = masked_mse(&student.hidden, &teacher.hidden.detach(), &student.mask)?;
    Ok(((topics * w.topics)? + (contents * w.contents)?)?.add(&(hidden * w.hidden)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_a_hand_computation() {
        let logits = Tensor::new(&[[2.0f32, 0.0, -1.0], [0.5, 1.5, 0.0]], &Device::Cpu).unwrap();
        // Row 0: log p = x - logsumexp(x).
        let lse0 = (2f64.exp() + 1.0 + (-1f64).exp()).ln();
        let lse1 = (0.5f64.exp() + 1.5f64.exp() + 1.0).ln();
        let lp0 = [2.0 - lse0, -lse0, -1.0 - lse0];
        let lp1 = [0.5 - lse1, 1.5 - lse1, -lse1];
        let eps = 0.1;
        let row =
            |lp: [f64; 3], y: usize| -(1.0 - eps) * lp[y] - eps / 3.0 * lp.iter().sum::<f64>();
        let want = (row(lp0, 0) + row(lp1, 1)) / 2.0;
        let got = diagonal_cross_entropy(&logits, eps)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn perfect_alignment_gives_lower_loss_than_shuffled() {
        let dev = Device::Cpu;
        let t = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let swapped = Tensor::new(&[[0f32, 1.0], [1.0, 0.0]], &dev).unwrap();
        let s = Tensor::new(&[(1.0f32 / 0.07).ln()], &dev).unwrap();
        let good = info_nce(&t, &t, &s, 0.1).unwrap().to_vec0::<f32>().unwrap();
        let bad = info_nce(&t, &swapped, &s, 0.1)
            .unwrap()
            .to_vec0::<f32>()
            .unwrap();
        assert!(good < 1.0 && bad > 10.0, "good {good} bad {bad}");
    }
}

//! BERT and XLM-RoBERTa encoders (they differ only in position ids and token types), trainable:
//! every op has a backward pass (layer norm, softmax and GELU come from `crate::kernels`).
//!
//! The structs mirror the checkpoint's weight-name tree: `embeddings.*`,
//! `encoder.layer.{i}.attention.self.{query,key,value}`, `attention.output.{dense,LayerNorm}`,
//! `intermediate.dense`, `output.{dense,LayerNorm}`.

use super::config::{Arch, EncoderConfig};
use super::params::{LinearWeight, Params};
use crate::kernels::bf16::PackedBf16;
use crate::kernels::int8::PackedInt8;
use crate::kernels::{self, Dropout};
use anyhow::Result;
use candle_core::{DType, Module, Tensor, D};
use std::sync::{Arc, Mutex};

/// A dense layer `x Wᵀ + b` over the last dimension.
#[derive(Clone)]
pub struct Linear {
    /// Canonical name (`encoder.layer.0.attention.self.query`); the weight is `{name}.weight`.
    pub name: String,
    pub weight: LinearWeight,
    pub bias: Option<Tensor>,
    /// Collects the largest magnitude of each input feature (int8 calibration).
    pub observer: Option<Arc<Mutex<Vec<f32>>>>,
    /// Mixed-precision training: the products of a float layer's training step in bf16 (f32
    /// sums, f32 weights and gradients kept). Inference ignores it.
    pub train_bf16: bool,
}

impl Linear {
    fn load(p: &mut Params, name: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        Ok(Linear {
            name: name.to_string(),
            weight: p.linear(name, out_dim, in_dim)?,
            bias: Some(p.get(&format!("{name}.bias"), &[out_dim])?),
            observer: None,
            train_bf16: false,
        })
    }

    /// A float layer.
    pub fn float(name: &str, weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            name: name.to_string(),
            weight: LinearWeight::Float(weight),
            bias,
            observer: None,
            train_bf16: false,
        }
    }

    fn observe(&self, x: &Tensor) -> candle_core::Result<()> {
        if let Some(obs) = &self.observer {
            let d = self.in_dim();
            let amax = x.abs()?.reshape(((), d))?.max(0)?.to_vec1::<f32>()?;
            let mut o = obs.lock().expect("observer lock");
            o.resize(d, 0.0);
            for (a, b) in o.iter_mut().zip(amax) {
                *a = a.max(b);
            }
        }
        Ok(())
    }

    pub fn out_dim(&self) -> usize {
        match &self.weight {
            LinearWeight::Float(w) => w.dims()[0],
            LinearWeight::Int8(q) => q.out_dim,
            LinearWeight::Bf16(q) => q.out_dim,
        }
    }

    pub fn in_dim(&self) -> usize {
        match &self.weight {
            LinearWeight::Float(w) => w.dims()[1],
            LinearWeight::Int8(q) => q.in_dim,
            LinearWeight::Bf16(q) => q.in_dim,
        }
    }

    /// The dense layer, fused into one product (and GELU) when no gradient is needed.
    pub fn forward_t(&self, x: &Tensor, train: bool, gelu: bool) -> candle_core::Result<Tensor> {
        self.observe(x)?;
        match (&self.weight, &self.bias, train) {
            (LinearWeight::Int8(_), _, true) => candle_core::bail!(
                "an int8-quantized model is for inference only: train the float model, then quantize"
            ),
            (LinearWeight::Bf16(_), _, true) => candle_core::bail!(
                "a model loaded with bf16 weights is for inference only: train it in f32"
            ),
            (LinearWeight::Int8(q), b, false) => kernels::int8::linear_int8(x, q, b.as_ref(), gelu),
            (LinearWeight::Bf16(q), b, false) => kernels::bf16::linear_bf16(x, q, b.as_ref(), gelu),
            (LinearWeight::Float(w), Some(b), false) => {
                kernels::linear::linear_infer(x, w, b, gelu)
            }
            (LinearWeight::Float(w), Some(b), true) if self.train_bf16 => {
                let y = kernels::bf16::linear_train_bf16(x, w, b)?;
                if gelu {
                    kernels::gelu(&y)
                } else {
                    Ok(y)
                }
            }
            _ if gelu => kernels::gelu(&self.forward(x)?),
            _ => self.forward(x),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let w = match &self.weight {
            LinearWeight::Float(w) => w,
            LinearWeight::Int8(_) | LinearWeight::Bf16(_) => {
                return self.forward_t(x, false, false)
            }
        };
        if let Some(b) = &self.bias {
            return kernels::linear::linear(x, w, b);
        }
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        let y = x.reshape((rows, in_dim))?.matmul(&w.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().expect("non-empty dims") = w.dim(0)?;
        y.reshape(out)
    }
}

#[derive(Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    fn load(p: &mut Params, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: p.get(&format!("{name}.weight"), &[dim])?,
            bias: p.get(&format!("{name}.bias"), &[dim])?,
            eps,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        kernels::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// `norm(x + residual)`, in one fused pass when no gradient is needed.
    fn forward_residual(
        &self,
        x: &Tensor,
        residual: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        if train {
            self.forward(&x.add(residual)?)
        } else {
            kernels::layer_norm::add_layer_norm(x, residual, &self.weight, &self.bias, self.eps)
        }
    }
}

struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    norm: LayerNorm,
    heads: usize,
    /// Query, key and value as one product (inference), when all three are int8 with the
    /// same input smoothing (the input is quantized once instead of three times) or all bf16.
    fused: Option<Linear>,
}

impl Attention {
    fn fuse(&mut self) -> Result<()> {
        self.fused = None;
        let parts = [&self.query, &self.key, &self.value];
        if parts.iter().any(|l| l.bias.is_none()) {
            return Ok(());
        }
        let int8: Vec<&PackedInt8> = parts
            .iter()
            .filter_map(|l| match &l.weight {
                LinearWeight::Int8(p) => Some(p.as_ref()),
                _ => None,
            })
            .collect();
        let bf16: Vec<&PackedBf16> = parts
            .iter()
            .filter_map(|l| match &l.weight {
                LinearWeight::Bf16(p) => Some(p.as_ref()),
                _ => None,
            })
            .collect();
        let weight = if int8.len() == 3 {
            PackedInt8::stack(&int8).map(|p| LinearWeight::Int8(Arc::new(p)))
        } else if bf16.len() == 3 {
            PackedBf16::stack(&bf16).map(|p| LinearWeight::Bf16(Arc::new(p)))
        } else {
            None
        };
        if let Some(weight) = weight {
            let biases: Vec<Tensor> = parts.iter().filter_map(|l| l.bias.clone()).collect();
            self.fused = Some(Linear {
                name: "qkv".to_string(),
                weight,
                bias: Some(Tensor::cat(&biases, 0)?),
                observer: None,
                train_bf16: false,
            });
        }
        Ok(())
    }
}

struct Layer {
    attention: Attention,
    intermediate: Linear,
    output: Linear,
    norm: LayerNorm,
}

/// A batch of token ids ready for the encoder (all `B × L`).
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Tensor,
    pub positions: Tensor,
    pub token_types: Tensor,
    /// 1.0 for real tokens, 0.0 for padding (f32).
    pub mask: Tensor,
}

pub struct Encoder {
    pub cfg: EncoderConfig,
    pub arch: Arch,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    dropout: Dropout,
    /// Inference skips padding rows (see `forward_packed`); off only to measure padded work.
    pub unpad: bool,
}

impl Encoder {
    /// Builds the encoder from `params` (loaded weights or a random initialisation).
    /// `layers` selects which of the checkpoint's layers to keep (all when `None`), in order.
    pub fn load(p: &mut Params, cfg: &EncoderConfig, layers: Option<&[usize]>) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let embeddings = Embeddings {
            word: p.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: p.get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: p.get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?,
            norm: LayerNorm::load(p, "embeddings.LayerNorm", h, eps)?,
        };
        let keep: Vec<usize> = match layers {
            Some(l) => l.to_vec(),
            None => (0..cfg.num_hidden_layers).collect(),
        };
        let mut out_layers = Vec::with_capacity(keep.len());
        for (new, &old) in keep.iter().enumerate() {
            anyhow::ensure!(
                old < cfg.num_hidden_layers,
                "layer {old} does not exist (the model has {} layers)",
                cfg.num_hidden_layers
            );
            p.rename_layer(old, new);
            let n = format!("encoder.layer.{new}");
            out_layers.push(Layer {
                attention: Attention {
                    query: Linear::load(p, &format!("{n}.attention.self.query"), h, h)?,
                    key: Linear::load(p, &format!("{n}.attention.self.key"), h, h)?,
                    value: Linear::load(p, &format!("{n}.attention.self.value"), h, h)?,
                    output: Linear::load(p, &format!("{n}.attention.output.dense"), h, h)?,
                    norm: LayerNorm::load(p, &format!("{n}.attention.output.LayerNorm"), h, eps)?,
                    heads: cfg.num_attention_heads,
                    fused: None,
                },
                intermediate: Linear::load(
                    p,
                    &format!("{n}.intermediate.dense"),
                    cfg.intermediate_size,
                    h,
                )?,
                output: Linear::load(p, &format!("{n}.output.dense"), h, cfg.intermediate_size)?,
                norm: LayerNorm::load(p, &format!("{n}.output.LayerNorm"), h, eps)?,
            });
        }
        let mut cfg = cfg.clone();
        cfg.num_hidden_layers = keep.len();
        for l in &mut out_layers {
            l.attention.fuse()?;
        }
        Ok(Encoder {
            arch: cfg.arch()?,
            cfg,
            embeddings,
            layers: out_layers,
            dropout: Dropout::new(0x1ec7),
            unpad: true,
        })
    }

    /// Fuses each layer's query, key and value products where they are int8 (or bf16) alike.
    pub fn fuse_packed(&mut self) -> Result<()> {
        for l in &mut self.layers {
            l.attention.fuse()?;
        }
        Ok(())
    }

    /// Every dense layer of the transformer, in order.
    pub fn linears(&self) -> Vec<&Linear> {
        self.layers
            .iter()
            .flat_map(|l| {
                [
                    &l.attention.query,
                    &l.attention.key,
                    &l.attention.value,
                    &l.attention.output,
                    &l.intermediate,
                    &l.output,
                ]
            })
            .collect()
    }

    /// Every dense layer of the transformer, in order.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.attention.query,
                    &mut l.attention.key,
                    &mut l.attention.value,
                    &mut l.attention.output,
                    &mut l.intermediate,
                    &mut l.output,
                ]
            })
            .collect()
    }

    pub fn dropout(&self) -> &Dropout {
        &self.dropout
    }

    /// Last hidden states `B × L × H`. Dropout is active only when `train` is true.
    pub fn forward(&self, b: &Batch, train: bool) -> Result<Tensor> {
        let (bs, len) = b.ids.dims2()?;
        let h = self.cfg.hidden_size;
        let drop_h = if train {
            self.cfg.hidden_dropout_prob
        } else {
            0.0
        };
        let drop_a = if train {
            self.cfg.attention_probs_dropout_prob
        } else {
            0.0
        };
        let e = &self.embeddings;
        let flat = |t: &Tensor| t.flatten_all();
        let x = e
            .word
            .index_select(&flat(&b.ids)?, 0)?
            .add(&e.position.index_select(&flat(&b.positions)?, 0)?)?
            .add(&e.token_type.index_select(&flat(&b.token_types)?, 0)?)?
            .reshape((bs, len, h))?;
        let mut x = self.dropout.apply(&e.norm.forward(&x)?, drop_h)?;
        if !train && self.unpad {
            return self.forward_packed(&x, &b.mask);
        }
        let keys = Keys::Padded(&b.mask);
        for layer in &self.layers {
            x = layer.forward(&x, &keys, &self.dropout, drop_h, drop_a, train)?;
        }
        Ok(x)
    }

    /// Inference on real tokens only: the rows of padding are dropped before the first layer
    /// (every later op is per token, except attention, which gets each item's row range) and
    /// put back as zeros at the end. Same results as the padded pass, less work when batches
    /// hold texts of different lengths.
    fn forward_packed(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (bs, len, h) = x.dims3()?;
        let m = mask.to_vec2::<f32>()?;
        let mut rows = Vec::new();
        let mut offsets = vec![0usize];
        for (b, mr) in m.iter().enumerate() {
            rows.extend(
                mr.iter()
                    .enumerate()
                    .filter(|(_, &v)| v != 0.0)
                    .map(|(i, _)| (b * len + i) as u32),
            );
            offsets.push(rows.len());
        }
        let idx = Tensor::from_vec(rows, offsets[bs], x.device())?;
        let mut t = x.reshape((bs * len, h))?.index_select(&idx, 0)?;
        let keys = Keys::Packed(&offsets);
        for layer in &self.layers {
            t = layer.forward(&t, &keys, &self.dropout, 0.0, 0.0, false)?;
        }
        let full = Tensor::zeros((bs * len, h), t.dtype(), t.device())?;
        Ok(full.index_add(&idx, &t, 0)?.reshape((bs, len, h))?)
    }
}

/// How attention finds each item's keys.
enum Keys<'a> {
    /// `B × L × H` hidden states with a `B × L` mask (1 for tokens).
    Padded(&'a Tensor),
    /// `T × H` real tokens, item `b` in rows `offsets[b] .. offsets[b + 1]` (inference only).
    Packed(&'a [usize]),
}

impl Layer {
    fn forward(
        &self,
        x: &Tensor,
        keys: &Keys,
        dropout: &Dropout,
        drop_h: f64,
        drop_a: f64,
        train: bool,
    ) -> Result<Tensor> {
        let a = self.attention.forward(x, keys, dropout, drop_a, train)?;
        let a = self.attention.norm.forward_residual(
            &dropout.apply(&self.attention.output.forward_t(&a, train, false)?, drop_h)?,
            x,
            train,
        )?;
        let o = match (&self.intermediate.weight, &self.output.weight, train) {
            (LinearWeight::Int8(up), LinearWeight::Int8(down), false) => kernels::int8::ffn_int8(
                &a,
                (up, self.intermediate.bias.as_ref()),
                (down, self.output.bias.as_ref()),
            )?,
            (LinearWeight::Bf16(up), LinearWeight::Bf16(down), false) => kernels::bf16::ffn_bf16(
                &a,
                (up, self.intermediate.bias.as_ref()),
                (down, self.output.bias.as_ref()),
            )?,
            _ => {
                let i = self.intermediate.forward_t(&a, train, true)?;
                dropout.apply(&self.output.forward_t(&i, train, false)?, drop_h)?
            }
        };
        Ok(self.norm.forward_residual(&o, &a, train)?)
    }
}

impl Attention {
    /// Multi-head self-attention up to (not including) the output projection.
    fn forward(
        &self,
        x: &Tensor,
        keys: &Keys,
        dropout: &Dropout,
        p: f64,
        train: bool,
    ) -> Result<Tensor> {
        let h = x.dim(D::Minus1)?;
        let dh = h / self.heads;
        let scale = 1.0 / (dh as f64).sqrt();
        if let (Some(fused), false) = (&self.fused, train) {
            let qkv = fused.forward_t(x, false, false)?;
            let (mask, offsets) = match keys {
                Keys::Packed(o) => (None, *o),
                Keys::Padded(m) => (Some(*m), &[][..]),
            };
            let products = match fused.weight {
                LinearWeight::Bf16(_) => kernels::attention::Products::Bf16,
                _ => kernels::attention::Products::F32,
            };
            return Ok(kernels::attention::attention_fused(
                &qkv, mask, offsets, self.heads, scale, products,
            )?);
        }
        let q = self.query.forward_t(x, train, false)?;
        let k = self.key.forward_t(x, train, false)?;
        let v = self.value.forward_t(x, train, false)?;
        let mask = match (keys, train) {
            (Keys::Packed(offsets), false) => {
                return Ok(kernels::attention::attention_packed(
                    &q, &k, &v, offsets, self.heads, scale,
                )?)
            }
            (Keys::Packed(_), true) => anyhow::bail!("packed tokens are for inference only"),
            (Keys::Padded(mask), false) => {
                let ctx = kernels::attention::attention_infer(&q, &k, &v, mask, self.heads, scale)?;
                return Ok(ctx);
            }
            (Keys::Padded(mask), true) => *mask,
        };
        let (b, l, _) = x.dims3()?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, l, self.heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        // Scaling and the key padding mask are fused into the softmax.
        let scores = q.matmul(&k.t()?)?;
        let probs = kernels::masked_softmax(&scores, mask, scale)?;
        let probs = dropout.apply(&probs, p)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))?;
        Ok(ctx)
    }
}

/// Position ids: BERT counts from 0; XLM-R counts real tokens from `pad + 1` and gives padding
/// the pad id (as `create_position_ids_from_input_ids` in transformers).
pub fn position_ids(arch: Arch, mask: &[Vec<u32>], pad: u32) -> Vec<Vec<u32>> {
    mask.iter()
        .map(|m| match arch {
            Arch::Bert => (0..m.len() as u32).collect(),
            Arch::XlmRoberta => {
                let mut c = 0;
                m.iter()
                    .map(|&v| {
                        if v == 1 {
                            c += 1;
                            pad + c
                        } else {
                            pad
                        }
                    })
                    .collect()
            }
        })
        .collect()
}

/// Builds a padded batch from token ids (right padding with `pad`).
pub fn make_batch(
    arch: Arch,
    seqs: &[Vec<u32>],
    pad: u32,
    pad_to: Option<usize>,
    device: &candle_core::Device,
) -> Result<Batch> {
    let longest = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let len = pad_to.unwrap_or(longest).max(longest);
    let mut ids = Vec::with_capacity(seqs.len() * len);
    let mut mask = Vec::with_capacity(seqs.len());
    for s in seqs {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad, len - s.len()));
        let mut m = vec![1u32; s.len()];
        m.resize(len, 0);
        mask.push(m);
    }
    let positions: Vec<u32> = position_ids(arch, &mask, pad).concat();
    let n = seqs.len();
    let maskf: Vec<f32> = mask.concat().into_iter().map(|v| v as f32).collect();
    Ok(Batch {
        ids: Tensor::from_vec(ids, (n, len), device)?,
        positions: Tensor::from_vec(positions, (n, len), device)?,
        token_types: Tensor::zeros((n, len), DType::U32, device)?,
        mask: Tensor::from_vec(maskf, (n, len), device)?,
    })
}

impl Batch {
    /// The same batch with token type ids (segment A 0, segment B 1 for text pairs), one row
    /// per sequence, right-padded with 0.
    pub fn with_token_types(mut self, types: &[Vec<u32>]) -> Result<Batch> {
        let (n, len) = self.ids.dims2()?;
        anyhow::ensure!(
            types.len() == n,
            "{} token type rows for {n} sequences",
            types.len()
        );
        let mut flat = Vec::with_capacity(n * len);
        for t in types {
            anyhow::ensure!(
                t.len() <= len,
                "token types longer than the batch ({} > {len})",
                t.len()
            );
            flat.extend_from_slice(t);
            flat.extend(std::iter::repeat_n(0, len - t.len()));
        }
        self.token_types = Tensor::from_vec(flat, (n, len), self.ids.device())?;
        Ok(self)
    }
}

/// Mean over the last-but-one dimension, weighted by the mask.
pub fn mean_pool(h: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.unsqueeze(D::Minus1)?;
    let sum = h.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    Ok(sum.broadcast_div(&count)?)
}

//! The sentence encoder: a BERT / XLM-R transformer, pooling, an optional projection and L2
//! normalisation, with the folder's tokenizer. Loads and saves Hugging Face /
//! sentence-transformers folders.

pub mod bert;
pub mod config;
pub mod hub;
pub mod import;
pub mod params;
pub mod prompts;
pub mod quantize;
pub mod save;
pub mod tokenize;
pub mod trained;

use anyhow::{Context, Result};
use bert::{make_batch, mean_pool, Encoder, Linear};
use candle_core::{Device, Module, Tensor, Var, D};
use config::{read_json, Arch, EncoderConfig, Pooling, PoolingConfig, SentenceBertConfig};
use params::Params;
use std::path::{Path, PathBuf};
use tokenize::{length_order, TextTokenizer};

/// Choices that override what the folder says.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Token limit; default: the folder's `max_seq_length`, else 512.
    pub max_len: Option<usize>,
    pub pooling: Option<Pooling>,
    /// Add a fresh bias-free projection to this many dimensions (when the folder has none).
    pub projection_dim: Option<usize>,
    /// Keep only these transformer layers (distillation students).
    pub layers: Option<Vec<usize>>,
    /// Quantize the encoder's dense layers to int8 as they load (inference only).
    pub int8: bool,
    /// Bits per weight of that quantization (7: the faster AVX2 kernel).
    pub int8_weight_bits: crate::kernels::int8::WeightBits,
    /// Round the encoder's dense layers to bf16 as they load (inference only; f32 sums).
    pub bf16: bool,
    pub seed: u64,
    /// The prompt of topic texts: a prompt name of the folder, or the text itself ("" for
    /// none); default: the folder's query prompt.
    pub topic_prompt: Option<String>,
    /// The prompt of content texts; default: the folder's passage prompt.
    pub content_prompt: Option<String>,
}

pub struct SentenceModel {
    pub encoder: Encoder,
    pub params: Params,
    pub tokenizer: TextTokenizer,
    pub pooling: Pooling,
    pub projection: Option<Linear>,
    /// Tanh after the projection (sentence-transformers Dense with `activation_function` Tanh).
    pub projection_tanh: bool,
    pub normalize: bool,
    pub pad_id: u32,
    pub device: Device,
    /// Where the model came from (files to copy when saving), if a folder.
    pub source_dir: Option<PathBuf>,
    /// The original `config.json`, kept field for field when saving.
    pub config_json: serde_json::Value,
    /// The prompts topic and content texts get (`config_sentence_transformers.json`).
    pub prompts: prompts::Prompts,
}

/// One forward pass: padding mask (`B × L`, 1.0 for tokens), last hidden states (`B × L × H`)
/// and the model's output embeddings (`B × dim`).
pub struct Forward {
    pub mask: Tensor,
    pub hidden: Tensor,
    pub embeddings: Tensor,
}

/// Embeddings of many texts: `rows × dim`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Embeddings {
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

impl SentenceModel {
    /// Loads a model folder or hub name.
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Self> {
        let dir = hub::resolve_model(spec)?;
        Self::load_folder(&dir, opts)
    }

    pub fn load_folder(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let device = Device::Cpu;
        let config_json: serde_json::Value = read_json(&dir.join("config.json"))?;
        let cfg: EncoderConfig = serde_json::from_value(config_json.clone())
            .with_context(|| format!("{}: unexpected config", dir.join("config.json").display()))?;
        let st_max = dir.join("sentence_bert_config.json");
        let folder_max = if st_max.exists() {
            read_json::<SentenceBertConfig>(&st_max)?.max_seq_length
        } else {
            None
        };
        let max_len = opts
            .max_len
            .or(folder_max)
            .unwrap_or(512)
            .min(max_positions(&cfg));
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_len)?;
        let pool_path = dir.join("1_Pooling/config.json");
        let folder_pooling = if pool_path.exists() {
            Some(read_json::<PoolingConfig>(&pool_path)?.pooling()?)
        } else {
            None
        };
        let pooling = opts.pooling.or(folder_pooling).unwrap_or(Pooling::Mean);
        let mut params = Params::from_folder(dir, &device)?;
        let encoder = Encoder::load(&mut params, &cfg, opts.layers.as_deref())?;
        let (projection, projection_tanh) = match load_dense(dir, &device, &mut params)? {
            Some((l, tanh)) => (Some(l), tanh),
            None => (None, false),
        };
        let modules = std::fs::read_to_string(dir.join("modules.json")).unwrap_or_default();
        let normalize = modules.is_empty() || modules.contains("Normalize");
        let mut prompts = prompts::Prompts::from_folder(dir)?;
        for (role, value) in [
            (prompts::Role::Topic, &opts.topic_prompt),
            (prompts::Role::Content, &opts.content_prompt),
        ] {
            if let Some(v) = value {
                prompts.set(role, v);
            }
        }
        let mut m = SentenceModel {
            pad_id: cfg.pad_token_id,
            encoder,
            params,
            tokenizer,
            pooling,
            projection,
            projection_tanh,
            normalize,
            device,
            source_dir: Some(dir.to_path_buf()),
            config_json,
            prompts,
        };
        if m.projection.is_none() {
            if let Some(d) = opts.projection_dim {
                m.add_projection(d, opts.seed)?;
            }
        }
        if opts.bf16 {
            anyhow::ensure!(
                !opts.int8 && !m.is_int8(),
                "{}: bf16 is for float models; this one is {}",
                dir.display(),
                if m.is_int8() {
                    "an int8 folder (give its float version)"
                } else {
                    "being quantized to int8 (give --int8 or --bf16, not both)"
                }
            );
            m.to_bf16()?;
            let kernel = crate::kernels::bf16::Bf16Kernel::detect();
            if kernel == crate::kernels::bf16::Bf16Kernel::Portable {
                tracing::warn!(
                    "{}: bf16 on a CPU without AVX512_BF16 (or with LECR_ISA below avx512): the \
                     portable bf16 kernel is much slower than the float model here",
                    dir.display()
                );
            }
        }
        if opts.int8 && !m.is_int8() {
            quantize::calibrate_and_quantize_bits(
                &mut m,
                None,
                quantize::DEFAULT_ALPHA,
                opts.int8_weight_bits,
            )?;
        }
        if m.is_int8() {
            let kernel = crate::kernels::int8::Int8Kernel::detect();
            if kernel == crate::kernels::int8::Int8Kernel::Scalar {
                tracing::warn!(
                    "{}: int8 model on a CPU without AVX2 (or with LECR_ISA=scalar / \
                     LECR_INT8_SCALAR=1): the portable int8 kernel is slower than the float \
                     model here",
                    dir.display()
                );
            }
        }
        Ok(m)
    }

    /// A randomly initialised model (tests, benchmarks) with a given tokenizer file.
    pub fn random(
        cfg: &EncoderConfig,
        tokenizer: &Path,
        max_len: usize,
        seed: u64,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let mut params = Params::random(seed, &device);
        let encoder = Encoder::load(&mut params, cfg, None)?;
        Ok(SentenceModel {
            pad_id: cfg.pad_token_id,
            encoder,
            params,
            tokenizer: TextTokenizer::from_file(tokenizer, max_len)?,
            pooling: Pooling::Mean,
            projection: None,
            projection_tanh: false,
            normalize: true,
            device,
            source_dir: None,
            config_json: serde_json::to_value(cfg)?,
            prompts: prompts::Prompts::default(),
        })
    }

    /// Adds a fresh bias-free projection `hidden → dim`.
    pub fn add_projection(&mut self, dim: usize, seed: u64) -> Result<()> {
        let h = self.encoder.cfg.hidden_size;
        let mut p = Params::random(seed ^ 0x9e37, &self.device);
        let w = p.get("linear.weight", &[dim, h])?;
        for (n, v) in p.vars {
            self.params.vars.push((format!("2_Dense.{n}"), v));
        }
        self.projection = Some(Linear::float("2_Dense.linear", w, None));
        Ok(())
    }

    /// Sets the dropout of hidden states and attention probabilities (training only).
    pub fn set_dropout(&mut self, p: f64) {
        self.encoder.cfg.hidden_dropout_prob = p;
        self.encoder.cfg.attention_probs_dropout_prob = p;
    }

    /// Overwrites the weights with those of a saved folder of the same architecture.
    pub fn load_weights_from(&self, dir: &Path) -> Result<()> {
        let mut tensors = std::collections::HashMap::new();
        for (file, prefix) in [
            (dir.join("model.safetensors"), ""),
            (dir.join("2_Dense/model.safetensors"), "2_Dense."),
        ] {
            if !file.exists() {
                continue;
            }
            for (n, t) in candle_core::safetensors::load(&file, &self.device)? {
                let name = if prefix.is_empty() {
                    params::canonical(&n).0
                } else {
                    format!("{prefix}{n}")
                };
                tensors.insert(name, t);
            }
        }
        for (name, var) in &self.params.vars {
            let t = tensors
                .get(name)
                .with_context(|| format!("{}: no weight `{name}`", dir.display()))?;
            var.set(&t.to_dtype(candle_core::DType::F32)?)?;
        }
        Ok(())
    }

    pub fn arch(&self) -> Arch {
        self.encoder.arch
    }

    /// Output dimension.
    pub fn dim(&self) -> usize {
        match &self.projection {
            Some(p) => p.out_dim(),
            None => self.encoder.cfg.hidden_size,
        }
    }

    /// Whether the encoder's dense layers are int8 (an inference-only model).
    pub fn is_int8(&self) -> bool {
        !self.params.int8.is_empty()
    }

    /// Whether the encoder's dense layers run in bf16 (loaded with `bf16`).
    pub fn is_bf16(&self) -> bool {
        let layers = self.encoder.linears();
        layers
            .iter()
            .any(|l| matches!(l.weight, params::LinearWeight::Bf16(_)))
    }

    /// Rounds every float dense layer of the encoder to bf16 for inference (the f32 weights
    /// stay as the variables: saving writes them, training refuses the bf16 layers).
    pub fn to_bf16(&mut self) -> Result<()> {
        for l in self.encoder.linears_mut() {
            if let params::LinearWeight::Float(w) = &l.weight {
                let (out_dim, in_dim) = w.dims2()?;
                let values = w.flatten_all()?.to_vec1::<f32>()?;
                let packed = crate::kernels::bf16::PackedBf16::pack(&values, out_dim, in_dim);
                l.weight = params::LinearWeight::Bf16(std::sync::Arc::new(packed));
            }
        }
        self.encoder.fuse_packed()
    }

    /// Mixed-precision training on (`true`) or off: the encoder's float dense layers run their
    /// training products in bf16 (f32 sums; the weights, gradients and optimizer stay f32).
    /// Inference is unchanged.
    pub fn set_train_bf16(&mut self, on: bool) {
        for l in self.encoder.linears_mut() {
            l.train_bf16 = on;
        }
    }

    /// Every trainable variable.
    pub fn vars(&self) -> Vec<Var> {
        self.params.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Pooled (and normalised) embeddings of token sequences, `B × dim`.
    pub fn forward_ids(
        &self,
        seqs: &[Vec<u32>],
        pad_to: Option<usize>,
        train: bool,
    ) -> Result<Tensor> {
        Ok(self.forward_full(seqs, pad_to, train)?.embeddings)
    }

    /// The batch, its last hidden states and its embeddings (what distillation compares).
    pub fn forward_full(
        &self,
        seqs: &[Vec<u32>],
        pad_to: Option<usize>,
        train: bool,
    ) -> Result<Forward> {
        let batch = make_batch(self.arch(), seqs, self.pad_id, pad_to, &self.device)?;
        let hidden = self.encoder.forward(&batch, train)?;
        let pooled = match self.pooling {
            Pooling::Mean => mean_pool(&hidden, &batch.mask)?,
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let pooled = match &self.projection {
            Some(p) if self.projection_tanh => p.forward(&pooled)?.tanh()?,
            Some(p) => p.forward(&pooled)?,
            None => pooled,
        };
        let embeddings = if self.normalize {
            l2_normalize(&pooled)?
        } else {
            pooled
        };
        Ok(Forward {
            mask: batch.mask,
            hidden,
            embeddings,
        })
    }

    /// Embeds texts in order, batching by token length ("smart batching").
    pub fn embed(&self, texts: &[String], batch_size: usize, label: &str) -> Result<Embeddings> {
        let bar = crate::progress::bar(texts.len() as u64, label);
        self.embed_with(texts, batch_size, bar)
    }

    /// Embeds topic or content texts with the model's prompt for them.
    pub fn embed_as(
        &self,
        role: prompts::Role,
        texts: &[String],
        batch_size: usize,
        label: &str,
    ) -> Result<Embeddings> {
        self.embed(&self.prompts.apply(role, texts), batch_size, label)
    }

    /// [`Self::embed_as`] without a progress bar.
    pub fn embed_quiet_as(
        &self,
        role: prompts::Role,
        texts: &[String],
        batch_size: usize,
    ) -> Result<Embeddings> {
        self.embed_quiet(&self.prompts.apply(role, texts), batch_size)
    }

    /// [`Self::embed`] without a progress bar (the service embeds small batches all the time).
    pub fn embed_quiet(&self, texts: &[String], batch_size: usize) -> Result<Embeddings> {
        self.embed_with(texts, batch_size, indicatif::ProgressBar::hidden())
    }

    fn embed_with(
        &self,
        texts: &[String],
        batch_size: usize,
        bar: indicatif::ProgressBar,
    ) -> Result<Embeddings> {
        let dim = self.dim();
        let mut data = vec![0f32; texts.len() * dim];
        let batch_size = batch_size.max(1);
        // Tokenize in chunks so memory stays bounded on 150k texts.
        let chunk = batch_size * 64;
        for start in (0..texts.len()).step_by(chunk) {
            let end = (start + chunk).min(texts.len());
            let refs: Vec<&str> = texts[start..end].iter().map(String::as_str).collect();
            let ids = self.tokenizer.encode(&refs)?;
            let order = length_order(&ids.iter().map(Vec::len).collect::<Vec<_>>());
            for group in order.chunks(batch_size) {
                let seqs: Vec<Vec<u32>> = group.iter().map(|&i| ids[i].clone()).collect();
                let out = self.forward_ids(&seqs, None, false)?;
                let rows = out.to_vec2::<f32>()?;
                for (&i, r) in group.iter().zip(rows) {
                    let at = (start + i) * dim;
                    data[at..at + dim].copy_from_slice(&r);
                }
                bar.inc(group.len() as u64);
            }
        }
        bar.finish_and_clear();
        Ok(Embeddings { dim, data })
    }
}

fn max_positions(cfg: &EncoderConfig) -> usize {
    match cfg.arch() {
        // XLM-R positions start after the pad index.
        Ok(Arch::XlmRoberta) => cfg.max_position_embeddings - cfg.pad_token_id as usize - 1,
        _ => cfg.max_position_embeddings,
    }
}

/// sentence-transformers' `2_Dense/config.json`.
#[derive(serde::Deserialize)]
struct DenseConfig {
    #[serde(default)]
    bias: bool,
    #[serde(default)]
    activation_function: String,
}

/// A sentence-transformers `2_Dense` module (projection, optional bias, identity or tanh), if
/// the folder has one. Returns the layer and whether tanh follows.
fn load_dense(dir: &Path, device: &Device, params: &mut Params) -> Result<Option<(Linear, bool)>> {
    let d = dir.join("2_Dense");
    if !d.join("model.safetensors").exists() {
        return Ok(None);
    }
    let cfg: DenseConfig = read_json(&d.join("config.json"))?;
    let tanh = match cfg.activation_function.rsplit('.').next().unwrap_or("") {
        "Identity" | "" => false,
        "Tanh" => true,
        other => anyhow::bail!("2_Dense: activation `{other}` is not supported (Identity, Tanh)"),
    };
    let mut p = Params::from_folder(&d, device)?;
    let shape = |name: &str| {
        p.extras()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.dims().to_vec())
            .with_context(|| format!("2_Dense/model.safetensors has no {name}"))
    };
    let ws = shape("linear.weight")?;
    let bs = if cfg.bias {
        Some(shape("linear.bias")?)
    } else {
        None
    };
    let weight = p.get("linear.weight", &ws)?;
    let bias = match bs {
        Some(s) => Some(p.get("linear.bias", &s)?),
        None => None,
    };
    for (n, v) in p.vars {
        params.vars.push((format!("2_Dense.{n}"), v));
    }
    Ok(Some((Linear::float("2_Dense.linear", weight, bias), tanh)))
}

/// Rows divided by their L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

//! Writing a model as a Hugging Face / sentence-transformers folder that lecr and Python
//! sentence-transformers both load: config.json, tokenizer files, model.safetensors with the
//! original tensor names, modules.json, 1_Pooling, optional 2_Dense, Normalize.
//! The folder is built beside the target and renamed into place.

use super::config::PoolingConfig;
use super::SentenceModel;
use crate::kernels::int8::QuantizedMatrix;
use anyhow::{Context, Result};
use candle_core::Tensor;
use std::path::Path;

/// Tokenizer and sentence-transformers files copied unchanged from the source folder.
pub(crate) const COPIED: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "config_sentence_transformers.json",
];

/// Written beside an int8 model's weights: what the I8 tensors mean.
pub const QUANTIZATION_FILE: &str = "quantization.json";

fn quantization_note(int8: &[(String, QuantizedMatrix)]) -> serde_json::Value {
    serde_json::json!({
        "format": "lecr-int8",
        "version": 1,
        "weights": "int8, symmetric, one scale per output row: W[n, k] = weight[n, k] * weight_scale[n] / weight_smooth[k]",
        "weight_bits": if int8.iter().all(|(_, q)| q.fits_seven_bits()) { 7 } else { 8 },
        "scales": format!("`<name>{}` (F32, one per output row) beside each I8 `<name>`", super::params::SCALE_SUFFIX),
        "smoothing": format!("optional `<name>{}` (F32, one per input; SmoothQuant): inputs are divided by it before they are quantized; absent = ones", super::params::SMOOTH_SUFFIX),
        "activations": "quantized at run time to int8 over each token's own range: one scale and zero point per token",
        "float": "embeddings, layer norms, biases, pooling and any 2_Dense projection",
        "layers": int8.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
    })
}

/// Tensors by the names they are saved under.
pub type NamedTensors = Vec<(String, Tensor)>;

impl SentenceModel {
    /// The tensors to save under their file names (prefix restored), the encoder's first.
    pub fn named_tensors(&self) -> (NamedTensors, NamedTensors) {
        let prefix = &self.params.prefix;
        let mut enc = Vec::new();
        let mut dense = Vec::new();
        for (n, v) in &self.params.vars {
            match n.strip_prefix("2_Dense.") {
                Some(rest) => dense.push((rest.to_string(), v.as_tensor().clone())),
                None => enc.push((format!("{prefix}{n}"), v.as_tensor().clone())),
            }
        }
        for (n, t) in self.params.extras() {
            enc.push((format!("{prefix}{n}"), t));
        }
        (enc, dense)
    }

    /// Saves the model as a folder at `out` (replacing what is there).
    pub fn save(&self, out: &Path) -> Result<()> {
        self.save_with(out, |_| Ok(()))
    }

    /// Saves like [`save`](Self::save); `extra` writes more files into the new folder before
    /// it replaces `out`, so model and extras change together.
    pub fn save_with(&self, out: &Path, extra: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        crate::io::write_dir_atomic(out, |dir| {
            let (enc, dense) = self.named_tensors();
            let prefix = &self.params.prefix;
            let int8: Vec<(String, QuantizedMatrix)> = self
                .params
                .int8
                .iter()
                .map(|(n, q)| (format!("{prefix}{n}"), q.unpack()))
                .collect();
            write_stored(&dir.join("model.safetensors"), &enc, &int8)?;
            if !int8.is_empty() {
                write_json(&dir.join(QUANTIZATION_FILE), &quantization_note(&int8))?;
            }

            let mut cfg = self.config_json.clone();
            cfg["num_hidden_layers"] = serde_json::json!(self.encoder.cfg.num_hidden_layers);
            write_json(&dir.join("config.json"), &cfg)?;

            match &self.source_dir {
                Some(src) => {
                    for f in COPIED {
                        if src.join(f).exists() {
                            std::fs::copy(src.join(f), dir.join(f))
                                .with_context(|| format!("copying {f}"))?;
                        }
                    }
                }
                None => self
                    .tokenizer
                    .inner()
                    .save(dir.join("tokenizer.json"), false)
                    .map_err(|e| anyhow::anyhow!("saving tokenizer.json: {e}"))?,
            }
            // The prompts in effect (an override included), so the folder embeds as trained.
            self.prompts.write_into(dir)?;
            write_json(
                &dir.join("sentence_bert_config.json"),
                &serde_json::json!({"max_seq_length": self.tokenizer.max_len, "do_lower_case": false}),
            )?;
            let h = self.encoder.cfg.hidden_size;
            std::fs::create_dir_all(dir.join("1_Pooling"))?;
            write_json(
                &dir.join("1_Pooling/config.json"),
                &PoolingConfig::new(self.pooling, h),
            )?;
            let mut modules = vec![
                serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
                serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
            ];
            if let Some(p) = &self.projection {
                let d = dir.join("2_Dense");
                std::fs::create_dir_all(&d)?;
                write_dense_config(
                    &d,
                    p.in_dim(),
                    p.out_dim(),
                    p.bias.is_some(),
                    self.projection_tanh,
                )?;
                write_safetensors(&d.join("model.safetensors"), &dense)?;
                modules.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}));
            }
            if self.normalize {
                let i = modules.len();
                let path = format!("{i}_Normalize");
                std::fs::create_dir_all(dir.join(&path))?;
                modules.push(serde_json::json!({"idx": i, "name": i.to_string(), "path": path, "type": "sentence_transformers.models.Normalize"}));
            }
            write_json(&dir.join("modules.json"), &modules)?;
            extra(dir)
        })
    }
}

/// sentence-transformers' `2_Dense/config.json` (identity or tanh after the layer).
pub(crate) fn write_dense_config(
    dir: &Path,
    in_features: usize,
    out_features: usize,
    bias: bool,
    tanh: bool,
) -> Result<()> {
    let act = if tanh {
        "torch.nn.modules.activation.Tanh"
    } else {
        "torch.nn.modules.linear.Identity"
    };
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({"in_features": in_features, "out_features": out_features,
            "bias": bias, "activation_function": act}),
    )
}

pub fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    crate::io::write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, v)?;
        Ok(())
    })
}

/// Writes tensors as safetensors (f32, except i64 and u32 which keep their type).
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    write_stored(path, tensors, &[])
}

/// Writes float tensors and int8 weights (`name` as I8, `name_scale` as F32 beside it).
fn write_stored(
    path: &Path,
    tensors: &[(String, Tensor)],
    int8: &[(String, QuantizedMatrix)],
) -> Result<()> {
    use candle_core::DType;
    let mut stored: Vec<(String, Stored)> = Vec::new();
    for (n, t) in tensors {
        let shape = t.dims().to_vec();
        let t = t.flatten_all()?;
        let (dtype, data) = match t.dtype() {
            DType::I64 => (safetensors::Dtype::I64, le_bytes(t.to_vec1::<i64>()?)),
            DType::U32 => (safetensors::Dtype::U32, le_bytes(t.to_vec1::<u32>()?)),
            _ => (
                safetensors::Dtype::F32,
                le_bytes(t.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            ),
        };
        stored.push((n.clone(), Stored { dtype, shape, data }));
    }
    for (n, q) in int8 {
        let data = q.values.iter().map(|&v| v as u8).collect();
        let shape = vec![q.rows, q.cols];
        let dtype = safetensors::Dtype::I8;
        stored.push((n.clone(), Stored { dtype, shape, data }));
        let (dtype, shape, data) = (
            safetensors::Dtype::F32,
            vec![q.rows],
            le_bytes(q.scales.clone()),
        );
        let name = format!("{n}{}", super::params::SCALE_SUFFIX);
        stored.push((name, Stored { dtype, shape, data }));
        if let Some(s) = &q.smooth {
            let (shape, data) = (vec![q.cols], le_bytes(s.clone()));
            let name = format!("{n}{}", super::params::SMOOTH_SUFFIX);
            stored.push((name, Stored { dtype, shape, data }));
        }
    }
    let bytes = safetensors::serialize(stored, None)?;
    crate::io::write_atomic(path, |w| {
        w.write_all(&bytes)?;
        Ok(())
    })
}

/// Little-endian bytes of numbers (safetensors' byte order).
trait LeBytes: Copy {
    fn put(self, out: &mut Vec<u8>);
}
macro_rules! le_bytes_impl {
    ($($t:ty),*) => {$(impl LeBytes for $t {
        fn put(self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
    })*};
}
le_bytes_impl!(f32, i64, u32);

fn le_bytes<T: LeBytes>(v: Vec<T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * std::mem::size_of::<T>());
    for x in v {
        x.put(&mut out);
    }
    out
}

/// One tensor ready to serialise.
struct Stored {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for Stored {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

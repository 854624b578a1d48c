//! Writing a model as a Hugging Face / sentence-transformers folder that lecr and Python
//! sentence-transformers both load: config.json, tokenizer files, model.safetensors with the
//! original tensor names, modules.json, 1_Pooling, optional 2_Dense, Normalize.
//! The folder is built beside the target and renamed into place.

use super::config::PoolingConfig;
use super::SentenceModel;
use anyhow::{Context, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// Tokenizer and sentence-transformers files copied unchanged from the source folder.
const COPIED: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "config_sentence_transformers.json",
];

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
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(".lecr-model-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
        let dir = tmp.path();
        let (enc, dense) = self.named_tensors();
        write_safetensors(&dir.join("model.safetensors"), &enc)?;

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
            let (out_f, in_f) = p.weight.dims2()?;
            let act = if self.projection_tanh {
                "torch.nn.modules.activation.Tanh"
            } else {
                "torch.nn.modules.linear.Identity"
            };
            write_json(
                &d.join("config.json"),
                &serde_json::json!({"in_features": in_f, "out_features": out_f,
                    "bias": p.bias.is_some(), "activation_function": act}),
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
        extra(dir)?;

        // Swap the finished folder into place.
        let kept = tmp.keep();
        if out.exists() {
            let old = parent.join(format!(
                ".lecr-old-{}",
                out.file_name()
                    .map(|f| f.to_string_lossy())
                    .unwrap_or_default()
            ));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(out, &old)
                .with_context(|| format!("moving {} aside", out.display()))?;
            std::fs::rename(&kept, out)?;
            std::fs::remove_dir_all(&old)?;
        } else {
            std::fs::rename(&kept, out)
                .with_context(|| format!("renaming the new model folder to {}", out.display()))?;
        }
        Ok(())
    }
}

pub fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    crate::io::write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, v)?;
        Ok(())
    })
}

/// Writes f32 tensors as safetensors.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    use candle_core::DType;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (n, t) in tensors {
        let t = match t.dtype() {
            DType::F32 | DType::I64 | DType::U32 => t.clone(),
            _ => t.to_dtype(DType::F32)?,
        };
        map.insert(n.clone(), t);
    }
    let bytes = safetensors::serialize(
        map.iter()
            .map(|(n, t)| (n.clone(), TensorView(t.clone())))
            .collect::<Vec<_>>(),
        None,
    )?;
    crate::io::write_atomic(path, |w| {
        w.write_all(&bytes)?;
        Ok(())
    })
}

/// Adapter from a candle tensor to safetensors' view trait.
struct TensorView(Tensor);

impl safetensors::View for TensorView {
    fn dtype(&self) -> safetensors::Dtype {
        match self.0.dtype() {
            candle_core::DType::I64 => safetensors::Dtype::I64,
            candle_core::DType::U32 => safetensors::Dtype::U32,
            _ => safetensors::Dtype::F32,
        }
    }
    fn shape(&self) -> &[usize] {
        self.0.dims()
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let t = self.0.flatten_all().expect("flatten");
        let bytes: Vec<u8> = match t.dtype() {
            candle_core::DType::F32 => t
                .to_vec1::<f32>()
                .expect("f32")
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            candle_core::DType::I64 => t
                .to_vec1::<i64>()
                .expect("i64")
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            candle_core::DType::U32 => t
                .to_vec1::<u32>()
                .expect("u32")
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            other => unreachable!("write_safetensors converts {other:?} to f32 first"),
        };
        std::borrow::Cow::Owned(bytes)
    }
    fn data_len(&self) -> usize {
        self.0.elem_count() * self.0.dtype().size_in_bytes()
    }
}

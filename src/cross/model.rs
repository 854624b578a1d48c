//! The cross-encoder: one BERT / XLM-R transformer reads `[CLS] topic [SEP] content [SEP]`
//! and a head turns the first token's last hidden state into one relevance logit.
//!
//! The head is the one Hugging Face's `…ForSequenceClassification` models carry, so a folder
//! saved here is a sequence-classification folder (`num_labels` 1) that transformers and
//! sentence-transformers' `CrossEncoder` load, and such a folder trained elsewhere loads here:
//! - BERT: `pooler.dense` (H→H, tanh), then `classifier` (H→1);
//! - XLM-R: `classifier.dense` (H→H, tanh), then `classifier.out_proj` (H→1).
//!
//! A plain encoder folder (a bi-encoder such as all-MiniLM-L6-v2) starts the head afresh:
//! its pooler when it has one, a random `classifier` (seeded).

use crate::model::bert::{make_batch, Linear};
use crate::model::config::{read_json, Arch, Pooling};
use crate::model::params::Params;
use crate::model::tokenize::length_order;
use crate::model::{LoadOptions, SentenceModel};
use anyhow::{Context, Result};
use candle_core::{Module, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Written into a saved cross-encoder folder: what lecr needs beyond `config.json`.
pub const META_FILE: &str = "lecr_cross.json";

/// How a cross-encoder loads.
#[derive(Debug, Clone, Default)]
pub struct CrossOptions {
    /// Token limit of a pair (topic and content together); default: the folder's, else
    /// [`DEFAULT_MAX_LEN`].
    pub max_len: Option<usize>,
    /// Seed of a fresh head.
    pub seed: u64,
    /// Quantize the transformer's dense layers to int8 (inference only; the head stays f32).
    pub int8: bool,
    /// Round the transformer's dense layers to bf16 (inference only).
    pub bf16: bool,
}

/// The arithmetic of a cross-encoder's dense layers at inference (layer norms, softmax and
/// the head stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (what a reranker saved without a precision was trained with).
    #[default]
    F32,
    /// Weights rounded to bf16, f32 sums (AMX or AVX512_BF16 where the CPU has them).
    Bf16,
    /// Weights and activations in int8 (quantized as it loads, calibrated on generated
    /// vocabulary texts with a fixed seed, so every load gives the same model); the fastest on
    /// every CPU lecr runs on (VNNI, AVX-VNNI, AVX2), and exact across them.
    Int8,
}

impl Precision {
    /// The precision a new reranker's cross-encoder runs in unless told otherwise.
    pub const DEFAULT_FOR_RERANKER: Precision = Precision::Int8;

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// Load options in this precision.
    pub fn options(self) -> CrossOptions {
        CrossOptions {
            int8: self == Precision::Int8,
            bf16: self == Precision::Bf16,
            ..Default::default()
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The files whose bytes make a cross-encoder's logits, in the order they are hashed.
const FINGERPRINTED: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "pytorch_model.bin",
    META_FILE,
];

/// SHA-256 (hex) over the folder's config, tokenizer, weights and lecr's own settings file,
/// each present file's name and length before its bytes; an error when it has no weights.
pub fn fingerprint(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut h = Sha256::new();
    let mut weights = false;
    let mut buf = vec![0u8; 1 << 20];
    for name in FINGERPRINTED {
        let path = dir.join(name);
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        let len = f
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        weights |= name.ends_with(".safetensors") || name.ends_with(".bin");
        h.update(name.as_bytes());
        h.update(len.to_le_bytes());
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    anyhow::ensure!(
        weights,
        "{}: no model.safetensors or pytorch_model.bin (not a model folder)",
        dir.display()
    );
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Tokens of a (topic, content) pair unless told otherwise: topic breadcrumbs and a
/// content's title, description and text start fit; the cost grows with it.
pub const DEFAULT_MAX_LEN: usize = 128;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossMeta {
    pub format: u32,
    pub max_len: usize,
    /// What the head started from (`fresh` or `folder`) and the folder it was trained from.
    pub trained_from: String,
}

pub struct CrossEncoder {
    /// Transformer, tokenizer and the trainable variables (the head's among them).
    pub model: SentenceModel,
    dense: Linear,
    out: Linear,
    /// Whether the head came from the folder (false: fresh).
    pub head_loaded: bool,
}

/// The head's layer names for an architecture: (dense, out).
fn head_names(arch: Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::Bert => ("pooler.dense", "classifier"),
        Arch::XlmRoberta => ("classifier.dense", "classifier.out_proj"),
    }
}

/// Refuses a folder lecr cannot read as a cross-encoder, before any weight is read.
fn check_folder(dir: &Path) -> Result<()> {
    let cfg_path = dir.join("config.json");
    let cfg: serde_json::Value = read_json(&cfg_path)?;
    if let Some(archs) = cfg.get("architectures").and_then(|a| a.as_array()) {
        for a in archs.iter().filter_map(|a| a.as_str()) {
            let known = ["Bert", "XLMRoberta", "Roberta"]
                .iter()
                .any(|p| a.starts_with(p));
            anyhow::ensure!(
                known,
                "{}: architecture `{a}` is not a BERT or XLM-R encoder; lecr's cross-encoder \
                 reads BERT / XLM-R folders (`…Model` or `…ForSequenceClassification`)",
                cfg_path.display()
            );
        }
    }
    if let Some(labels) = cfg.get("id2label").and_then(|l| l.as_object()) {
        let is_classifier = cfg
            .get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.contains("ForSequence")))
            });
        anyhow::ensure!(
            !is_classifier || labels.len() == 1,
            "{}: a sequence classifier with {} labels; a cross-encoder gives one relevance \
             logit (`num_labels` 1)",
            cfg_path.display(),
            labels.len()
        );
    }
    Ok(())
}

impl CrossEncoder {
    /// Loads a cross-encoder folder, or starts one from an encoder folder (fresh head).
    pub fn load(dir: &Path, opts: &CrossOptions) -> Result<CrossEncoder> {
        check_folder(dir)?;
        let meta_path = dir.join(META_FILE);
        let meta: Option<CrossMeta> = if meta_path.exists() {
            Some(read_json(&meta_path)?)
        } else {
            None
        };
        let max_len = opts
            .max_len
            .or(meta.as_ref().map(|m| m.max_len))
            .unwrap_or(DEFAULT_MAX_LEN);
        let load = LoadOptions {
            max_len: Some(max_len),
            pooling: Some(Pooling::Cls),
            // The head is set up before any quantization, which must see the whole model.
            ..Default::default()
        };
        let mut model = SentenceModel::load_folder(dir, &load)?;
        let vocab = model.tokenizer.vocab_size();
        let rows = model.encoder.cfg.vocab_size;
        anyhow::ensure!(
            vocab <= rows,
            "{}: its tokenizer has {vocab} tokens but the model's embeddings hold {rows}: \
             tokenizer.json belongs to another model",
            dir.display()
        );
        model.normalize = false;
        model.projection = None;
        let h = model.encoder.cfg.hidden_size;
        let (dn, on) = head_names(model.arch());
        let present: Vec<String> = model.params.extras().into_iter().map(|(n, _)| n).collect();
        let has = |n: &str| present.iter().any(|p| p == &format!("{n}.weight"));
        let head_loaded = has(on);
        if has(on) {
            let shape = model
                .params
                .extras()
                .into_iter()
                .find(|(n, _)| n == &format!("{on}.weight"))
                .map(|(_, t)| t.dims().to_vec())
                .unwrap_or_default();
            anyhow::ensure!(
                shape == [1, h],
                "{}: `{on}.weight` has shape {shape:?}; a cross-encoder's head gives one logit \
                 ([1, {h}])",
                dir.display()
            );
        }
        let mut fresh = Params::random(opts.seed ^ 0xc705_5e2c, &model.device);
        let mut layer = |name: &str, out: usize| -> Result<Linear> {
            let p = if has(name) {
                &mut model.params
            } else {
                &mut fresh
            };
            let w = p.get(&format!("{name}.weight"), &[out, h])?;
            let b = p.get(&format!("{name}.bias"), &[out])?;
            Ok(Linear::float(name, w, Some(b)))
        };
        let dense = layer(dn, h)?;
        let out = layer(on, 1)?;
        model.params.vars.extend(fresh.vars);
        if opts.bf16 {
            anyhow::ensure!(!opts.int8, "give --int8 or --bf16, not both");
            model.to_bf16()?;
        }
        if opts.int8 && !model.is_int8() {
            crate::model::quantize::calibrate_and_quantize_bits(
                &mut model,
                None,
                crate::model::quantize::DEFAULT_ALPHA,
                crate::kernels::int8::WeightBits::default(),
            )?;
        }
        Ok(CrossEncoder {
            model,
            dense,
            out,
            head_loaded,
        })
    }

    /// Every trainable variable (transformer and head), named as saved.
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.model.params.vars
    }

    pub fn max_len(&self) -> usize {
        self.model.tokenizer.max_len
    }

    /// Tokenizes (topic, content) pairs: ids and token types.
    pub fn tokenize(&self, pairs: &[(&str, &str)]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        let types = self.model.encoder.cfg.type_vocab_size.max(1) as u32;
        let mut enc = self.model.tokenizer.encode_pairs(pairs)?;
        for (_, t) in &mut enc {
            // XLM-R has one token type; its template already gives 0, this keeps it so.
            t.iter_mut().for_each(|v| *v = (*v).min(types - 1));
        }
        Ok(enc)
    }

    /// Logits (`B`) of tokenized pairs; dropout only when `train`.
    pub fn forward(&self, seqs: &[(Vec<u32>, Vec<u32>)], train: bool) -> Result<Tensor> {
        let ids: Vec<Vec<u32>> = seqs.iter().map(|s| s.0.clone()).collect();
        let types: Vec<Vec<u32>> = seqs.iter().map(|s| s.1.clone()).collect();
        let m = &self.model;
        let batch =
            make_batch(m.arch(), &ids, m.pad_id, None, &m.device)?.with_token_types(&types)?;
        let hidden = m.encoder.forward(&batch, train)?;
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.dense.forward(&first)?.tanh()?;
        let pooled = if train {
            let p = m.encoder.cfg.hidden_dropout_prob;
            m.encoder.dropout().apply(&pooled, p)?
        } else {
            pooled
        };
        Ok(self.out.forward(&pooled)?.squeeze(1)?)
    }

    /// Logits of (topic text, content text) pairs in order, batched by length.
    pub fn logits(&self, pairs: &[(&str, &str)], batch_size: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; pairs.len()];
        let batch_size = batch_size.max(1);
        let chunk = batch_size * 64;
        for start in (0..pairs.len()).step_by(chunk) {
            let end = (start + chunk).min(pairs.len());
            let enc = self.tokenize(&pairs[start..end])?;
            let order = length_order(&enc.iter().map(|e| e.0.len()).collect::<Vec<_>>());
            for group in order.chunks(batch_size) {
                let seqs: Vec<(Vec<u32>, Vec<u32>)> =
                    group.iter().map(|&i| enc[i].clone()).collect();
                let l = self.forward(&seqs, false)?.to_vec1::<f32>()?;
                for (&i, v) in group.iter().zip(l) {
                    out[start + i] = v;
                }
            }
        }
        Ok(out)
    }

    /// Saves a sequence-classification folder at `out` (replaced atomically); `extra` adds
    /// files to the new folder before it replaces `out`.
    pub fn save_with(
        &self,
        out: &Path,
        trained_from: &str,
        extra: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        anyhow::ensure!(
            !self.model.is_int8() && !self.model.is_bf16(),
            "an int8 or bf16 cross-encoder is for inference: save the float one"
        );
        crate::io::write_dir_atomic(out, |dir| {
            let prefix = &self.model.params.prefix;
            let prefix = if prefix.is_empty() {
                match self.model.arch() {
                    Arch::Bert => "bert.",
                    Arch::XlmRoberta => "roberta.",
                }
            } else {
                prefix.as_str()
            };
            let mut tensors: Vec<(String, Tensor)> = Vec::new();
            for (n, v) in &self.model.params.vars {
                tensors.push((saved_name(prefix, n), v.as_tensor().clone()));
            }
            for (n, t) in self.model.params.extras() {
                tensors.push((saved_name(prefix, &n), t));
            }
            crate::model::save::write_safetensors(&dir.join("model.safetensors"), &tensors)?;
            let mut cfg = self.model.config_json.clone();
            cfg["num_hidden_layers"] = serde_json::json!(self.model.encoder.cfg.num_hidden_layers);
            cfg["architectures"] = serde_json::json!([match self.model.arch() {
                Arch::Bert => "BertForSequenceClassification",
                Arch::XlmRoberta => "XLMRobertaForSequenceClassification",
            }]);
            cfg["id2label"] = serde_json::json!({"0": "LABEL_0"});
            cfg["label2id"] = serde_json::json!({"LABEL_0": 0});
            crate::model::save::write_json(&dir.join("config.json"), &cfg)?;
            match &self.model.source_dir {
                Some(src) => {
                    for f in crate::model::save::COPIED {
                        if src.join(f).exists() && *f != "config_sentence_transformers.json" {
                            std::fs::copy(src.join(f), dir.join(f))
                                .with_context(|| format!("copying {f}"))?;
                        }
                    }
                }
                None => self
                    .model
                    .tokenizer
                    .inner()
                    .save(dir.join("tokenizer.json"), false)
                    .map_err(|e| anyhow::anyhow!("saving tokenizer.json: {e}"))?,
            }
            crate::model::save::write_json(
                &dir.join(META_FILE),
                &CrossMeta {
                    format: 1,
                    max_len: self.max_len(),
                    trained_from: trained_from.to_string(),
                },
            )?;
            extra(dir)
        })
    }

    /// Replaces every variable's value with the one saved in `dir` (the best checkpoint).
    pub fn load_weights_from(&self, dir: &Path) -> Result<()> {
        self.model.load_weights_from(dir)
    }
}

/// The name a canonical variable is saved under: the model prefix for the transformer (its
/// pooler included), none for the classifier, as transformers names them.
fn saved_name(prefix: &str, canonical: &str) -> String {
    if canonical.starts_with("classifier.") {
        canonical.to_string()
    } else {
        format!("{prefix}{canonical}")
    }
}

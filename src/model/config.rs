//! The model folder's configuration files: `config.json` (architecture),
//! `sentence_bert_config.json` (max length), `1_Pooling/config.json` (pooling) and
//! `modules.json` (which sentence-transformers modules follow the transformer).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which of the two supported architectures a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    Bert,
    XlmRoberta,
}

/// The fields of `config.json` the encoder needs. Unknown fields are kept when saving.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl EncoderConfig {
    pub fn arch(&self) -> Result<Arch> {
        match self.model_type.as_str() {
            "bert" => Ok(Arch::Bert),
            "xlm-roberta" | "roberta" | "camembert" => Ok(Arch::XlmRoberta),
            other => anyhow::bail!(
                "model_type `{other}` is not supported (supported: bert, xlm-roberta)"
            ),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.arch()?;
        anyhow::ensure!(
            self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size {} is not a multiple of num_attention_heads {}",
            self.hidden_size,
            self.num_attention_heads
        );
        anyhow::ensure!(
            matches!(self.hidden_act.as_str(), "gelu" | "gelu_python"),
            "hidden_act `{}` is not supported (supported: gelu)",
            self.hidden_act
        );
        if let Some(p) = &self.position_embedding_type {
            anyhow::ensure!(
                p == "absolute",
                "position_embedding_type `{p}` is not supported"
            );
        }
        Ok(())
    }

    /// A small random BERT or XLM-R config for tests.
    pub fn tiny(arch: Arch, vocab_size: usize) -> Self {
        EncoderConfig {
            model_type: match arch {
                Arch::Bert => "bert".into(),
                Arch::XlmRoberta => "xlm-roberta".into(),
            },
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 128,
            type_vocab_size: if arch == Arch::Bert { 2 } else { 1 },
            layer_norm_eps: 1e-12,
            pad_token_id: if arch == Arch::Bert { 0 } else { 1 },
            position_embedding_type: Some("absolute".into()),
        }
    }
}

/// Pooling of token states into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Cls,
    Mean,
}

impl std::str::FromStr for Pooling {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            _ => anyhow::bail!("pooling must be `cls` or `mean`, not `{s}`"),
        }
    }
}

/// sentence-transformers' `1_Pooling/config.json`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct PoolingConfig {
    #[serde(default)]
    pub word_embedding_dimension: usize,
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
}

impl PoolingConfig {
    pub fn pooling(&self) -> Result<Pooling> {
        match (self.pooling_mode_cls_token, self.pooling_mode_mean_tokens) {
            (true, false) => Ok(Pooling::Cls),
            (false, true) => Ok(Pooling::Mean),
            _ => anyhow::bail!(
                "1_Pooling/config.json: exactly one of cls or mean pooling is supported"
            ),
        }
    }
    pub fn new(pooling: Pooling, dim: usize) -> Self {
        PoolingConfig {
            word_embedding_dimension: dim,
            pooling_mode_cls_token: pooling == Pooling::Cls,
            pooling_mode_mean_tokens: pooling == Pooling::Mean,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SentenceBertConfig {
    pub max_seq_length: Option<usize>,
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

//! The service's one view of a model: texts in, normalised vectors out, with an id that says
//! which weights made them. Several models form an ensemble by concatenating their normalised
//! vectors scaled by 1/√n: the dot product of two such vectors is the mean of the models'
//! cosine similarities, which is exactly how `eval`/`predict` ensemble (method §8), so one index
//! serves an ensemble.

pub use crate::model::prompts::Role;
use crate::model::{LoadOptions, SentenceModel};
use anyhow::{Context, Result};
use std::io::Read;
use std::path::Path;

pub trait Embedder: Send + Sync {
    /// Identifies the weights and settings that made the vectors (stored with them).
    fn id(&self) -> &str;
    fn dim(&self) -> usize;
    /// How many models the vectors average (their mean similarity is the vectors' product).
    fn members(&self) -> usize {
        1
    }
    /// Row-major `texts.len() × dim`, each row of unit length; topic or content texts get
    /// the model's prompt for their side.
    fn embed(&self, role: Role, texts: &[String]) -> Result<Vec<f32>>;
}

/// Scores (topic text, content text) pairs: the reranker's cross-encoder.
pub trait PairScorer: Send + Sync {
    /// Names the folder and precision (the startup line, errors).
    fn id(&self) -> &str;
    /// One logit per pair, in order; the same values for a pair whatever else is in the call.
    fn logits(&self, pairs: &[(String, String)]) -> Result<Vec<f32>>;
}

/// A cross-encoder, batched as the batch pipeline batches it.
pub struct CrossScorer {
    pub model: crate::cross::model::CrossEncoder,
    pub id: String,
    pub batch_size: usize,
}

impl PairScorer for CrossScorer {
    fn id(&self) -> &str {
        &self.id
    }
    fn logits(&self, pairs: &[(String, String)]) -> Result<Vec<f32>> {
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        self.model.logits(&refs, self.batch_size)
    }
}

/// One or more sentence models (an ensemble when several).
pub struct ModelEmbedder {
    models: Vec<SentenceModel>,
    id: String,
    batch_size: usize,
}

impl ModelEmbedder {
    pub fn load(
        specs: &[String],
        int8: bool,
        bf16: bool,
        max_len: usize,
        batch_size: usize,
        prompts: (Option<String>, Option<String>),
    ) -> Result<Self> {
        anyhow::ensure!(!specs.is_empty(), "give at least one --model");
        let mut models = Vec::new();
        let mut ids = Vec::new();
        for spec in specs {
            let m = SentenceModel::load(
                spec,
                &LoadOptions {
                    max_len: Some(max_len),
                    int8,
                    bf16,
                    topic_prompt: prompts.0.clone(),
                    content_prompt: prompts.1.clone(),
                    ..Default::default()
                },
            )?;
            let dir = m
                .source_dir
                .clone()
                .with_context(|| format!("{spec}: the model has no folder"))?;
            // Content vectors depend on the passage prompt: a store made with another one is
            // another model's (the id of a model without prompts is as before).
            let prompt = m
                .prompts
                .get(Role::Content)
                .map(|p| format!("+prompt={p:?}"))
                .unwrap_or_default();
            ids.push(format!(
                "{}@{}{}{prompt}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                fingerprint(&dir)?,
                match (m.is_int8(), m.is_bf16()) {
                    (true, _) => "+int8",
                    (_, true) => "+bf16",
                    _ => "",
                }
            ));
            models.push(m);
        }
        Ok(ModelEmbedder {
            id: format!("{} max_len={max_len}", ids.join("+")),
            models,
            batch_size,
        })
    }
}

impl Embedder for ModelEmbedder {
    fn id(&self) -> &str {
        &self.id
    }
    fn dim(&self) -> usize {
        self.models.iter().map(SentenceModel::dim).sum()
    }
    fn members(&self) -> usize {
        self.models.len()
    }
    fn embed(&self, role: Role, texts: &[String]) -> Result<Vec<f32>> {
        let parts: Vec<crate::model::Embeddings> = self
            .models
            .iter()
            .map(|m| m.embed_quiet_as(role, texts, self.batch_size))
            .collect::<Result<_>>()?;
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part").data);
        }
        let scale = 1.0 / (parts.len() as f32).sqrt();
        let dim = self.dim();
        let mut out = Vec::with_capacity(texts.len() * dim);
        for i in 0..texts.len() {
            for p in &parts {
                out.extend(p.row(i).iter().map(|v| v * scale));
            }
        }
        Ok(out)
    }
}

/// Size and FNV-1a hash of the folder's weights file: cheap, stable across builds and
/// platforms (std's hasher is neither), and enough to tell two weight files apart.
fn fingerprint(dir: &Path) -> Result<String> {
    let file = ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .with_context(|| format!("{}: no model.safetensors", dir.display()))?;
    let mut f = std::fs::File::open(&file).with_context(|| format!("{}", file.display()))?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        for &b in &buf[..n] {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!("{len:x}-{h:016x}"))
}

//! `lecr import`: the original solution's released checkpoints (`weights_fold_0.pth`) as
//! normal model folders.
//!
//! Those files are `torch.save(model.state_dict())` of its `Net`: the Hugging Face transformer
//! under the key prefix `transformer.`, a scalar `logit_scale`, and `proj.weight` (no bias)
//! when a projection was configured. Pooling is not in the file (it came from the training
//! config); distilled students have fewer layers than the base config says. The import strips
//! the prefix, takes the layer count from the keys, turns the projection (or BERT's pooler, for
//! `pooler` pooling) into a sentence-transformers `2_Dense` module, copies the tokenizer from
//! the base model, checks every tensor against the base architecture by loading the result,
//! and writes the folder in one rename.

use super::config::Pooling;
use super::params::canonical;
use super::save::{write_json, write_safetensors};
use super::{LoadOptions, SentenceModel};
use anyhow::{Context, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How the checkpoint's token states became one vector (the original's `pooling` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckpointPooling {
    /// The first token's last hidden state.
    Cls,
    /// Mean of the last hidden states over real tokens.
    Mean,
    /// BERT's pooler: tanh(dense(first token)).
    Pooler,
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub checkpoint: PathBuf,
    /// Base model folder or hub name (config and tokenizer).
    pub base: String,
    pub pooling: CheckpointPooling,
    pub out: PathBuf,
    /// Add sentence-transformers' Normalize (unit vectors, as lecr compares them). The
    /// original's `Net` returns unnormalised vectors and normalises in its loss and search.
    pub normalize: bool,
}

/// What was imported.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub layers: usize,
    pub base_layers: usize,
    pub dim: usize,
    pub projection: Option<(usize, usize)>,
    pub logit_scale: Option<f32>,
    pub tensors: usize,
}

/// Keys a BERT state dict may hold that the encoder does not use.
const IGNORED: &[&str] = &["embeddings.position_ids", "embeddings.token_type_ids"];

/// Reads a PyTorch checkpoint and writes a model folder.
pub fn import_checkpoint(o: &ImportOptions) -> Result<ImportReport> {
    let path = &o.checkpoint;
    anyhow::ensure!(path.is_file(), "{}: no such file", path.display());
    let tensors = candle_core::pickle::read_all(path).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a PyTorch checkpoint (expected the zip file torch.save writes, holding a \
             state_dict of tensors): {e}",
            path.display()
        )
    })?;
    anyhow::ensure!(
        !tensors.is_empty(),
        "{}: the checkpoint holds no tensors",
        path.display()
    );
    let base = super::hub::resolve_model(&o.base)?;
    import_tensors(tensors, &base, o)
        .with_context(|| format!("importing {} onto {}", path.display(), base.display()))
}

/// The import proper, from the checkpoint's named tensors.
pub fn import_tensors(
    tensors: Vec<(String, Tensor)>,
    base: &Path,
    o: &ImportOptions,
) -> Result<ImportReport> {
    // Strip DataParallel's `module.` and the Net's `transformer.` (and `bert.` etc.).
    let mut encoder: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut proj = None;
    let mut logit_scale = None;
    for (name, t) in tensors {
        let n = name.strip_prefix("module.").unwrap_or(&name);
        match n {
            "proj.weight" => proj = Some(t),
            "logit_scale" => logit_scale = t.flatten_all()?.to_vec1::<f32>()?.first().copied(),
            _ => {
                let n = n.strip_prefix("transformer.").unwrap_or(n);
                let (c, _) = canonical(n);
                if !IGNORED.contains(&c.as_str()) {
                    encoder.insert(c, t);
                }
            }
        }
    }
    let layers = encoder
        .keys()
        .filter_map(|k| {
            k.strip_prefix("encoder.layer.")?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .map(|i: usize| i + 1)
        .max()
        .context(
            "no transformer layers (`encoder.layer.N.*`) in the checkpoint: is it a state_dict \
             of the original's Net or of a Hugging Face BERT / XLM-R model?",
        )?;

    let mut config: serde_json::Value = super::config::read_json(&base.join("config.json"))?;
    let base_layers = config["num_hidden_layers"].as_u64().unwrap_or(0) as usize;
    anyhow::ensure!(
        layers <= base_layers,
        "the checkpoint has {layers} layers, the base model only {base_layers}: wrong --base?"
    );
    config["num_hidden_layers"] = serde_json::json!(layers);

    let stage = tempfile::tempdir()?;
    let dir = stage.path();
    write_json(&dir.join("config.json"), &config)?;
    let mut copied = false;
    for f in super::save::COPIED {
        if base.join(f).exists() {
            std::fs::copy(base.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
            copied |= *f == "tokenizer.json";
        }
    }
    anyhow::ensure!(
        copied,
        "{}: the base model has no tokenizer.json",
        base.display()
    );
    if base.join("sentence_bert_config.json").exists() {
        std::fs::copy(
            base.join("sentence_bert_config.json"),
            dir.join("sentence_bert_config.json"),
        )?;
    }

    // The dense module after pooling: the projection, or the pooler for `pooler` pooling.
    let dense = match (o.pooling, &proj) {
        (CheckpointPooling::Pooler, Some(_)) => anyhow::bail!(
            "pooler pooling followed by a projection (proj.weight) is not supported: lecr \
             models have one dense module after pooling"
        ),
        (CheckpointPooling::Pooler, None) => {
            let w = encoder
                .get("pooler.dense.weight")
                .context("--pooling pooler, but the checkpoint has no pooler.dense.weight")?;
            let b = encoder
                .get("pooler.dense.bias")
                .context("--pooling pooler, but the checkpoint has no pooler.dense.bias")?;
            Some((w.clone(), Some(b.clone()), true))
        }
        (_, Some(w)) => Some((w.clone(), None, false)),
        (_, None) => None,
    };
    if let Some((w, b, tanh)) = &dense {
        let d = dir.join("2_Dense");
        std::fs::create_dir_all(&d)?;
        let (out_f, in_f) = w.dims2().context("proj.weight must be a matrix")?;
        super::save::write_dense_config(&d, in_f, out_f, b.is_some(), *tanh)?;
        let mut t = vec![("linear.weight".to_string(), w.clone())];
        if let Some(b) = b {
            t.push(("linear.bias".to_string(), b.clone()));
        }
        write_safetensors(&d.join("model.safetensors"), &t)?;
    }
    let named: Vec<(String, Tensor)> = encoder
        .iter()
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &named)?;
    // Read by `load_folder` for the Normalize flag; `save` writes the final one.
    let modules = if o.normalize {
        r#"[{"type": "sentence_transformers.models.Normalize"}]"#
    } else {
        r#"[{"type": "sentence_transformers.models.Transformer"}]"#
    };
    std::fs::write(dir.join("modules.json"), modules)?;

    // Loading checks every tensor the architecture needs, by name and shape.
    let pooling = match o.pooling {
        CheckpointPooling::Mean => Pooling::Mean,
        CheckpointPooling::Cls | CheckpointPooling::Pooler => Pooling::Cls,
    };
    let mut model = SentenceModel::load_folder(
        dir,
        &LoadOptions {
            pooling: Some(pooling),
            ..Default::default()
        },
    )
    .context("the checkpoint does not match the base model's architecture")?;
    // ... and nothing may be left over (a different architecture, or a wrong --base).
    let used: std::collections::HashSet<&str> =
        model.params.vars.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(extra) = encoder
        .iter()
        .find(|(n, _)| !used.contains(n.as_str()) && !n.starts_with("pooler."))
    {
        anyhow::bail!(
            "the checkpoint has a tensor the base architecture does not use: `{}` {:?} \
             (wrong --base?)",
            extra.0,
            extra.1.dims()
        );
    }
    model.source_dir = Some(dir.to_path_buf());
    model.save(&o.out)?;
    Ok(ImportReport {
        layers,
        base_layers,
        dim: model.dim(),
        projection: dense
            .as_ref()
            .filter(|d| !d.2)
            .and_then(|d| d.0.dims2().ok()),
        logit_scale,
        tensors: encoder.len() + usize::from(proj.is_some()),
    })
}

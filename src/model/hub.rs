//! Resolving `--model`: a local folder, or a Hugging Face name fetched and cached with hf-hub.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Files a model folder may have; the first three are required.
const FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
];

/// A folder path as is, or a hub name (`org/name`) downloaded into the hf-hub cache.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.is_dir() {
        anyhow::ensure!(
            p.join("config.json").exists(),
            "{}: not a model folder (no config.json)",
            p.display()
        );
        return Ok(p.to_path_buf());
    }
    if p.exists() {
        anyhow::bail!(
            "{spec}: a model must be a folder (config.json, tokenizer.json, model.safetensors)"
        );
    }
    if !spec.contains('/') || spec.starts_with('.') || spec.starts_with('/') {
        anyhow::bail!("model folder `{spec}` does not exist");
    }
    fetch(spec).with_context(|| {
        format!(
            "model `{spec}` is not a local folder and could not be fetched from the Hugging Face \
             hub (offline?). Pass a folder with config.json, tokenizer.json and \
             model.safetensors instead, e.g. the one `scripts/fetch-minilm.sh` prints, or \
             download the model on a connected machine and copy its folder here"
        )
    })
}

fn fetch(name: &str) -> Result<PathBuf> {
    let offline = std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v != "0");
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(name.to_string());
    if let Some(cfg) = cached.get("config.json") {
        if cached.get("tokenizer.json").is_some()
            && (cached.get("model.safetensors").is_some()
                || cached.get("pytorch_model.bin").is_some())
        {
            return Ok(cfg.parent().expect("file in a folder").to_path_buf());
        }
    }
    anyhow::ensure!(
        !offline,
        "HF_HUB_OFFLINE is set and `{name}` is not in the cache"
    );
    let api = hf_hub::api::sync::ApiBuilder::from_env().build()?;
    let repo = api.model(name.to_string());
    let mut dir = None;
    for (i, f) in FILES.iter().enumerate() {
        match repo.get(f) {
            Ok(path) => {
                if *f == "config.json" {
                    dir = path.parent().map(Path::to_path_buf);
                }
            }
            Err(e) if i < 2 => return Err(e.into()),
            Err(e) if *f == "model.safetensors" => {
                repo.get("pytorch_model.bin")
                    .with_context(|| format!("no model.safetensors ({e}) nor pytorch_model.bin"))?;
            }
            Err(_) => {}
        }
    }
    dir.context("config.json has no folder")
}

//! `lecr.json` in a model folder that `lecr train` saved: the settings its validation F2 was
//! measured with (token limit, margin, fold) and that F2. `lecr eval` and `lecr predict` take
//! their defaults from it, so the F2 training printed for a checkpoint is the F2 `lecr eval`
//! prints for it on the same fold with default flags.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE: &str = "lecr.json";

/// How a saved model was validated during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedWith {
    /// Token limit of training and validation.
    pub max_len: usize,
    /// Selection margin of the validation F2.
    pub margin: f64,
    /// Validation fold (`None`: trained on all topics).
    pub fold: Option<i32>,
    /// Topics the validation F2 was measured on.
    pub validation_topics: usize,
    /// The epoch these weights are from, and their validation F2 (`None` without a fold).
    pub epoch: usize,
    pub val_f2: Option<f64>,
}

/// Writes `dir/lecr.json`.
pub fn write(dir: &Path, t: &TrainedWith) -> Result<()> {
    super::save::write_json(&dir.join(FILE), t)
}

/// The settings of a model argument that is a folder `lecr train` saved (`None` for a hub name,
/// another folder, or an unreadable note).
pub fn read(model: &str) -> Option<TrainedWith> {
    let p = Path::new(model).join(FILE);
    if !p.exists() {
        return None;
    }
    let read = || -> Result<TrainedWith> {
        let s = std::fs::read_to_string(&p)?;
        serde_json::from_str(&s).with_context(|| format!("parsing {}", p.display()))
    };
    match read() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("{}: {e:#}; using the default settings", p.display());
            None
        }
    }
}

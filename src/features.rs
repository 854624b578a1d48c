//! Saved embeddings ("features"): `NAME.safetensors` holds one f32 tensor `embeddings`
//! (rows × dim) and `NAME.csv` the row's `id` and `language`, in the same order. Python reads
//! them with `safetensors.numpy.load_file(...)["embeddings"]` and `csv`.

use crate::model::Embeddings;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub const TENSOR: &str = "embeddings";

/// One set of rows with their ids and languages.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub ids: Vec<String>,
    pub languages: Vec<String>,
    pub emb: Embeddings,
}

/// Writes `dir/NAME.safetensors` (and `dir/NAME.csv` when ids are given). Returns the paths.
pub fn write(
    dir: &Path,
    name: &str,
    emb: &Embeddings,
    rows: Option<(&[String], &[String])>,
) -> Result<Vec<PathBuf>> {
    let st = dir.join(format!("{name}.safetensors"));
    let bytes: Vec<u8> = emb.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![emb.rows(), emb.dim],
        &bytes,
    )?;
    let out = safetensors::serialize([(TENSOR, view)], None)?;
    crate::io::write_atomic(&st, |w| {
        w.write_all(&out)?;
        Ok(())
    })?;
    let mut written = vec![st];
    if let Some((ids, langs)) = rows {
        anyhow::ensure!(
            ids.len() == emb.rows() && langs.len() == emb.rows(),
            "ids and rows differ"
        );
        let csv_path = dir.join(format!("{name}.csv"));
        crate::io::write_atomic(&csv_path, |w| {
            let mut w = crate::io::csv_writer(w);
            w.write_record(["row", "id", "language"])?;
            for (i, (id, l)) in ids.iter().zip(langs).enumerate() {
                w.write_record([i.to_string().as_str(), id, l])?;
            }
            w.flush()?;
            Ok(())
        })?;
        written.push(csv_path);
    }
    Ok(written)
}

/// Reads `dir/NAME.safetensors` and `dir/NAME.csv`.
pub fn read(dir: &Path, name: &str) -> Result<Features> {
    let st = dir.join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&st).with_context(|| format!("reading {}", st.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", st.display()))?;
    let t = file
        .tensor(TENSOR)
        .with_context(|| format!("{}: no `{TENSOR}` tensor", st.display()))?;
    anyhow::ensure!(
        t.dtype() == safetensors::Dtype::F32 && t.shape().len() == 2,
        "{}: `{TENSOR}` must be 2-D f32",
        st.display()
    );
    let dim = t.shape()[1];
    let data: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let csv_path = dir.join(format!("{name}.csv"));
    let mut ids = Vec::new();
    let mut languages = Vec::new();
    #[derive(serde::Deserialize)]
    struct Row {
        id: String,
        language: String,
    }
    crate::data::load::read_rows::<Row>(&csv_path, &["id", "language"], |r, _| {
        ids.push(r.id);
        languages.push(r.language);
    })?;
    anyhow::ensure!(
        ids.len() * dim == data.len(),
        "{} has {} rows but {} has {}",
        csv_path.display(),
        ids.len(),
        st.display(),
        data.len() / dim.max(1)
    );
    Ok(Features {
        ids,
        languages,
        emb: Embeddings { dim, data },
    })
}

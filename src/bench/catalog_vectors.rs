//! The catalog bench's vectors (`--vectors`).
//!
//! - `random` (the default): independent normals, L2-normalised. No encoder time, so a run at
//!   ten times LECR's catalog takes minutes; right for what an index costs (bytes, start,
//!   latency), and for an exact index's answers. For an approximate one it is the worst case:
//!   uniform points on a 384-dimensional sphere have no structure for a graph to follow (every
//!   point is nearly as far as every other), so pgvector's HNSW finds few of their exact
//!   neighbours (README: "PostgreSQL does the search").
//! - `model`: the served model's own vectors of the generated texts (contents as passages,
//!   the recall queries as topics). The encoder runs over every content (about ten minutes
//!   for LECR's 154k on two cores), but the vectors have the structure real embeddings have,
//!   which is what HNSW's recall depends on. The texts are still invented words: the model
//!   has no head start on their meaning.

use crate::serve::embedder::{Embedder, ModelEmbedder, Role};
use anyhow::Result;
use rand::{Rng, SeedableRng};

/// Where the catalog's vectors come from.
pub enum Vectors {
    Random(Box<rand_chacha::ChaCha8Rng>, usize),
    Model(Box<ModelEmbedder>),
}

impl Vectors {
    /// `kind` is `random` or `model` (the served `models`, `lexical` left out, as the server
    /// loads them: `int8`, `max_len`).
    pub fn new(
        kind: &str,
        dim: usize,
        seed: u64,
        models: &[String],
        int8: bool,
        max_len: usize,
    ) -> Result<Vectors> {
        if kind != "model" {
            return Ok(Vectors::Random(
                Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed)),
                dim,
            ));
        }
        let specs: Vec<String> = models
            .iter()
            .filter(|m| m.as_str() != "lexical")
            .cloned()
            .collect();
        let e = ModelEmbedder::load(&specs, int8, false, max_len, 64, (None, None))?;
        anyhow::ensure!(
            e.dim() == dim,
            "--vectors model: the models give {} values, the server {dim}",
            e.dim()
        );
        Ok(Vectors::Model(Box::new(e)))
    }

    /// What the output says the vectors are.
    pub fn describe(&self) -> &'static str {
        match self {
            Vectors::Random(..) => {
                "content vectors are random (independent normals, L2-normalised), not the \
                 model's: the figures are the index's cost, not embedding time or accuracy; an \
                 approximate index's recall on them is its worst case"
            }
            Vectors::Model(_) => {
                "content vectors are the served model's own, of the generated texts (invented \
                 words): the figures are the index's cost and an approximate index's recall on \
                 real embeddings' structure, not accuracy"
            }
        }
    }

    pub fn is_model(&self) -> bool {
        matches!(self, Vectors::Model(_))
    }

    /// One unit vector per text, as `role` (random vectors ignore the texts).
    pub fn embed(&mut self, role: Role, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        match self {
            Vectors::Random(rng, dim) => Ok(texts
                .iter()
                .map(|_| random_unit(&mut **rng, *dim))
                .collect()),
            Vectors::Model(e) => {
                let d = e.dim();
                let flat = e.embed(role, texts)?;
                Ok(flat.chunks_exact(d).map(<[f32]>::to_vec).collect())
            }
        }
    }
}

/// A vector of independent normal values, L2-normalised (uniform on the sphere).
pub fn random_unit(rng: &mut impl Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            // Box–Muller.
            let (u, w): (f64, f64) = (rng.gen::<f64>().max(1e-300), rng.gen());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos()) as f32
        })
        .collect();
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

//! Where similarities come from: saved or computed embeddings (cosine of normalised vectors),
//! the lexical TF-IDF baseline, or an ensemble that averages several (method §8). Scoring works
//! per language and in blocks of topics, so no full topics × contents matrix is ever built.

use crate::kernels::scores::PackedRows;
use crate::model::Embeddings;
use anyhow::Result;

/// A source of topic–content similarities.
pub trait Similarity: Sync {
    fn name(&self) -> String;
    /// Prepares scoring against `contents` (dataset content indices, one language).
    fn against<'a>(&'a self, contents: &[usize]) -> Result<Box<dyn BlockScorer + 'a>>;
}

/// Scores blocks of topics against the contents it was prepared for.
pub trait BlockScorer: Sync {
    /// Row-major `topics.len() × contents` similarities (dataset topic indices).
    fn block(&self, topics: &[usize]) -> Result<Vec<f32>>;
}

/// Embeddings of (some) dataset topics and contents; rows located through index maps.
pub struct EmbeddingSim {
    pub label: String,
    pub topics: Embeddings,
    /// Row of each dataset topic in `topics` (`u32::MAX`: not embedded).
    pub topic_row: Vec<u32>,
    pub contents: Embeddings,
    pub content_row: Vec<u32>,
}

/// The rows of `idx` (dataset indices), row-major.
fn gather(e: &Embeddings, rows: &[u32], idx: &[usize], what: &str) -> Result<Vec<f32>> {
    let mut data = Vec::with_capacity(idx.len() * e.dim);
    for &i in idx {
        let r = rows.get(i).copied().unwrap_or(u32::MAX);
        anyhow::ensure!(r != u32::MAX, "{what} {i} has no embedding");
        data.extend_from_slice(e.row(r as usize));
    }
    Ok(data)
}

struct EmbeddingBlock<'a> {
    sim: &'a EmbeddingSim,
    contents: PackedRows,
}

impl Similarity for EmbeddingSim {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn against<'a>(&'a self, contents: &[usize]) -> Result<Box<dyn BlockScorer + 'a>> {
        let c = gather(&self.contents, &self.content_row, contents, "content")?;
        Ok(Box::new(EmbeddingBlock {
            sim: self,
            contents: PackedRows::from_rows(&c, self.contents.dim),
        }))
    }
}

impl BlockScorer for EmbeddingBlock<'_> {
    fn block(&self, topics: &[usize]) -> Result<Vec<f32>> {
        let t = gather(&self.sim.topics, &self.sim.topic_row, topics, "topic")?;
        Ok(self.contents.scores(&t, topics.len()))
    }
}

/// The mean of several similarity sources.
pub struct Ensemble {
    pub members: Vec<Box<dyn Similarity>>,
}

struct EnsembleBlock<'a> {
    parts: Vec<Box<dyn BlockScorer + 'a>>,
}

impl Similarity for Ensemble {
    fn name(&self) -> String {
        let names: Vec<String> = self.members.iter().map(|m| m.name()).collect();
        format!("ensemble({})", names.join(", "))
    }
    fn against<'a>(&'a self, contents: &[usize]) -> Result<Box<dyn BlockScorer + 'a>> {
        let parts = self
            .members
            .iter()
            .map(|m| m.against(contents))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(EnsembleBlock { parts }))
    }
}

impl BlockScorer for EnsembleBlock<'_> {
    fn block(&self, topics: &[usize]) -> Result<Vec<f32>> {
        let mut acc = self.parts[0].block(topics)?;
        for p in &self.parts[1..] {
            for (a, b) in acc.iter_mut().zip(p.block(topics)?) {
                *a += b;
            }
        }
        let inv = 1.0 / self.parts.len() as f32;
        acc.iter_mut().for_each(|v| *v *= inv);
        Ok(acc)
    }
}

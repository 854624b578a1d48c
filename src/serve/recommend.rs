//! Ranking and selection shared by Studio's recommend endpoint and the curator page: the
//! batcher ranks topic texts against the index; with a reranker, its top K are reordered by
//! the reranker's probability (parents embedded off the async threads); then the dynamic
//! threshold (or the reranker's selection) says how many are recommended.

use super::batcher::Batcher;
use super::engine::Engine;
use super::index::Hit;
use super::rerank::TopicQuery;
use crate::select::threshold::{selected_len, MAX_SELECTED};
use std::sync::Arc;

/// A topic to rank: its encoder text and language; for the reranker also what it knows of the
/// topic and its parent's text.
pub struct RankItem {
    pub text: String,
    pub language: String,
    pub query: Option<OwnedQuery>,
    pub parent_text: Option<String>,
}

/// An owned [`TopicQuery`].
pub struct OwnedQuery {
    pub id: String,
    pub title: String,
    pub description: String,
    pub channel: Option<String>,
    pub parent: Option<String>,
    pub level: u32,
}

/// How many to rank and how to select.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How many `override_threshold` returns (and the least the page may show).
    pub top_k: usize,
    /// The dynamic threshold's margin (method §8) without a reranker.
    pub margin: f32,
    /// With a reranker: replaces its saved relative margin.
    pub rerank_margin: Option<f32>,
    pub override_threshold: bool,
}

/// One topic's result: the retriever's hits, the final order (positions in `hits`, with the
/// reranker's probability when there is one), and how many of that order are selected.
pub struct Ranked {
    pub hits: Vec<Hit>,
    pub order: Vec<(usize, Option<f32>)>,
    pub selected: usize,
}

/// Ranks, reranks and selects for every item, in order.
pub async fn rank_select(
    engine: &Arc<Engine>,
    batcher: &Batcher,
    items: Vec<RankItem>,
    s: Settings,
) -> anyhow::Result<Vec<Ranked>> {
    let depth = engine.reranker.as_ref().map_or(0, |r| r.depth());
    let texts = items.iter().map(|i| i.text.clone()).collect();
    let langs = items.iter().map(|i| i.language.clone()).collect();
    let ranked = batcher
        .rank(texts, langs, s.top_k.max(MAX_SELECTED).max(depth))
        .await?;
    if engine.reranker.is_none() {
        return Ok(ranked
            .into_iter()
            .map(|hits| {
                let selected = if s.override_threshold {
                    s.top_k.min(hits.len())
                } else {
                    let sims: Vec<f32> = hits.iter().map(|h| h.similarity).collect();
                    selected_len(&sims, s.margin, MAX_SELECTED)
                };
                Ranked {
                    order: (0..hits.len()).map(|i| (i, None)).collect(),
                    hits,
                    selected,
                }
            })
            .collect());
    }
    // CPU work (parent embeddings, features, trees): off the async threads.
    let eng = engine.clone();
    tokio::task::spawn_blocking(move || rerank_all(&eng, &items, ranked, s)).await?
}

fn rerank_all(
    engine: &Engine,
    items: &[RankItem],
    ranked: Vec<Vec<Hit>>,
    s: Settings,
) -> anyhow::Result<Vec<Ranked>> {
    let rr = engine.reranker.as_ref().expect("called with a reranker");
    let parents: Vec<String> = items.iter().filter_map(|i| i.parent_text.clone()).collect();
    let vectors = if parents.is_empty() {
        Vec::new()
    } else {
        engine.embed(&parents)?
    };
    let d = engine.embedder.dim();
    let index = engine.index.read().expect("index lock");
    let catalog = engine.catalog.read().expect("catalog lock");
    let mut next = 0;
    let mut sel = rr.rr.meta.selection;
    if let Some(m) = s.rerank_margin {
        sel.margin = m;
    }
    Ok(items
        .iter()
        .zip(ranked)
        .map(|(item, hits)| {
            let pv = item.parent_text.as_ref().map(|_| {
                next += 1;
                &vectors[(next - 1) * d..next * d]
            });
            let q = item.query.as_ref();
            let id = q.map_or("", |q| q.id.as_str());
            let query = TopicQuery {
                id,
                title: q.map_or(item.text.as_str(), |q| q.title.as_str()),
                description: q.map_or("", |q| q.description.as_str()),
                channel: q.and_then(|q| q.channel.as_deref()),
                parent: q.and_then(|q| q.parent.as_deref()),
                level: q.map_or(0, |q| q.level),
                siblings: q
                    .and_then(|q| q.parent.as_deref())
                    .map_or(&[], |p| catalog.children(p)),
                children: catalog.children(id).len(),
            };
            let scored = rr.rerank(&index, &query, &hits, pv);
            let selected = if s.override_threshold {
                s.top_k.min(scored.len())
            } else {
                let probs: Vec<f32> = scored.iter().map(|x| x.1).collect();
                sel.count(&probs, MAX_SELECTED)
            };
            Ranked {
                order: scored.into_iter().map(|(i, p)| (i, Some(p))).collect(),
                hits,
                selected,
            }
        })
        .collect())
}

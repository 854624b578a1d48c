//! `lecr serve --reranker DIR`: the second stage inside the service. The served model is the
//! one retriever (a reranker trained with exactly one `--model`); candidates are its top K
//! from the index; tree context comes from the links of the `--data` folder, with the
//! requested topic's own links left out, as `predict` leaves them out.

use super::index::{Hit, Index};
use crate::data::Dataset;
use crate::rerank::candidates::{Candidate, TopicCandidates, KTH};
use crate::rerank::features::{self, ContentView, LinkCounts, TopicView};
use crate::rerank::model::{self, Reranker};
use anyhow::Result;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Links and tree facts of a data folder, by id.
#[derive(Default)]
pub struct KnownLinks {
    topic_links: HashMap<String, HashSet<String>>,
    content_topics: HashMap<String, u32>,
    channel_links: HashMap<(String, String), u32>,
    children: HashMap<String, Vec<String>>,
    /// Level, category, channel and child count of each data topic.
    topics: HashMap<String, (Option<u32>, String, String, usize)>,
}

impl KnownLinks {
    pub fn from_dataset(ds: &Dataset) -> KnownLinks {
        let mut k = KnownLinks::default();
        for t in &ds.topics {
            if let Some(p) = &t.parent {
                k.children.entry(p.clone()).or_default().push(t.id.clone());
            }
        }
        for t in &ds.topics {
            let n = k.children.get(&t.id).map_or(0, Vec::len);
            k.topics.insert(
                t.id.clone(),
                (t.level, t.category.clone(), t.channel.clone(), n),
            );
        }
        for (t, c) in ds.pairs() {
            let (tid, cid) = (&ds.topics[t].id, &ds.contents[c].id);
            if k.topic_links
                .entry(tid.clone())
                .or_default()
                .insert(cid.clone())
            {
                *k.content_topics.entry(cid.clone()).or_insert(0) += 1;
                *k.channel_links
                    .entry((ds.topics[t].channel.clone(), cid.clone()))
                    .or_insert(0) += 1;
            }
        }
        k
    }

    fn linked(&self, topic: &str, content: &str) -> bool {
        self.topic_links
            .get(topic)
            .is_some_and(|s| s.contains(content))
    }
}

/// A topic of a recommend request, as the features need it.
pub struct TopicQuery<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub channel: Option<&'a str>,
    /// The id of its parent (the deepest ancestor), if it has ancestors.
    pub parent: Option<&'a str>,
    /// Number of ancestors (its level), when the data folder does not know the topic.
    pub level: u32,
}

pub struct ServeReranker {
    pub rr: Reranker,
    pub dir: std::path::PathBuf,
    links: KnownLinks,
}

impl ServeReranker {
    /// Loads a reranker for serving `models` (the served model arguments).
    pub fn load(dir: &Path, models: &[String], data: Option<&Dataset>) -> Result<ServeReranker> {
        let rr = Reranker::load(dir)?;
        anyhow::ensure!(
            rr.meta.retrievers.len() == 1 && rr.meta.retrievers[0] != "lexical",
            "{}: the service reranks its one model's candidates, but this reranker was trained \
             with {} ({}); train one with `lecr rerank train --model <the served model>`",
            dir.display(),
            rr.meta.retrievers.len(),
            rr.meta.retrievers.join(", ")
        );
        anyhow::ensure!(
            rr.meta.features == features::names(1),
            "{}: its feature list is not the one this lecr computes; train it again",
            dir.display()
        );
        if models.len() != 1 || models[0] != rr.meta.retrievers[0] {
            tracing::warn!(
                "the reranker was trained on the candidates of {}; serving {}",
                rr.meta.retrievers[0],
                models.join(", ")
            );
        }
        if data.is_none() {
            tracing::warn!(
                "--reranker without --data: no known links, so its tree-context features are all \
                 zero (it was trained with them)"
            );
        }
        Ok(ServeReranker {
            links: data.map(KnownLinks::from_dataset).unwrap_or_default(),
            dir: dir.to_path_buf(),
            rr,
        })
    }

    /// How deep the retriever's list must be: ranks are recorded to 4·K.
    pub fn depth(&self) -> usize {
        self.rr.meta.k * 4
    }

    /// Reranks one topic's hits (best first, [`depth`](Self::depth) deep): its top K by the
    /// reranker's probability, best first, as (position in `hits`, probability).
    pub fn rerank(
        &self,
        index: &Index,
        q: &TopicQuery,
        hits: &[Hit],
        parent_vector: Option<&[f32]>,
    ) -> Vec<(usize, f32)> {
        let k = self.rr.meta.k.min(hits.len());
        if k == 0 {
            return Vec::new();
        }
        let tc = TopicCandidates {
            topic: 0,
            candidates: hits[..k]
                .iter()
                .enumerate()
                .map(|(i, h)| Candidate {
                    content: i as u32,
                    sims: vec![h.similarity],
                    ranks: vec![i as u32 + 1],
                    parent_sims: vec![parent_vector
                        .and_then(|v| index.similarity(&h.content, v))
                        .unwrap_or(f32::NAN)],
                    proposed_by: 1,
                })
                .collect(),
            best: vec![hits[0].similarity],
            kth: vec![hits[(KTH - 1).min(hits.len() - 1)].similarity],
        };
        let known = self.links.topics.get(q.id);
        let topic = TopicView {
            title: q.title,
            description: q.description,
            level: Some(known.and_then(|t| t.0).unwrap_or(q.level)),
            category: known.map(|t| t.1.as_str()),
            children: known.map_or(0, |t| t.3),
        };
        let channel = q.channel.or(known.map(|t| t.2.as_str()));
        let siblings: Vec<&String> = q
            .parent
            .and_then(|p| self.links.children.get(p))
            .map(|c| c.iter().filter(|s| s.as_str() != q.id).collect())
            .unwrap_or_default();
        let mut rows = Vec::new();
        for (cand, h) in tc.candidates.iter().zip(hits) {
            let cid = h.content.as_str();
            // The topic's own links never count (as in `predict`).
            let own = self.links.linked(q.id, cid) as u32;
            let in_channel = channel
                .and_then(|c| {
                    self.links
                        .channel_links
                        .get(&(c.to_string(), cid.to_string()))
                })
                .copied()
                .unwrap_or(0);
            let own_in_channel = if channel.is_some() && known.map(|t| t.2.as_str()) == channel {
                own
            } else {
                0
            };
            let links = LinkCounts {
                content_topics: self
                    .links
                    .content_topics
                    .get(cid)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(own),
                parent_linked: q.parent.map(|p| self.links.linked(p, cid)),
                sibling_links: siblings
                    .iter()
                    .filter(|s| self.links.linked(s, cid))
                    .count() as u32,
                channel_links: in_channel.saturating_sub(own_in_channel),
            };
            let view = index
                .get(cid)
                .map(|m| ContentView::new(&m.title, &m.description, &m.short_text, &m.kind))
                .unwrap_or_default();
            features::push_row(&mut rows, &tc, cand, &topic, &view, &links);
        }
        let x = features::from_rows(features::names(1), &rows);
        let p = model::predict(&self.rr.full, &x);
        let mut out: Vec<(usize, f32)> = p.into_iter().enumerate().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

//! `lecr serve --reranker DIR`: the second stage inside the service. Its retrievers are the
//! served model and, when it was trained with `--model lexical`, the lexical retriever;
//! candidates are built from the index as the batch pipeline builds them (the top K of each
//! retriever and of their mean); tree context comes from the links of the `--data` folder and
//! the links curators accepted on the page, with the requested topic's own links left out, as
//! `predict` leaves them out; siblings come from every topic the service knows.

use super::embedder::{CrossScorer, PairScorer};
use super::index::{Column, Index, ServedCandidates};
use crate::data::Dataset;
use crate::rerank::features::{self, ContentView, LinkCounts, TopicView};
use crate::rerank::model::{self, Reranker};
use anyhow::Result;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The links the reranker's tree context reads, by id: the `--data` folder's, plus the links
/// curators accepted on the page (live; a rejection or undo takes an accepted link back).
#[derive(Default)]
pub struct KnownLinks {
    of_topic: HashMap<String, HashSet<String>>,
    of_content: HashMap<String, HashSet<String>>,
    /// The data folder's own pairs (never taken back by a decision).
    from_data: HashSet<(String, String)>,
    channel_of: HashMap<String, String>,
    /// Level and category of each data topic.
    facts: HashMap<String, (Option<u32>, String)>,
}

impl KnownLinks {
    pub fn from_dataset(ds: &Dataset) -> KnownLinks {
        let mut k = KnownLinks::default();
        for t in &ds.topics {
            k.facts.insert(t.id.clone(), (t.level, t.category.clone()));
            k.channel_of.insert(t.id.clone(), t.channel.clone());
        }
        for (t, c) in ds.pairs() {
            let (tid, cid) = (&ds.topics[t].id, &ds.contents[c].id);
            k.from_data.insert((tid.clone(), cid.clone()));
            k.link(tid, cid);
        }
        k
    }

    fn link(&mut self, topic: &str, content: &str) {
        self.of_topic
            .entry(topic.to_string())
            .or_default()
            .insert(content.to_string());
        self.of_content
            .entry(content.to_string())
            .or_default()
            .insert(topic.to_string());
    }

    /// A curator accepted `content` for `topic` (of `channel`).
    pub fn accept(&mut self, topic: &str, channel: &str, content: &str) {
        self.channel_of
            .entry(topic.to_string())
            .or_insert_with(|| channel.to_string());
        self.link(topic, content);
    }

    /// A curator rejected or undid: an accepted link goes (a data link stays).
    pub fn clear(&mut self, topic: &str, content: &str) {
        if self
            .from_data
            .contains(&(topic.to_string(), content.to_string()))
        {
            return;
        }
        if let Some(s) = self.of_topic.get_mut(topic) {
            s.remove(content);
        }
        if let Some(s) = self.of_content.get_mut(content) {
            s.remove(topic);
        }
    }

    /// The counts of [`LinkCounts`] for `q` and `content`, leaving out `q`'s own links.
    pub fn counts(&self, q: &TopicQuery, channel: Option<&str>, content: &str) -> LinkCounts {
        LinkCounts::around(
            self,
            q.id,
            q.parent,
            q.siblings.iter().map(String::as_str),
            channel,
            content,
        )
    }
}

impl<'a> features::LinkView<'a> for KnownLinks {
    type Topic = &'a str;
    type Content = &'a str;
    type Channel = &'a str;
    fn linked(&self, topic: &str, content: &str) -> bool {
        self.of_topic
            .get(topic)
            .is_some_and(|s| s.contains(content))
    }
    fn content_topics(&self, content: &str, except: &str) -> u32 {
        self.of_content.get(content).map_or(0, |t| {
            t.iter().filter(|t| t.as_str() != except).count() as u32
        })
    }
    fn channel_links(&self, channel: &str, content: &str, except: &str) -> u32 {
        self.of_content.get(content).map_or(0, |t| {
            t.iter()
                .filter(|t| {
                    t.as_str() != except
                        && self.channel_of.get(t.as_str()).map(String::as_str) == Some(channel)
                })
                .count() as u32
        })
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
    /// The parent's other children the service knows (data folder and Studio topics).
    pub siblings: &'a [String],
    /// Its own children the service knows.
    pub children: usize,
}

/// The similarity column of a `--model` argument.
fn column_of(model: &str) -> Column {
    if model == "lexical" {
        Column::Lexical
    } else {
        Column::Vectors
    }
}

pub struct ServeReranker {
    pub rr: Reranker,
    pub dir: std::path::PathBuf,
    pub links: std::sync::RwLock<KnownLinks>,
    /// The similarity column of each of its retrievers, in its order.
    pub columns: Vec<Column>,
    /// Its cross-encoder, loaded in the saved precision, until the engine's model worker
    /// takes it ([`ServeReranker::take_scorer`]).
    scorer: Option<Box<dyn PairScorer>>,
    /// Its cross-encoder's logits kept by pair text (`--cross-cache`).
    pub cache: Option<super::cross_cache::CrossCache>,
}

impl ServeReranker {
    /// Loads a reranker for serving `models` (the served `--model` arguments, `lexical`
    /// included).
    pub fn load(
        dir: &Path,
        models: &[String],
        max_len: usize,
        data: Option<&Dataset>,
    ) -> Result<ServeReranker> {
        let rr = Reranker::load(dir)?;
        let trained = &rr.meta.retrievers;
        let columns: Vec<Column> = trained.iter().map(|r| column_of(r)).collect();
        let n_models = columns.iter().filter(|c| **c == Column::Vectors).count();
        anyhow::ensure!(
            n_models == 1 && columns.len() <= 2,
            "{}: the service reranks the candidates of one model (and of the lexical retriever), \
             but this reranker was trained with {} ({}); train one with `lecr rerank train \
             --model <the served model> [--model lexical]`",
            dir.display(),
            trained.len(),
            trained.join(", ")
        );
        let served: Vec<Column> = models.iter().map(|m| column_of(m)).collect();
        anyhow::ensure!(
            served == columns,
            "{}: it was trained with --model {}; serve it with the same retrievers in the same \
             order (given: --model {})",
            dir.display(),
            trained.join(" --model "),
            models.join(" --model ")
        );
        let n_cols = if columns.len() > 1 {
            columns.len() + 1
        } else {
            1
        };
        let mut expected = features::names(n_cols);
        if rr.meta.cross.is_some() {
            expected.push(crate::rerank::CROSS_FEATURE.to_string());
        }
        anyhow::ensure!(
            rr.meta.features == expected,
            "{}: its feature list is not the one this lecr computes; train it again",
            dir.display()
        );
        rr.retrievers_for(dir, models)?;
        for (t, m) in trained.iter().zip(models) {
            if t != m {
                tracing::warn!(
                    "the reranker was trained on the candidates of {t}; serving {m} in its place"
                );
            }
        }
        if let Some(w) = rr.max_len_warning(dir, max_len) {
            tracing::warn!("{w}");
        }
        if data.is_none() {
            tracing::warn!(
                "--reranker without --data: no known links, so its tree-context features are all \
                 zero (it was trained with them)"
            );
        }
        let scorer = match &rr.meta.cross {
            Some(c) => {
                let model = crate::rerank::load_cross(c).map_err(|e| {
                    e.context(format!("{}: loading its cross-encoder", dir.display()))
                })?;
                Some(Box::new(CrossScorer {
                    id: format!("{} ({}, {} tokens)", c.dir, c.precision, model.max_len()),
                    model,
                    batch_size: crate::rerank::CROSS_BATCH,
                }) as Box<dyn PairScorer>)
            }
            None => None,
        };
        Ok(ServeReranker {
            links: std::sync::RwLock::new(data.map(KnownLinks::from_dataset).unwrap_or_default()),
            dir: dir.to_path_buf(),
            rr,
            columns,
            scorer,
            cache: None,
        })
    }

    /// How many candidates per topic the cross-encoder reads (None: it has none).
    pub fn cross_top(&self) -> Option<usize> {
        self.rr.meta.cross.as_ref().map(|c| c.top)
    }

    /// The cross-encoder, for the model worker (once).
    pub fn take_scorer(&mut self) -> Option<Box<dyn PairScorer>> {
        self.scorer.take()
    }

    /// The links, to change (a curator's decision).
    pub fn links_mut(&self) -> anyhow::Result<std::sync::RwLockWriteGuard<'_, KnownLinks>> {
        self.links
            .write()
            .map_err(|_| anyhow::anyhow!("the reranker's links lock is poisoned"))
    }

    /// Reranks one topic's candidates: all of them by the reranker's probability, best first,
    /// as (position in `cands`, probability).
    pub fn rerank(
        &self,
        index: &Index,
        q: &TopicQuery,
        cands: &ServedCandidates,
        cross: Option<&[f32]>,
    ) -> Result<Vec<(usize, f32)>, String> {
        let tc = &cands.topic;
        if tc.candidates.is_empty() {
            return Ok(Vec::new());
        }
        let links = self
            .links
            .read()
            .map_err(|_| "the reranker's links lock is poisoned".to_string())?;
        let known = links.facts.get(q.id);
        let topic = TopicView::new(
            q.title,
            q.description,
            Some(known.and_then(|t| t.0).unwrap_or(q.level)),
            known.map(|t| t.1.as_str()),
            q.children,
        );
        let channel = q.channel.or(links.channel_of.get(q.id).map(String::as_str));
        if self.rr.meta.cross.is_some() && cross.is_none_or(|c| c.len() != tc.candidates.len()) {
            return Err("the cross-encoder's logits are missing for these candidates".into());
        }
        let mut rows = Vec::new();
        for (i, (cand, cid)) in tc.candidates.iter().zip(&cands.ids).enumerate() {
            let counts = links.counts(q, channel, cid);
            let meta = index
                .get(cid)
                .map_err(|e| format!("reading the index's metadata file: {e}"))?;
            let view = meta
                .as_ref()
                .map(|m| ContentView::new(&m.title, &m.description, &m.short_text, &m.kind))
                .unwrap_or_default();
            features::push_row(&mut rows, tc, cand, &topic, &view, &counts);
            if let Some(c) = cross {
                rows.push(c[i] as f64);
            }
        }
        let x = features::from_rows(self.rr.meta.features.clone(), &rows);
        let p = model::predict(&self.rr.full, &x);
        let mut out: Vec<(usize, f32)> = p.into_iter().enumerate().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::schema::{Content, Correlation, Topic};

    /// Root R with children T1 and T2 (channel A), U alone in channel B; links R→c2, T2→c1,
    /// U→c1 and T1→c3.
    fn tiny() -> Dataset {
        let mut ds = Dataset::default();
        for (id, parent, ch) in [
            ("R", None, "A"),
            ("T1", Some("R"), "A"),
            ("T2", Some("R"), "A"),
            ("U", None, "B"),
        ] {
            ds.topic_index.insert(id.into(), ds.topics.len());
            ds.topics.push(Topic {
                id: id.into(),
                title: id.into(),
                description: String::new(),
                channel: ch.into(),
                category: "aligned".into(),
                level: Some(parent.is_some() as u32),
                language: "en".into(),
                parent: parent.map(Into::into),
                has_content: true,
                fold: None,
                line: 0,
            });
        }
        for id in ["c1", "c2", "c3"] {
            ds.content_index.insert(id.into(), ds.contents.len());
            ds.contents.push(Content {
                id: id.into(),
                title: id.into(),
                description: String::new(),
                kind: "video".into(),
                text: String::new(),
                language: "en".into(),
                copyright_holder: String::new(),
                license: String::new(),
                line: 0,
            });
        }
        for (t, c) in [("R", "c2"), ("T2", "c1"), ("U", "c1"), ("T1", "c3")] {
            ds.correlations.push(Correlation {
                topic_id: t.into(),
                content_ids: vec![c.into()],
                fold: None,
                line: 0,
            });
        }
        ds
    }

    #[test]
    fn link_counts_match_the_batch_context_and_follow_decisions() {
        let ds = tiny();
        let mut k = KnownLinks::from_dataset(&ds);
        let siblings = vec!["T1".to_string(), "T2".to_string()];
        let q = TopicQuery {
            id: "T1",
            title: "T1",
            description: "",
            channel: Some("A"),
            parent: Some("R"),
            level: 1,
            siblings: &siblings,
            children: 0,
        };
        // The batch path's context for T1 (its own links hidden) gives the same counts.
        let ctx = crate::rerank::features::LinkContext::new(&ds, &[1]);
        let batch = |c: usize| ctx.counts(1, c as u32);
        for (ci, cid) in ["c1", "c2", "c3"].iter().enumerate() {
            let got = k.counts(&q, Some("A"), cid);
            let want = batch(ci);
            assert_eq!(
                (
                    got.content_topics,
                    got.parent_linked,
                    got.sibling_links,
                    got.channel_links
                ),
                (
                    want.content_topics,
                    want.parent_linked,
                    want.sibling_links,
                    want.channel_links
                ),
                "{cid}"
            );
        }
        let c2 = |k: &KnownLinks| k.counts(&q, Some("A"), "c2");
        assert_eq!((c2(&k).content_topics, c2(&k).sibling_links), (1, 0));
        // A curator accepts c2 for the sibling T2: it counts at once; a rejection takes it back.
        k.accept("T2", "A", "c2");
        assert_eq!(
            (
                c2(&k).content_topics,
                c2(&k).sibling_links,
                c2(&k).channel_links
            ),
            (2, 1, 2)
        );
        k.clear("T2", "c2");
        assert_eq!((c2(&k).content_topics, c2(&k).sibling_links), (1, 0));
        // A data link is not taken back by a decision.
        k.clear("T2", "c1");
        assert_eq!(k.counts(&q, Some("A"), "c1").sibling_links, 1);
    }
}

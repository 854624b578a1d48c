//! What the service does, without HTTP: keeps the store and the live index in step (upsert,
//! remove, seeding from a data folder, re-embedding for a new model) and ranks topic texts.
//! Blocking CPU work; the HTTP layer calls it off the async threads.

use super::embedder::Embedder;
use super::index::{ContentMeta, Hit, Index};
use super::metrics::Metrics;
use super::store::{Store, StoredContent};
use crate::data::Dataset;
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// A content resource as a request (or a data folder) describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub id: String,
    pub channel_id: String,
    pub title: String,
    pub description: String,
    pub text: String,
    pub kind: String,
    pub language: Option<String>,
}

/// What an upsert did (the body of embed-content's `200`).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct UpsertSummary {
    pub added: usize,
    pub replaced: usize,
    pub unchanged: usize,
    /// Of `replaced` and `added`: how many texts went through the encoder.
    pub embedded: usize,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Skipped {
    /// Position in the request's `resources`.
    pub index: usize,
    pub id: String,
    pub reason: String,
}

pub struct Engine {
    pub embedder: Box<dyn Embedder>,
    pub index: RwLock<Index>,
    /// Also serialises writers, so the store and the index change in the same order.
    store: Mutex<Store>,
    pub metrics: Arc<Metrics>,
    /// The second stage, when `--reranker` is given.
    pub reranker: Option<super::rerank::ServeReranker>,
    /// The topics the curator page can browse.
    pub catalog: RwLock<super::catalog::Catalog>,
}

const MODEL_KEY: &str = "model";

impl Engine {
    /// Opens the store, checks (or re-embeds for) the model, and loads the index from it.
    pub fn open(
        embedder: Box<dyn Embedder>,
        store_dir: Option<&Path>,
        reembed: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let mut store = Store::open(store_dir)?;
        let where_ = store_dir
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "the in-memory store".into());
        match store.get_meta(MODEL_KEY)? {
            Some(id) if id != embedder.id() => {
                let n = store.count()?;
                anyhow::ensure!(
                    reembed,
                    "{where_}: its {n} content vectors were made by `{id}`, not by this server's \
                     `{}`; start with --reembed to embed them again with this model, or use \
                     another --store",
                    embedder.id()
                );
                reembed_all(&mut store, embedder.as_ref())?;
                store.set_meta(MODEL_KEY, embedder.id())?;
            }
            Some(_) => {}
            None => store.set_meta(MODEL_KEY, embedder.id())?,
        }
        let mut index = Index::new(embedder.dim());
        for c in store.all()? {
            anyhow::ensure!(
                c.vector.len() == index.dim(),
                "{where_}: content {} has a vector of {} values, the model gives {}",
                c.meta.id,
                c.vector.len(),
                index.dim()
            );
            index.upsert(c.meta, &c.vector);
        }
        metrics.set_index(&index);
        let mut catalog = super::catalog::Catalog::default();
        catalog.add(store.topics()?);
        Ok(Engine {
            embedder,
            index: RwLock::new(index),
            store: Mutex::new(store),
            metrics,
            reranker: None,
            catalog: RwLock::new(catalog),
        })
    }

    /// Adds or replaces resources: texts that did not change are not embedded again; one
    /// store transaction, then the index. Resources with nothing to embed are skipped.
    pub fn upsert(&self, resources: Vec<Resource>) -> Result<UpsertSummary> {
        let mut summary = UpsertSummary::default();
        // The last of several resources with one id wins.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            last.insert(r.id.as_str(), i);
        }
        let mut store = self
            .store
            .lock()
            .map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
        let mut rows: Vec<StoredContent> = Vec::new();
        let mut to_embed: Vec<usize> = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            if last[r.id.as_str()] != i {
                summary.skipped.push(Skipped {
                    index: i,
                    id: r.id.clone(),
                    reason: "a later resource in this request has the same id".into(),
                });
                continue;
            }
            if r.title.trim().is_empty()
                && r.description.trim().is_empty()
                && r.text.trim().is_empty()
            {
                summary.skipped.push(Skipped {
                    index: i,
                    id: r.id.clone(),
                    reason: "title, description and text are all empty: nothing to embed".into(),
                });
                continue;
            }
            let text = crate::text::content_text_parts(&r.title, &r.description, &r.text);
            let meta = ContentMeta {
                id: r.id.clone(),
                channel_id: r.channel_id.clone(),
                title: r.title.clone(),
                description: r.description.clone(),
                kind: r.kind.clone(),
                language: r.language.clone(),
                short_text: crate::text::short_text(&r.text),
            };
            let old_meta = self.index.read().expect("index lock").get(&r.id).cloned();
            let vector = match store.text_and_vector(&r.id)? {
                Some((old_text, v)) if old_text == text => {
                    if old_meta.as_ref() == Some(&meta) {
                        summary.unchanged += 1;
                        continue;
                    }
                    v
                }
                _ => {
                    to_embed.push(rows.len());
                    Vec::new()
                }
            };
            if old_meta.is_some() {
                summary.replaced += 1;
            } else {
                summary.added += 1;
            }
            rows.push(StoredContent { meta, text, vector });
        }
        if !to_embed.is_empty() {
            let texts: Vec<String> = to_embed.iter().map(|&k| rows[k].text.clone()).collect();
            let vectors = self.embedder.embed(&texts)?;
            let d = self.embedder.dim();
            for (j, &k) in to_embed.iter().enumerate() {
                rows[k].vector = vectors[j * d..(j + 1) * d].to_vec();
            }
            summary.embedded = to_embed.len();
        }
        store.apply(&rows, &[])?;
        let mut index = self.index.write().expect("index lock");
        for c in rows {
            index.upsert(c.meta, &c.vector);
        }
        self.metrics.set_index(&index);
        Ok(summary)
    }

    /// Removes contents; returns the ids that were not stored.
    pub fn remove(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut store = self
            .store
            .lock()
            .map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
        let unknown: Vec<String> = {
            let index = self.index.read().expect("index lock");
            ids.iter()
                .filter(|id| index.get(id).is_none())
                .cloned()
                .collect()
        };
        store.apply(&[], ids)?;
        let mut index = self.index.write().expect("index lock");
        for id in ids {
            index.remove(id);
        }
        self.metrics.set_index(&index);
        Ok(unknown)
    }

    /// Seeds the index from a data folder: every content of `content.csv`, its channel taken
    /// from the first topic it is linked to in `correlations.csv` (empty when unlinked).
    pub fn seed(&self, ds: &Dataset) -> Result<UpsertSummary> {
        let mut channel: Vec<Option<&str>> = vec![None; ds.contents.len()];
        for (t, c) in ds.pairs() {
            channel[c].get_or_insert(ds.topics[t].channel.as_str());
        }
        let resources: Vec<Resource> = ds
            .contents
            .iter()
            .zip(&channel)
            .map(|(c, ch)| Resource {
                id: c.id.clone(),
                channel_id: ch.unwrap_or_default().to_string(),
                title: c.title.clone(),
                description: c.description.clone(),
                text: c.text.clone(),
                kind: c.kind.clone(),
                language: Some(c.language.clone()).filter(|l| !l.is_empty()),
            })
            .collect();
        let bar = crate::progress::bar(resources.len() as u64, "seeding");
        let mut total = UpsertSummary::default();
        // Chunks keep memory bounded and the bar moving; each chunk is one transaction.
        for (k, chunk) in resources.chunks(2048).enumerate() {
            let s = self.upsert(chunk.to_vec())?;
            total.added += s.added;
            total.replaced += s.replaced;
            total.unchanged += s.unchanged;
            total.embedded += s.embedded;
            total.skipped.extend(s.skipped.into_iter().map(|mut x| {
                x.index += k * 2048;
                x
            }));
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(total)
    }

    /// The `r` most similar contents of each text's language, best first: one embedding call
    /// for all texts, one matrix product per language.
    pub fn rank(&self, texts: &[String], langs: &[String], r: usize) -> Result<Vec<Vec<Hit>>> {
        let d = self.embedder.dim();
        let vectors = self.embedder.embed(texts)?;
        let mut by_lang: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, l) in langs.iter().enumerate() {
            by_lang.entry(l.as_str()).or_default().push(i);
        }
        let index = self.index.read().expect("index lock");
        let mut out = vec![Vec::new(); texts.len()];
        for (lang, rows) in by_lang {
            let mut block = Vec::with_capacity(rows.len() * d);
            for &i in &rows {
                block.extend_from_slice(&vectors[i * d..(i + 1) * d]);
            }
            for (&i, hits) in rows.iter().zip(index.search(lang, &block, r)) {
                out[i] = hits;
            }
        }
        Ok(out)
    }

    /// Keeps topics seen in requests (for the page); a store error is logged, not returned:
    /// Studio's recommendations must not fail for the page's sake.
    pub fn remember_topics(&self, recs: &[super::catalog::TopicRec]) {
        let changed = self
            .catalog
            .write()
            .expect("catalog lock")
            .add(recs.iter().cloned());
        if changed.is_empty() {
            return;
        }
        if let Err(e) = self
            .store
            .lock()
            .expect("store lock")
            .remember_topics(&changed)
        {
            tracing::warn!(
                "could not keep {} topic(s) in the store: {e:#}",
                changed.len()
            );
        }
    }

    /// Appends a curator's decision to the store (committed when this returns).
    pub fn record_decision(
        &self,
        topic: &str,
        content: &str,
        decision: &str,
        margin: Option<f32>,
    ) -> Result<i64> {
        let model = match &self.reranker {
            Some(r) => format!("{} + reranker {}", self.embedder.id(), r.dir.display()),
            None => self.embedder.id().to_string(),
        };
        let seq = self
            .store
            .lock()
            .expect("store lock")
            .record_decision(topic, content, decision, &model, margin)?;
        if let Some(r) = &self.reranker {
            let channel = self
                .catalog
                .read()
                .expect("catalog lock")
                .get(topic)
                .map(|t| t.channel.clone())
                .unwrap_or_default();
            let mut links = r.links.write().expect("links lock");
            match decision {
                "accept" => links.accept(topic, &channel, content),
                _ => links.clear(topic, content),
            }
        }
        Ok(seq)
    }

    /// Gives the reranker's tree context the links curators accepted so far (at start-up).
    pub fn load_accepted_links(&self) -> Result<usize> {
        let Some(r) = &self.reranker else {
            return Ok(0);
        };
        let decisions = self.store.lock().expect("store lock").decisions(None)?;
        let catalog = self.catalog.read().expect("catalog lock");
        let mut links = r.links.write().expect("links lock");
        let mut n = 0;
        for d in decisions.iter().filter(|d| d.decision == "accept") {
            let channel = catalog.get(&d.topic_id).map_or("", |t| t.channel.as_str());
            links.accept(&d.topic_id, channel, &d.content_id);
            n += 1;
        }
        Ok(n)
    }

    /// Current decisions of a topic.
    pub fn decisions(&self, topic: &str) -> Result<Vec<super::feedback::Decision>> {
        self.store
            .lock()
            .expect("store lock")
            .decisions(Some(topic))
    }

    /// Topic vectors (embed-topics).
    pub fn embed(&self, texts: &[String]) -> Result<Vec<f32>> {
        self.embedder.embed(texts)
    }
}

/// Embeds every stored content again with `embedder` (a new model), one transaction.
fn reembed_all(store: &mut Store, embedder: &dyn Embedder) -> Result<()> {
    let mut all = store.all()?;
    let bar = crate::progress::bar(all.len() as u64, "re-embedding");
    let d = embedder.dim();
    for chunk in all.chunks_mut(1024) {
        let texts: Vec<String> = chunk.iter().map(|c| c.text.clone()).collect();
        let v = embedder.embed(&texts)?;
        for (j, c) in chunk.iter_mut().enumerate() {
            c.vector = v[j * d..(j + 1) * d].to_vec();
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    store.apply(&all, &[])
}

//! What the curator page asks of the engine: channels and their trees, a topic with its
//! breadcrumb, links and decisions, its recommendations (or a free text's), and decisions.

use super::recommend::{check_overrides, OwnedQuery, RankItem, Settings};
use super::{blocking, check_len, meta_of, Engine};
use crate::serve::cancel::Cancel;
use crate::serve::error::{ServeError, ServeResult};
use crate::store::{Decision, DecisionKind, DecisionOrigin, NewDecision};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// Recommendations shown on the page: at least `top_k` (default), including every selected.
const PAGE_TOP_K: usize = 30;

fn unknown_topic(id: &str) -> ServeError {
    ServeError::not_found(
        "topic_id",
        format!("no topic `{id}` (topics come from --data and from recommend requests)"),
    )
}

impl Engine {
    /// The channels the page can browse, and the languages with recommendable contents.
    pub fn channels(&self) -> ServeResult<Value> {
        let channels = self.catalog()?.channels();
        let languages: Vec<String> = self.index()?.sizes().into_iter().map(|(l, _)| l).collect();
        Ok(json!({"channels": channels, "languages": languages}))
    }

    /// A channel's topics, parents first.
    pub fn tree(&self, channel: &str) -> ServeResult<Value> {
        let cat = self.catalog()?;
        let nodes = cat
            .tree(channel)
            .ok_or_else(|| ServeError::not_found("channel", format!("no channel `{channel}`")))?;
        Ok(json!({"channel": channel, "topics": nodes}))
    }

    /// A topic: its fields, breadcrumb, the data folder's links and the curators' decisions.
    pub async fn topic_view(self: &Arc<Self>, id: String) -> ServeResult<Value> {
        let (t, crumbs, links) = {
            let cat = self.catalog()?;
            let t = cat.get(&id).cloned().ok_or_else(|| unknown_topic(&id))?;
            let crumbs: Vec<Value> = cat
                .breadcrumb(&id)
                .iter()
                .map(|b| json!({"id": b.id, "title": b.title}))
                .collect();
            (t, crumbs, cat.links(&id).to_vec())
        };
        let eng = self.clone();
        let linked: Vec<Value> = blocking(move || {
            let index = eng.index()?;
            let mut linked = Vec::new();
            for c in links.iter() {
                if let Some(m) = meta_of(&index, c)? {
                    linked.push(json!({"id": m.id, "title": m.title, "kind": m.kind,
                           "description": m.description, "language": m.language}));
                }
            }
            Ok(linked)
        })
        .await?;
        let decisions: serde_json::Map<String, Value> = self
            .decisions(id)
            .await?
            .into_iter()
            .map(|d| (d.content_id, Value::String(d.kind.to_string())))
            .collect();
        Ok(json!({
            "id": t.id, "title": t.title, "description": t.description, "language": t.language,
            "channel": t.channel, "origin": t.origin, "breadcrumb": crumbs, "linked": linked,
            "decisions": decisions,
        }))
    }

    /// A known topic's recommendations, leaving out the contents already linked to it.
    pub async fn topic_recommendations(
        self: &Arc<Self>,
        id: String,
        top_k: Option<usize>,
        margin: Option<f32>,
    ) -> ServeResult<Value> {
        let (item, linked) = {
            let cat = self.catalog()?;
            let t = cat.get(&id).ok_or_else(|| unknown_topic(&id))?;
            let parent = t.parent.as_deref().and_then(|p| cat.get(p));
            let item = RankItem {
                text: t.text.clone(),
                language: t.language.clone(),
                query: Some(OwnedQuery {
                    id: t.id.clone(),
                    title: t.title.clone(),
                    description: t.description.clone(),
                    channel: Some(t.channel.clone()),
                    parent: t.parent.clone(),
                    level: t.level,
                }),
                parent_text: parent.map(|p| p.text.clone()),
            };
            let linked: HashSet<String> = cat.links(&id).iter().cloned().collect();
            (item, linked)
        };
        self.page_recommendations(item, top_k, margin, &linked, Some(&id))
            .await
    }

    /// Recommendations for a free text in a language (the page's search box).
    pub async fn recommend_text(
        self: &Arc<Self>,
        text: &str,
        language: String,
        top_k: Option<usize>,
        margin: Option<f32>,
    ) -> ServeResult<Value> {
        if text.trim().is_empty() {
            return Err(ServeError::validation(
                "/text",
                "write the topic's title or a sentence about it",
            ));
        }
        let l = &self.settings.limits;
        check_len(
            || "/text".into(),
            text,
            l.max_text_chars,
            "--max-text-chars",
        )?;
        if !self.index()?.has_language(&language) {
            return Err(ServeError::validation(
                "/language",
                format!("no content in language `{language}`"),
            ));
        }
        let item = RankItem {
            text: crate::text::breadcrumb_text(&[text.trim()], ""),
            language,
            query: None,
            parent_text: None,
        };
        self.page_recommendations(item, top_k, margin, &HashSet::new(), None)
            .await
    }

    /// Ranks one item and answers in the page's shape, leaving out `exclude`.
    async fn page_recommendations(
        self: &Arc<Self>,
        item: RankItem,
        top_k: Option<usize>,
        margin: Option<f32>,
        exclude: &HashSet<String>,
        topic: Option<&str>,
    ) -> ServeResult<Value> {
        check_overrides(top_k, margin)?;
        let top_k = top_k.unwrap_or(PAGE_TOP_K);
        let settings = Settings {
            top_k,
            margin: margin.unwrap_or(self.settings.margin),
            rerank_margin: margin,
            override_threshold: false,
        };
        let r = self
            .rank_select(vec![item], settings)
            .await?
            .pop()
            .expect("one item in, one out");
        // The texts come from the index's metadata file: off the async threads.
        let eng = self.clone();
        let exclude = exclude.clone();
        let (out, selected) = blocking(move || {
            let index = eng.index()?;
            let mut out = Vec::new();
            let mut selected = 0;
            for (pos, &(i, p)) in r.order.iter().enumerate() {
                let h = &r.hits[i];
                if exclude.contains(&h.content) {
                    continue;
                }
                let Some(m) = meta_of(&index, &h.content)? else {
                    continue;
                };
                if pos < r.selected {
                    selected += 1;
                } else if out.len() >= top_k {
                    break;
                }
                let mut v = json!({"id": m.id, "title": m.title, "kind": m.kind,
                    "description": m.description, "language": m.language,
                    "similarity": h.similarity, "rank": out.len() + 1});
                if let Some(p) = p {
                    v["probability"] = json!(p);
                }
                out.push(v);
            }
            Ok((out, selected))
        })
        .await?;
        let (rule, shown_margin) = match &self.reranker {
            Some(rr) => {
                let mut sel = rr.rr.meta.selection;
                if let Some(m) = margin {
                    sel.margin = m;
                }
                (format!("reranker: {sel}"), sel.margin)
            }
            None => {
                let m = margin.unwrap_or(self.settings.margin);
                (crate::select::threshold::describe(m), m)
            }
        };
        Ok(json!({
            "topic": topic, "model": self.model_id(), "rule": rule,
            // As typed (0.18), not as f32 widens it (0.18000000715).
            "margin": (shown_margin as f64 * 1e6).round() / 1e6,
            "selected": selected, "recommendations": out,
        }))
    }

    /// Appends a curator's decision (committed when this returns) and updates the reranker's
    /// tree context at once.
    pub async fn record_decision(
        self: &Arc<Self>,
        topic: String,
        content: String,
        kind: DecisionKind,
        margin: Option<f32>,
        cancel: Cancel,
    ) -> ServeResult<i64> {
        let l = &self.settings.limits;
        check_len(
            || "/topic_id".into(),
            &topic,
            l.max_id_chars,
            "the id limit",
        )?;
        check_len(
            || "/content_id".into(),
            &content,
            l.max_id_chars,
            "the id limit",
        )?;
        if margin.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
            return Err(ServeError::validation(
                "/margin",
                "margin must be from 0 to 1",
            ));
        }
        let channel = match self.catalog()?.get(&topic) {
            Some(t) => t.channel.clone(),
            None => {
                return Err(ServeError::not_found(
                    "/topic_id",
                    format!("no topic `{topic}`"),
                ))
            }
        };
        if !self.index()?.contains(&content) {
            return Err(ServeError::not_found(
                "/content_id",
                format!("no content `{content}`"),
            ));
        }
        let model = match &self.reranker {
            Some(r) => format!("{} + reranker {}", self.model_id(), r.dir.display()),
            None => self.model_id().to_string(),
        };
        let eng = self.clone();
        blocking(move || {
            cancel.begin_commit()?;
            let seq = eng.checked(eng.store()?.record_decision(&NewDecision {
                topic_id: &topic,
                content_id: &content,
                kind,
                model: &model,
                margin,
                origin: DecisionOrigin::Page,
            }))?;
            if let Some(r) = &eng.reranker {
                let mut links = r.links_mut().map_err(|e| eng.broken(&e.to_string()))?;
                match kind {
                    DecisionKind::Accept => links.accept(&topic, &channel, &content),
                    DecisionKind::Reject | DecisionKind::Undo => links.clear(&topic, &content),
                }
            }
            Ok(seq)
        })
        .await
    }

    /// A topic's current decisions, oldest first.
    pub async fn decisions(self: &Arc<Self>, topic: String) -> ServeResult<Vec<Decision>> {
        let eng = self.clone();
        blocking(move || eng.checked(eng.store()?.decisions(Some(&topic)))).await
    }
}

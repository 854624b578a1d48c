//! Ranking and selection, shared by Studio's recommend endpoint and the curator page: the
//! queue's worker ranks topic texts against the index; with a reranker, its top K are
//! reordered by the reranker's probability (the parents embedded in the same batch, the trees
//! run off the async threads); then the dynamic threshold (or the reranker's selection) says
//! how many are recommended.

use super::{blocking, check_count, check_len, meta_of, Engine};
use crate::select::threshold::{selected_len, MAX_SELECTED};
use crate::serve::error::{ServeError, ServeResult};
use crate::serve::index::Hit;
use crate::serve::queue::{ParentText, RankText, RankedText, Want};
use crate::serve::rerank::TopicQuery;
use crate::studio::request::TopicIn;
use serde::Serialize;
use std::sync::Arc;

/// A topic to rank: its text (whole: the encoder's is cut to the encoder's limit) and
/// language; for the reranker also what it knows of the topic and its parent's text.
pub struct RankItem {
    pub text: String,
    pub language: String,
    pub query: Option<OwnedQuery>,
    pub parent_text: Option<String>,
}

/// One topic's pairs for the cross-encoder: which candidates (positions) and their texts.
#[derive(Default)]
struct CrossPairs {
    candidates: usize,
    positions: Vec<usize>,
    texts: Vec<(String, String)>,
}

/// What the reranker knows of a topic.
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

/// What recommend's caller may override for one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecommendQuery {
    pub override_threshold: bool,
    pub top_k: Option<usize>,
    pub margin: Option<f32>,
}

/// One recommendation as Studio reads it.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub id: String,
    pub channel_id: String,
    pub title: String,
    pub description: String,
    pub kind: String,
    pub similarity: f32,
    /// The reranker's probability (only with `--reranker`; the order follows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f32>,
    pub rank: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicRecommendations {
    pub id: String,
    pub recommendations: Vec<Recommendation>,
}

/// `top_k` from 1 to 1000 and `margin` from 0 to 1, or the field named.
pub fn check_overrides(top_k: Option<usize>, margin: Option<f32>) -> ServeResult<()> {
    if top_k.is_some_and(|k| !(1..=1000).contains(&k)) {
        return Err(ServeError::bad_request(
            "?top_k",
            "top_k must be a count from 1 to 1000",
        ));
    }
    if margin.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
        return Err(ServeError::bad_request(
            "?margin",
            "margin must be from 0 to 1",
        ));
    }
    Ok(())
}

impl Engine {
    /// Studio's recommend: the topics' recommendations, in request order.
    pub async fn recommend(
        self: &Arc<Self>,
        topics: Vec<TopicIn>,
        q: RecommendQuery,
    ) -> ServeResult<Vec<TopicRecommendations>> {
        check_overrides(q.top_k, q.margin)?;
        self.check_topics(&topics)?;
        self.remember_topics(&topics).await;
        let items: Vec<RankItem> = topics.iter().map(|t| self.rank_item(t)).collect();
        let settings = Settings {
            top_k: q.top_k.unwrap_or(self.settings.top_k),
            margin: q.margin.unwrap_or(self.settings.margin),
            rerank_margin: q.margin,
            override_threshold: q.override_threshold,
        };
        let ranked = self.rank_select(items, settings).await?;
        // The texts come from the index's metadata file: off the async threads.
        let eng = self.clone();
        blocking(move || {
            let index = eng.index()?;
            let mut out = Vec::with_capacity(topics.len());
            for (t, r) in topics.into_iter().zip(ranked) {
                let mut recommendations = Vec::new();
                for &(i, p) in &r.order[..r.selected] {
                    let h = &r.hits[i];
                    // A content removed since ranking is left out.
                    let Some(m) = meta_of(&index, &h.content)? else {
                        continue;
                    };
                    recommendations.push(Recommendation {
                        id: m.id,
                        channel_id: m.channel_id,
                        title: m.title,
                        description: m.description,
                        kind: m.kind,
                        similarity: h.similarity,
                        probability: p,
                        rank: recommendations.len() + 1,
                    });
                }
                out.push(TopicRecommendations {
                    id: t.id,
                    recommendations,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Studio's embed-topics: each topic's vector, in request order.
    pub async fn embed_topics(&self, topics: Vec<TopicIn>) -> ServeResult<Vec<(String, Vec<f32>)>> {
        self.check_topics(&topics)?;
        let texts = topics
            .iter()
            .map(|t| RankText {
                text: self.encoder_text(t.text()),
                ..Default::default()
            })
            .collect();
        let out = self.queue.rank(texts, Want::Hits(0)).await?;
        Ok(topics
            .into_iter()
            .zip(out)
            .map(|(t, r)| (t.id, r.vector))
            .collect())
    }

    /// The request's limits, languages and levels.
    fn check_topics(&self, topics: &[TopicIn]) -> ServeResult<()> {
        let l = &self.settings.limits;
        check_count("/topics", topics.len(), l.max_topics, "--max-topics")?;
        for (i, t) in topics.iter().enumerate() {
            check_count(
                &format!("/topics/{i}/ancestors"),
                t.ancestors.len(),
                l.max_ancestors,
                "--max-ancestors",
            )?;
            let f = |name: &'static str| move || format!("/topics/{i}/{name}");
            check_len(f("id"), &t.id, l.max_id_chars, "the id limit")?;
            check_len(f("title"), &t.title, l.max_text_chars, "--max-text-chars")?;
            check_len(
                f("description"),
                &t.description,
                l.max_text_chars,
                "--max-text-chars",
            )?;
            check_len(f("language"), &t.language, l.max_id_chars, "the id limit")?;
            if let Some(c) = &t.channel_id {
                check_len(f("channel_id"), c, l.max_id_chars, "the id limit")?;
            }
            for (j, a) in t.ancestors.iter().enumerate() {
                let g = |name: &'static str| move || format!("/topics/{i}/ancestors/{j}/{name}");
                if let Some(id) = &a.id {
                    check_len(g("id"), id, l.max_id_chars, "the id limit")?;
                }
                check_len(g("title"), &a.title, l.max_text_chars, "--max-text-chars")?;
                check_len(
                    g("description"),
                    &a.description,
                    l.max_text_chars,
                    "--max-text-chars",
                )?;
                if !(0..=crate::studio::request::MAX_LEVEL).contains(&a.level) {
                    return Err(ServeError::validation(
                        g("level")(),
                        format!(
                            "level {} is not from 0 to {}",
                            a.level,
                            crate::studio::request::MAX_LEVEL
                        ),
                    ));
                }
            }
            if !self.known_language(&t.language)? {
                return Err(ServeError::validation(
                    format!("/topics/{i}/language"),
                    format!(
                        "unknown language `{}` (not an le-utils language code, and no content \
                         has it)",
                        t.language
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Keeps the request's topics for the page (catalog, then store off the async threads); a
    /// store error is logged, not returned: Studio's recommendations must not fail for the
    /// page's sake.
    async fn remember_topics(self: &Arc<Self>, topics: &[TopicIn]) {
        let cap = crate::serve::limits::Limits::encoder_chars(self.settings.max_len);
        let recs = crate::studio::request::topics_as_records(topics, cap);
        let changed = match self.catalog_mut() {
            Ok(mut c) => c.add(recs),
            Err(_) => return,
        };
        if changed.is_empty() {
            return;
        }
        let eng = self.clone();
        let n = changed.len();
        let kept = blocking(move || eng.checked(eng.store()?.remember_topics(&changed))).await;
        if let Err(e) = kept {
            tracing::warn!("could not keep {n} topic(s) in the store: {e}");
        }
    }

    /// What ranking (and the reranker) needs of a request's topic.
    fn rank_item(&self, t: &TopicIn) -> RankItem {
        let anc = t.ancestors_parent_first();
        RankItem {
            text: t.text(),
            language: t.language.clone(),
            query: Some(OwnedQuery {
                id: t.id.clone(),
                title: t.title.clone(),
                description: t.description.clone(),
                channel: t.channel_id.clone(),
                parent: anc.first().and_then(|a| a.id.clone()),
                level: t.ancestors.len() as u32,
            }),
            parent_text: t.parent_text(),
        }
    }

    /// Ranks, reranks and selects for every item, in order.
    pub(crate) async fn rank_select(
        self: &Arc<Self>,
        items: Vec<RankItem>,
        s: Settings,
    ) -> ServeResult<Vec<Ranked>> {
        let want = match &self.reranker {
            Some(rr) => Want::Candidates {
                columns: rr.columns.clone(),
                k: rr.rr.meta.k,
            },
            None => Want::Hits(s.top_k.max(MAX_SELECTED)),
        };
        let texts: Vec<RankText> =
            items
                .iter()
                .map(|i| RankText {
                    text: self.encoder_text(i.text.clone()),
                    language: Some(i.language.clone()),
                    lexical: Some(i.text.clone()),
                    // The parents' vectors, in the same batch (no ranking for them).
                    parent: self.reranker.as_ref().and(i.parent_text.as_ref()).map(|p| {
                        ParentText {
                            text: self.encoder_text(p.clone()),
                            lexical: Some(p.clone()),
                        }
                    }),
                })
                .collect();
        let ranked = self.queue.rank(texts, want).await?;
        if self.reranker.is_none() {
            return Ok(ranked
                .into_iter()
                .map(|t| {
                    let hits = t.hits;
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
        if let Some(top) = self.reranker.as_ref().and_then(|rr| rr.cross_top()) {
            // The pairs' content texts come from the index's metadata file: off the async
            // threads; then the model worker reads them with every other waiting request's.
            let eng = self.clone();
            let (items, ranked, mut pairs) = blocking(move || {
                let pairs = eng.cross_pairs(&items, &ranked, top)?;
                Ok((items, ranked, pairs))
            })
            .await?;
            let flat: Vec<(String, String)> = pairs
                .iter_mut()
                .flat_map(|p| std::mem::take(&mut p.texts))
                .collect();
            let mut logits = self.cross_logits(flat).await?.into_iter();
            let values = pairs
                .iter()
                .map(|p| {
                    let mut v = vec![f32::NAN; p.candidates];
                    for (&i, l) in p.positions.iter().zip(logits.by_ref()) {
                        v[i] = l;
                    }
                    v
                })
                .collect();
            return self.rerank_blocking(items, ranked, Some(values), s).await;
        }
        self.rerank_blocking(items, ranked, None, s).await
    }

    /// The cross-encoder's logits of `pairs`: those kept from earlier requests, the rest read
    /// by the model worker (and kept).
    async fn cross_logits(&self, pairs: Vec<(String, String)>) -> ServeResult<Vec<f32>> {
        let Some(cache) = self.reranker.as_ref().and_then(|rr| rr.cache.as_ref()) else {
            return self.queue.cross(pairs).await;
        };
        let keys: Vec<_> = pairs
            .iter()
            .map(|(t, c)| crate::serve::cross_cache::CrossCache::key(t, c))
            .collect();
        let mut out = cache.get_many(&keys);
        let missing: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_none()).collect();
        self.metrics
            .cross_cache_hits
            .inc_by((out.len() - missing.len()) as u64);
        if !missing.is_empty() {
            let mut pairs: Vec<Option<(String, String)>> = pairs.into_iter().map(Some).collect();
            let asked = missing.iter().filter_map(|&i| pairs[i].take()).collect();
            let read = self.queue.cross(asked).await?;
            cache.put_many(missing.iter().map(|&i| keys[i]).zip(read.iter().copied()));
            for (&i, l) in missing.iter().zip(read) {
                out[i] = Some(l);
            }
        }
        Ok(out.into_iter().map(|l| l.unwrap_or(f32::NAN)).collect())
    }

    async fn rerank_blocking(
        self: &Arc<Self>,
        items: Vec<RankItem>,
        ranked: Vec<RankedText>,
        cross: Option<Vec<Vec<f32>>>,
        s: Settings,
    ) -> ServeResult<Vec<Ranked>> {
        let eng = self.clone();
        blocking(move || eng.rerank_all(&items, ranked, cross, s)).await
    }

    /// Each topic's (topic text, content text) pairs for the cross-encoder: its best `top`
    /// candidates as the batch pipeline picks them, the topic's whole text and the content's
    /// encoder text (`text::content_text`, from the stored short text), as `predict` reads them.
    fn cross_pairs(
        &self,
        items: &[RankItem],
        ranked: &[RankedText],
        top: usize,
    ) -> ServeResult<Vec<CrossPairs>> {
        let index = self.index()?;
        let mut out = Vec::with_capacity(items.len());
        for (item, t) in items.iter().zip(ranked) {
            let Some(cands) = &t.candidates else {
                out.push(CrossPairs::default());
                continue;
            };
            let positions = crate::rerank::cross_positions(&cands.topic, top);
            let mut texts = Vec::with_capacity(positions.len());
            for &i in &positions {
                let content = match meta_of(&index, &cands.ids[i])? {
                    Some(m) => {
                        crate::text::content_text_of_short(&m.title, &m.description, &m.short_text)
                    }
                    // Removed since ranking: its row is dropped from the answer anyway.
                    None => String::new(),
                };
                texts.push((item.text.clone(), content));
            }
            out.push(CrossPairs {
                candidates: cands.topic.candidates.len(),
                positions,
                texts,
            });
        }
        Ok(out)
    }

    fn rerank_all(
        &self,
        items: &[RankItem],
        ranked: Vec<RankedText>,
        cross: Option<Vec<Vec<f32>>>,
        s: Settings,
    ) -> ServeResult<Vec<Ranked>> {
        let rr = self.reranker.as_ref().expect("called with a reranker");
        let mut sel = rr.rr.meta.selection;
        if let Some(m) = s.rerank_margin {
            sel.margin = m;
        }
        // Siblings and child counts first (catalog), then the index: never both at once.
        let family: Vec<(Vec<String>, usize)> = {
            let catalog = self.catalog()?;
            items
                .iter()
                .map(|item| {
                    let q = item.query.as_ref();
                    let siblings = q
                        .and_then(|q| q.parent.as_deref())
                        .map_or_else(Vec::new, |p| catalog.children(p).to_vec());
                    let children = q.map_or(0, |q| catalog.children(&q.id).len());
                    (siblings, children)
                })
                .collect()
        };
        let index = self.index()?;
        let mut out = Vec::with_capacity(items.len());
        for (k, ((item, t), (siblings, children))) in
            items.iter().zip(ranked).zip(&family).enumerate()
        {
            let q = item.query.as_ref();
            let query = TopicQuery {
                id: q.map_or("", |q| q.id.as_str()),
                title: q.map_or(item.text.as_str(), |q| q.title.as_str()),
                description: q.map_or("", |q| q.description.as_str()),
                channel: q.and_then(|q| q.channel.as_deref()),
                parent: q.and_then(|q| q.parent.as_deref()),
                level: q.map_or(0, |q| q.level),
                siblings,
                children: *children,
            };
            let Some(cands) = t.candidates else {
                out.push(Ranked {
                    hits: Vec::new(),
                    order: Vec::new(),
                    selected: 0,
                });
                continue;
            };
            let scored = rr
                .rerank(
                    &index,
                    &query,
                    &cands,
                    cross.as_ref().map(|c| c[k].as_slice()),
                )
                .map_err(ServeError::Failed)?;
            let selected = if s.override_threshold {
                s.top_k.min(scored.len())
            } else {
                let probs: Vec<f32> = scored.iter().map(|x| x.1).collect();
                sel.count(&probs, MAX_SELECTED)
            };
            // The similarity shown is the last column's: the ensemble's when there are several.
            let hits = cands
                .ids
                .into_iter()
                .zip(&cands.topic.candidates)
                .map(|(id, c)| Hit {
                    content: id,
                    similarity: c.sims.last().copied().unwrap_or(f32::NAN),
                })
                .collect();
            out.push(Ranked {
                order: scored.into_iter().map(|(i, p)| (i, Some(p))).collect(),
                hits,
                selected,
            });
        }
        Ok(out)
    }
}

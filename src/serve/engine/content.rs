//! Contents: keeps the store and the index in step. An upsert is planned under a short store
//! read, its new texts are embedded through the queue in slices (recommends run in between),
//! and it is committed in one transaction, then applied to the index, under the store lock.
//! A request cancelled (timed out) before its commit began changes nothing.

use super::{blocking, check_count, meta_of, Engine};
use crate::serve::cancel::Cancel;
use crate::serve::embedder::Embedder;
use crate::serve::embedder::Role;
use crate::serve::error::{ServeError, ServeResult};
use crate::store::{ContentMeta, Store, StoredContent};
use anyhow::Result;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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

/// What remove-content did.
#[derive(Debug, Serialize, PartialEq)]
pub struct RemoveSummary {
    pub removed: usize,
    /// Ids that were not stored (each once).
    pub unknown: Vec<String>,
}

/// An upsert before its commit: the rows to write, which of them still need a vector.
struct Plan {
    rows: Vec<StoredContent>,
    to_embed: Vec<usize>,
    summary: UpsertSummary,
}

impl Engine {
    /// Adds or replaces resources (embed-content). Texts that did not change are not embedded
    /// again; resources with nothing to embed, or over a length limit, are skipped with the
    /// reason (Studio's batch goes on).
    pub async fn upsert(
        self: &Arc<Self>,
        resources: Vec<Resource>,
        cancel: Cancel,
    ) -> ServeResult<UpsertSummary> {
        let l = &self.settings.limits;
        check_count(
            "/resources",
            resources.len(),
            l.max_resources,
            "--max-resources",
        )?;
        for (i, r) in resources.iter().enumerate() {
            if let Some(lang) = &r.language {
                if !self.known_language(lang)? {
                    return Err(ServeError::validation(
                        format!("/resources/{i}/language"),
                        format!("unknown language `{lang}` (not an le-utils language code)"),
                    ));
                }
            }
        }
        let eng = self.clone();
        let mut plan = blocking(move || eng.plan(resources)).await?;
        let d = self.dim();
        let slice = self.settings.limits.embed_slice.max(1);
        let mut done = 0;
        while done < plan.to_embed.len() {
            if cancel.is_cancelled() {
                return Err(ServeError::TimedOut);
            }
            let part = &plan.to_embed[done..(done + slice).min(plan.to_embed.len())];
            let texts = part.iter().map(|&k| plan.rows[k].text.clone()).collect();
            let vectors = self.queue.embed(texts, done > 0).await?;
            for (j, &k) in part.iter().enumerate() {
                plan.rows[k].vector = vectors[j * d..(j + 1) * d].to_vec();
            }
            done += part.len();
        }
        let eng = self.clone();
        blocking(move || eng.commit(plan, Some(&cancel))).await
    }

    /// Seeds the index from a data folder (at start-up, before any request): every content of
    /// `content.csv`, its channel taken from the first topic it is linked to in
    /// `correlations.csv` (empty when unlinked).
    pub fn seed(&self, ds: &crate::data::Dataset) -> Result<UpsertSummary> {
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
        let d = self.dim();
        // Chunks keep memory bounded and the bar moving; each chunk is one transaction.
        for (k, chunk) in resources.chunks(2048).enumerate() {
            let mut plan = self.plan(chunk.to_vec())?;
            if !plan.to_embed.is_empty() {
                let texts: Vec<String> = plan
                    .to_embed
                    .iter()
                    .map(|&i| plan.rows[i].text.clone())
                    .collect();
                let v = self.model.embedder.embed(Role::Content, &texts)?;
                for (j, &i) in plan.to_embed.iter().enumerate() {
                    plan.rows[i].vector = v[j * d..(j + 1) * d].to_vec();
                }
            }
            let s = self.commit(plan, None)?;
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

    /// Which resources to write and which of them need embedding (a short store read).
    fn plan(&self, resources: Vec<Resource>) -> ServeResult<Plan> {
        let l = &self.settings.limits;
        let mut summary = UpsertSummary::default();
        // The last of several resources with one id wins.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            last.insert(r.id.as_str(), i);
        }
        let mut kept: Vec<(usize, &Resource)> = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            let skip = |reason: String| Skipped {
                index: i,
                id: r.id.clone(),
                reason,
            };
            if last[r.id.as_str()] != i {
                summary.skipped.push(skip(
                    "a later resource in this request has the same id".into(),
                ));
                continue;
            }
            let long = [
                ("title", &r.title),
                ("description", &r.description),
                ("text", &r.text),
            ]
            .into_iter()
            .find_map(|(name, v)| {
                let n = v.chars().count();
                (n > l.max_text_chars).then(|| {
                    format!(
                        "its {name} has {n} characters, more than --max-text-chars {}",
                        l.max_text_chars
                    )
                })
            });
            if let Some(reason) = long {
                summary.skipped.push(skip(reason));
                continue;
            }
            if r.title.trim().is_empty()
                && r.description.trim().is_empty()
                && r.text.trim().is_empty()
            {
                summary.skipped.push(skip(
                    "title, description and text are all empty: nothing to embed".into(),
                ));
                continue;
            }
            kept.push((i, r));
        }
        let ids: Vec<&str> = kept.iter().map(|(_, r)| r.id.as_str()).collect();
        let stored = self.checked(self.store()?.texts_and_vectors(&ids))?;
        let index = self.index()?;
        let mut rows = Vec::new();
        let mut to_embed = Vec::new();
        for (_, r) in kept {
            let text = self.encoder_text(crate::text::content_text_parts(
                &r.title,
                &r.description,
                &r.text,
            ));
            let meta = ContentMeta {
                id: r.id.clone(),
                channel_id: r.channel_id.clone(),
                title: r.title.clone(),
                description: r.description.clone(),
                kind: r.kind.clone(),
                language: r.language.clone(),
                short_text: crate::text::short_text(&r.text),
            };
            let old_meta = meta_of(&index, &r.id)?;
            let vector = match stored.get(&r.id) {
                Some((old_text, v)) if *old_text == text => {
                    if old_meta.as_ref() == Some(&meta) {
                        summary.unchanged += 1;
                        continue;
                    }
                    v.clone()
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
        summary.embedded = to_embed.len();
        Ok(Plan {
            rows,
            to_embed,
            summary,
        })
    }

    /// One transaction, then the index, under the store lock (so both change in one order).
    fn commit(&self, plan: Plan, cancel: Option<&Cancel>) -> ServeResult<UpsertSummary> {
        if let Some(c) = cancel {
            c.begin_commit()?;
        }
        let mut store = self.store()?;
        self.checked(store.apply(&plan.rows, &[]))?;
        let mut index = self.index_mut()?;
        for c in plan.rows {
            self.index_io(index.upsert(c.meta, &c.vector))?;
        }
        self.index_changed(&index);
        Ok(plan.summary)
    }

    /// Removes contents (remove-content, `DELETE content/{id}`); each id counts once.
    pub async fn remove(
        self: &Arc<Self>,
        ids: Vec<String>,
        cancel: Cancel,
    ) -> ServeResult<RemoveSummary> {
        check_count(
            "/ids",
            ids.len(),
            self.settings.limits.max_resources,
            "--max-resources",
        )?;
        let mut seen = HashSet::new();
        let ids: Vec<String> = ids.into_iter().filter(|i| seen.insert(i.clone())).collect();
        let eng = self.clone();
        blocking(move || {
            cancel.begin_commit()?;
            let mut store = eng.store()?;
            // Known or not is the store's answer: once the deletion commits, this process's
            // change follower may apply it to the index before the lines below do.
            let deleted: HashSet<String> =
                eng.checked(store.apply(&[], &ids))?.into_iter().collect();
            let mut index = eng.index_mut()?;
            for id in &ids {
                eng.index_io(index.remove(id))?;
            }
            eng.index_changed(&index);
            let unknown: Vec<String> = ids.into_iter().filter(|id| !deleted.contains(id)).collect();
            Ok(RemoveSummary {
                removed: seen.len() - unknown.len(),
                unknown,
            })
        })
        .await
    }
}

/// Embeds every stored content again with `embedder` (a new model), one transaction.
pub(super) fn reembed_all(store: &mut Store, embedder: &dyn Embedder) -> Result<()> {
    let mut all = store.all()?;
    let bar = crate::progress::bar(all.len() as u64, "re-embedding");
    let d = embedder.dim();
    for chunk in all.chunks_mut(1024) {
        let texts: Vec<String> = chunk.iter().map(|c| c.text.clone()).collect();
        let v = embedder.embed(Role::Content, &texts)?;
        for (j, c) in chunk.iter_mut().enumerate() {
            c.vector = v[j * d..(j + 1) * d].to_vec();
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    store.apply(&all, &[])?;
    Ok(())
}

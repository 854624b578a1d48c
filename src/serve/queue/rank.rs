//! A rank batch: one embedding call for every text, then one search per language and kind of
//! answer.

use super::{ModelSide, RankJob, RankText, RankedText, Want};
use crate::serve::embedder::Role;
use crate::serve::error::ServeError;
use crate::serve::index::{Hit, Parent, ServedCandidates};
use rayon::prelude::*;

/// Why a rank batch failed.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RankFailure {
    /// The PostgreSQL index mode's search could not reach the store, or the store gave way
    /// (a query cancelled by its timeout): 503 with `Retry-After`; the next batch tries again.
    StoreUnavailable(String),
    /// Anything else (the model, the exact vectors' file, a panic): 500.
    Other(String),
}

impl From<String> for RankFailure {
    fn from(why: String) -> Self {
        RankFailure::Other(why)
    }
}

impl std::fmt::Display for RankFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RankFailure::StoreUnavailable(why) | RankFailure::Other(why) => f.write_str(why),
        }
    }
}

impl RankFailure {
    /// A searching error: the store's own unavailability is told apart from the rest.
    fn searching(e: std::io::Error) -> Self {
        let unavailable = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::store::StoreError>())
            .is_some_and(crate::store::StoreError::is_unavailable);
        if unavailable {
            RankFailure::StoreUnavailable(format!("searching the store: {e}"))
        } else {
            RankFailure::Other(format!("searching the index: {e}"))
        }
    }

    pub(super) fn to_error(&self) -> ServeError {
        match self {
            RankFailure::StoreUnavailable(why) => ServeError::StoreUnavailable(why.clone()),
            RankFailure::Other(why) => {
                ServeError::Internal(anyhow::anyhow!("ranking failed: {why}"))
            }
        }
    }
}

/// What one group (a language and a kind of answer) found, for the texts at `rows`.
enum Found {
    Hits(Vec<usize>, Vec<Vec<Hit>>),
    Candidates(Vec<usize>, Vec<ServedCandidates>),
}

/// One embedding call for every text of the batch (parents after the topics), then per
/// language and per kind of answer one matrix product (the groups in parallel).
pub(super) fn rank_batch(
    model: &ModelSide,
    jobs: &[RankJob],
) -> Result<Vec<RankedText>, RankFailure> {
    let items: Vec<(&RankText, &Want)> = jobs
        .iter()
        .flat_map(|j| j.texts.iter().map(move |t| (t, &j.want)))
        .collect();
    let mut texts: Vec<String> = items.iter().map(|(t, _)| t.text.clone()).collect();
    let mut parent_row = vec![None; items.len()];
    for (i, (t, _)) in items.iter().enumerate() {
        if let Some(p) = &t.parent {
            parent_row[i] = Some(texts.len());
            texts.push(p.text.clone());
        }
    }
    let d = model.embedder.dim();
    let vectors = model
        .embedder
        .embed(Role::Topic, &texts)
        .map_err(|e| RankFailure::Other(format!("{e:#}")))?;
    let vector = |i: usize| &vectors[i * d..(i + 1) * d];
    // Texts grouped by language and by what they want.
    let mut groups: Vec<(&str, &Want, Vec<usize>)> = Vec::new();
    for (i, (t, want)) in items.iter().enumerate() {
        let Some(lang) = t.language.as_deref() else {
            continue;
        };
        if matches!(want, Want::Hits(0)) {
            continue;
        }
        match groups.iter_mut().find(|g| g.0 == lang && g.1 == *want) {
            Some(g) => g.2.push(i),
            None => groups.push((lang, want, vec![i])),
        }
    }
    let mut hits: Vec<Vec<Hit>> = vec![Vec::new(); items.len()];
    let mut candidates: Vec<Option<ServedCandidates>> = (0..items.len()).map(|_| None).collect();
    if !groups.is_empty() {
        let index = model
            .index
            .read()
            .map_err(|_| RankFailure::Other("the index lock is poisoned".into()))?;
        // The groups side by side: a batch of a few topics per language would otherwise leave
        // a core idle through each language's lexical rows and rescoring (each group's own
        // work is parallel too; rayon shares the pool between them).
        let found: Vec<Result<Found, RankFailure>> = groups
            .into_par_iter()
            .map(|(lang, want, rows)| {
                let mut block = Vec::with_capacity(rows.len() * d);
                for &i in &rows {
                    block.extend_from_slice(vector(i));
                }
                let lexical: Option<Vec<&str>> = index.lexical().then(|| {
                    rows.iter()
                        .map(|&i| items[i].0.lexical.as_deref().unwrap_or(&items[i].0.text))
                        .collect()
                });
                Ok(match want {
                    Want::Hits(r) => Found::Hits(
                        rows.clone(),
                        index
                            .search(lang, &block, lexical.as_deref(), *r)
                            .map_err(RankFailure::searching)?,
                    ),
                    Want::Candidates { columns, k } => {
                        let parents: Vec<Option<Parent>> = rows
                            .iter()
                            .map(|&i| {
                                let p = items[i].0.parent.as_ref()?;
                                Some(Parent {
                                    vector: vector(parent_row[i]?),
                                    lexical: Some(p.lexical.as_deref().unwrap_or(&p.text)),
                                })
                            })
                            .collect();
                        Found::Candidates(
                            rows.clone(),
                            index
                                .candidates(lang, &block, lexical.as_deref(), &parents, columns, *k)
                                .map_err(RankFailure::searching)?,
                        )
                    }
                })
            })
            .collect();
        for f in found {
            match f? {
                Found::Hits(rows, found) => {
                    for (i, h) in rows.into_iter().zip(found) {
                        hits[i] = h;
                    }
                }
                Found::Candidates(rows, found) => {
                    for (i, c) in rows.into_iter().zip(found) {
                        candidates[i] = Some(c);
                    }
                }
            }
        }
    }
    Ok(hits
        .into_iter()
        .zip(candidates)
        .enumerate()
        .map(|(i, (hits, candidates))| RankedText {
            vector: vector(i).to_vec(),
            hits,
            candidates,
        })
        .collect())
}

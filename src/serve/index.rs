//! The live content index: one row-major matrix of normalised vectors per language, with the
//! metadata a recommendation returns, and (with `--model lexical`) each language's lexical
//! index ([`super::lexical`]). Ranking a block of topics against a language is one matrix
//! product (plus each topic's lexical row), then the top of each row (the same `top_r` and
//! threshold as `predict`).

use super::lexical::{Fitted, LexRows, Refit, Snapshot};
use crate::kernels::scores::PackedRows;
use crate::rerank::candidates::{from_rows, TopicCandidates};
use crate::select::threshold;
pub use crate::store::ContentMeta;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

/// One language's contents: ids in row order and their vectors, packed for scoring; with
/// lexical retrieval, the lexical index and how current it is.
struct LangMatrix {
    ids: Vec<String>,
    vectors: PackedRows,
    lexical: Option<LexRows>,
    /// Writes to this language so far.
    version: u64,
    /// The version the lexical index was fitted at.
    fitted: Option<u64>,
}

/// A content and its similarity to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub content: String,
    pub similarity: f32,
}

/// A similarity column of the second stage, in the order its reranker was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The model's cosine similarity (the index's vectors).
    Vectors,
    /// The lexical TF-IDF similarity.
    Lexical,
}

/// A topic's parent, for the reranker's parent-similarity features.
pub struct Parent<'a> {
    pub vector: &'a [f32],
    pub lexical: Option<&'a str>,
}

/// A topic's second-stage candidates: candidate `i` of `topic` is content `ids[i]`.
#[derive(Debug)]
pub struct ServedCandidates {
    pub topic: TopicCandidates,
    pub ids: Vec<String>,
}

pub struct Index {
    dim: usize,
    langs: BTreeMap<String, LangMatrix>,
    /// Every stored content (with or without a language).
    meta: HashMap<String, ContentMeta>,
    /// Row of each recommendable content in its language's matrix.
    row: HashMap<String, usize>,
    /// With lexical retrieval: how many models the vectors average (the lexical similarity
    /// is one more member of the mean).
    lexical_with: Option<usize>,
    /// Heap bytes of the ids and metadata ([`heap_bytes`] summed).
    heap: usize,
}

impl Index {
    pub fn new(dim: usize) -> Self {
        Index {
            dim,
            langs: BTreeMap::new(),
            meta: HashMap::new(),
            row: HashMap::new(),
            lexical_with: None,
            heap: 0,
        }
    }

    /// Adds lexical retrieval: the ensemble becomes the mean of `models` models (the vectors
    /// hold their mean) and the lexical similarity, as `predict --model .. --model lexical`.
    pub fn with_lexical(mut self, models: usize) -> Self {
        self.lexical_with = Some(models.max(1));
        self
    }

    /// Whether lexical retrieval is on.
    pub fn lexical(&self) -> bool {
        self.lexical_with.is_some()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn get(&self, id: &str) -> Option<&ContentMeta> {
        self.meta.get(id)
    }

    /// Contents per language (recommendable ones).
    pub fn sizes(&self) -> Vec<(String, usize)> {
        self.langs
            .iter()
            .map(|(l, m)| (l.clone(), m.ids.len()))
            .collect()
    }

    /// Stored contents that have no language yet.
    pub fn without_language(&self) -> usize {
        self.meta.values().filter(|m| m.language.is_none()).count()
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn has_language(&self, lang: &str) -> bool {
        self.langs.get(lang).is_some_and(|m| !m.ids.is_empty())
    }

    /// Adds or replaces a content (a replaced one leaves its old language's matrix).
    pub fn upsert(&mut self, meta: ContentMeta, vector: &[f32]) {
        assert_eq!(vector.len(), self.dim, "vector of the index dimension");
        self.remove(&meta.id);
        if let Some(lang) = &meta.language {
            let d = self.dim;
            let m = self
                .langs
                .entry(lang.clone())
                .or_insert_with(|| LangMatrix {
                    ids: Vec::new(),
                    vectors: PackedRows::new(d),
                    lexical: None,
                    version: 0,
                    fitted: None,
                });
            self.row.insert(meta.id.clone(), m.ids.len());
            m.ids.push(meta.id.clone());
            m.vectors.push(vector);
            m.version += 1;
            if let Some(lx) = &mut m.lexical {
                lx.push_unfitted();
            }
        }
        self.heap += heap_bytes(&meta);
        self.meta.insert(meta.id.clone(), meta);
    }

    /// Gives back the spare capacity of the row-ordered parts (after a bulk load: growing
    /// by doubling leaves up to half of each allocation unused).
    pub fn shrink_to_fit(&mut self) {
        for m in self.langs.values_mut() {
            m.ids.shrink_to_fit();
            m.vectors.shrink_to_fit();
        }
        self.meta.shrink_to_fit();
        self.row.shrink_to_fit();
    }

    /// Whether the index holds exactly this content: the same metadata, and (recommendable)
    /// the same vector.
    pub fn holds(&self, meta: &ContentMeta, vector: &[f32]) -> bool {
        if self.meta.get(&meta.id) != Some(meta) {
            return false;
        }
        match (&meta.language, self.row.get(&meta.id)) {
            (Some(lang), Some(&r)) => self
                .langs
                .get(lang)
                .is_some_and(|m| m.vectors.row(r) == vector),
            (None, None) => true,
            _ => false,
        }
    }

    /// Removes a content; false when it was not there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(old) = self.meta.remove(id) else {
            return false;
        };
        self.heap -= heap_bytes(&old);
        if let (Some(lang), Some(r)) = (old.language, self.row.remove(id)) {
            let m = self
                .langs
                .get_mut(&lang)
                .expect("a row implies its language");
            // Move the last row into the hole.
            let last = m.ids.len() - 1;
            m.ids.swap_remove(r);
            m.vectors.swap_remove(r);
            m.version += 1;
            if let Some(lx) = &mut m.lexical {
                lx.swap_remove(r);
            }
            if r != last {
                self.row.insert(m.ids[r].clone(), r);
            }
        }
        true
    }

    /// The similarity of `v` to a recommendable content (`None`: unknown or no language);
    /// bit-identical to the same pair's value in [`search`](Self::search)'s vector product.
    pub fn similarity(&self, id: &str, v: &[f32]) -> Option<f32> {
        let lang = self.meta.get(id)?.language.as_ref()?;
        let r = *self.row.get(id)?;
        Some(self.langs.get(lang)?.vectors.dot(r, v))
    }

    /// The vector similarities of a block of topics (`m × n`), and with lexical retrieval
    /// their lexical similarities (one text per topic).
    fn columns(
        &self,
        m: &LangMatrix,
        topics: &[f32],
        lexical: Option<&[&str]>,
    ) -> (Vec<f32>, Option<Vec<f32>>) {
        let n_topics = topics.len() / self.dim.max(1);
        let vectors = m.vectors.scores(topics, n_topics);
        let lex = match (self.lexical_with, lexical, &m.lexical) {
            (Some(_), Some(texts), Some(lx)) => {
                use rayon::prelude::*;
                let n = m.ids.len();
                let mut rows = vec![0f32; texts.len() * n];
                rows.par_chunks_mut(n.max(1))
                    .zip(texts.par_iter())
                    .for_each(|(row, t)| lx.scores_into(t, row));
                Some(rows)
            }
            // Lexical retrieval on, but the language was never fitted: nothing scores.
            (Some(_), Some(_), None) => Some(vec![0.0; vectors.len()]),
            _ => None,
        };
        (vectors, lex)
    }

    /// The `r` most similar contents of `lang` for each topic vector (rows of `topics`),
    /// best first; with lexical retrieval, by the ensemble of the vectors and the lexical
    /// similarity of each topic's `lexical` text. One matrix product for the whole block.
    pub fn search(
        &self,
        lang: &str,
        topics: &[f32],
        lexical: Option<&[&str]>,
        r: usize,
    ) -> Vec<Vec<Hit>> {
        let d = self.dim;
        let n_topics = topics.len() / d.max(1);
        let Some(m) = self.langs.get(lang).filter(|m| !m.ids.is_empty()) else {
            return vec![Vec::new(); n_topics];
        };
        let n = m.ids.len();
        let (mut sims, lex) = self.columns(m, topics, lexical);
        if let (Some(models), Some(lex)) = (self.lexical_with, lex) {
            // As `predict`'s ensemble: the members summed, then times 1/members (with one
            // model, `v · 1.0` is `v` to the bit).
            let w = models as f32;
            let inv = 1.0 / (models + 1) as f32;
            for (a, b) in sims.iter_mut().zip(lex) {
                *a = (*a * w + b) * inv;
            }
        }
        sims.chunks(n)
            .map(|row| {
                threshold::top_r(row, r)
                    .into_iter()
                    .map(|(j, s)| Hit {
                        content: m.ids[j as usize].clone(),
                        similarity: s,
                    })
                    .collect()
            })
            .collect()
    }

    /// The second stage's candidates of each topic (rows of `topics`) in `lang`, built as the
    /// batch pipeline builds them: the top `k` of each column of `columns` (and of their mean
    /// when there are several), with ranks, best and k-th similarities, and the similarities
    /// of each topic's parent.
    pub fn candidates(
        &self,
        lang: &str,
        topics: &[f32],
        lexical: Option<&[&str]>,
        parents: &[Option<Parent>],
        columns: &[Column],
        k: usize,
    ) -> Vec<ServedCandidates> {
        let n_topics = topics.len() / self.dim.max(1);
        let empty = || ServedCandidates {
            topic: from_rows(
                0,
                &vec![&[][..]; columns.len().max(1)],
                None,
                columns.len(),
                k,
            ),
            ids: Vec::new(),
        };
        let Some(m) = self.langs.get(lang).filter(|m| !m.ids.is_empty()) else {
            return (0..n_topics).map(|_| empty()).collect();
        };
        let n = m.ids.len();
        let (vectors, lex) = self.columns(m, topics, lexical);
        let n_ret = columns.len();
        (0..n_topics)
            .map(|i| {
                let span = i * n..(i + 1) * n;
                let mut rows: Vec<Vec<f32>> = columns
                    .iter()
                    .map(|c| match c {
                        Column::Vectors => vectors[span.clone()].to_vec(),
                        Column::Lexical => lex
                            .as_ref()
                            .map_or_else(|| vec![0.0; n], |l| l[span.clone()].to_vec()),
                    })
                    .collect();
                if n_ret > 1 {
                    rows.push(mean(&rows));
                }
                let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
                let mut tc = from_rows(0, &refs, None, n_ret, k);
                if let Some(p) = parents.get(i).and_then(Option::as_ref) {
                    let plex = match (p.lexical, &m.lexical) {
                        (Some(t), Some(lx)) if columns.contains(&Column::Lexical) => {
                            Some(lx.scores(t))
                        }
                        _ => None,
                    };
                    for c in &mut tc.candidates {
                        let j = c.content as usize;
                        let mut ps: Vec<f32> = columns
                            .iter()
                            .map(|col| match col {
                                Column::Vectors => m.vectors.dot(j, p.vector),
                                Column::Lexical => plex.as_ref().map_or(0.0, |r| r[j]),
                            })
                            .collect();
                        if n_ret > 1 {
                            let cols: Vec<Vec<f32>> = ps.iter().map(|&v| vec![v]).collect();
                            ps.push(mean(&cols)[0]);
                        }
                        c.parent_sims = ps;
                    }
                }
                let ids = tc
                    .candidates
                    .iter()
                    .map(|c| m.ids[c.content as usize].clone())
                    .collect();
                ServedCandidates { topic: tc, ids }
            })
            .collect()
    }

    /// Languages whose lexical index misses writes (none without lexical retrieval).
    pub fn stale_languages(&self) -> Vec<String> {
        if !self.lexical() {
            return Vec::new();
        }
        self.langs
            .iter()
            .filter(|(_, m)| m.fitted != Some(m.version))
            .map(|(l, _)| l.clone())
            .collect()
    }

    /// A language's contents to fit the lexical index on: ids and lexical texts.
    pub fn snapshot(&self, lang: &str) -> Option<Snapshot> {
        let m = self.langs.get(lang)?;
        let texts = m
            .ids
            .iter()
            .map(|id| {
                let c = &self.meta[id];
                crate::text::content_text_of_short(&c.title, &c.description, &c.short_text)
            })
            .collect();
        Some(Snapshot {
            language: lang.to_string(),
            version: m.version,
            ids: m.ids.clone(),
            texts,
        })
    }

    /// Puts a language's fitted lexical index in place.
    pub fn install(&mut self, snap: Snapshot, fitted: Fitted) {
        let Some(m) = self.langs.get_mut(&snap.language) else {
            return;
        };
        m.lexical = Some(LexRows::new(fitted, &m.ids, snap.version == m.version));
        m.fitted = Some(snap.version);
    }

    /// Bytes the lexical indexes hold.
    pub fn lexical_bytes(&self) -> usize {
        self.langs
            .values()
            .filter_map(|m| m.lexical.as_ref())
            .map(LexRows::memory_bytes)
            .sum()
    }

    /// What the index holds in memory, part by part (allocations, spare capacity included;
    /// hash tables counted by their buckets). Constant time: the heap bytes of the ids and
    /// metadata are counted as contents come and go.
    pub fn memory(&self) -> IndexMemory {
        let table = |cap: usize, entry: usize| cap * (entry + 1);
        let ids: usize = self
            .langs
            .values()
            .map(|m| m.ids.capacity() * std::mem::size_of::<String>())
            .sum();
        IndexMemory {
            vectors: self.langs.values().map(|m| m.vectors.memory_bytes()).sum(),
            lexical: self.lexical_bytes(),
            metadata: table(
                self.meta.capacity(),
                std::mem::size_of::<(String, ContentMeta)>(),
            ) + table(self.row.capacity(), std::mem::size_of::<(String, usize)>())
                + ids
                + self.heap,
        }
    }
}

/// Heap bytes of a content's strings in the index: its metadata, and its id as the key of the
/// metadata table, of the row table and in its language's row order.
fn heap_bytes(m: &ContentMeta) -> usize {
    let keys = if m.language.is_some() { 3 } else { 1 };
    m.id.capacity()
        + m.id.len() * keys
        + m.channel_id.capacity()
        + m.title.capacity()
        + m.description.capacity()
        + m.kind.capacity()
        + m.language.as_ref().map_or(0, String::capacity)
        + m.short_text.capacity()
}

/// Bytes the index holds in memory, by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexMemory {
    /// The packed content vectors.
    pub vectors: usize,
    /// The lexical indexes (with their row maps).
    pub lexical: usize,
    /// Ids, the metadata recommendations return and the row lookup.
    pub metadata: usize,
}

/// The mean of equal-length rows as `predict`'s ensemble computes it: summed in order, then
/// times 1/count.
fn mean(rows: &[Vec<f32>]) -> Vec<f32> {
    let mut acc = rows[0].clone();
    for r in &rows[1..] {
        acc.iter_mut().zip(r).for_each(|(a, b)| *a += b);
    }
    let inv = 1.0 / rows.len() as f32;
    acc.iter_mut().for_each(|v| *v *= inv);
    acc
}

impl Refit for RwLock<Index> {
    fn stale_languages(&self) -> Vec<String> {
        self.read().map(|i| i.stale_languages()).unwrap_or_default()
    }
    fn snapshot(&self, language: &str) -> Option<Snapshot> {
        self.read().ok()?.snapshot(language)
    }
    fn install(&self, snapshot: Snapshot, fitted: Fitted) {
        if let Ok(mut i) = self.write() {
            i.install(snapshot, fitted);
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;

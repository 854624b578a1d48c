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
}

impl Index {
    pub fn new(dim: usize) -> Self {
        Index {
            dim,
            langs: BTreeMap::new(),
            meta: HashMap::new(),
            row: HashMap::new(),
            lexical_with: None,
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
        self.meta.insert(meta.id.clone(), meta);
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
mod tests {
    use super::*;

    fn meta(id: &str, lang: Option<&str>) -> ContentMeta {
        ContentMeta {
            id: id.into(),
            channel_id: "c".into(),
            title: id.into(),
            description: String::new(),
            kind: "video".into(),
            language: lang.map(str::to_string),
            short_text: String::new(),
        }
    }

    #[test]
    fn upsert_replace_remove_keep_rows_consistent() {
        let mut ix = Index::new(2);
        ix.upsert(meta("a", Some("en")), &[1.0, 0.0]);
        ix.upsert(meta("b", Some("en")), &[0.0, 1.0]);
        ix.upsert(meta("c", Some("en")), &[0.6, 0.8]);
        ix.upsert(meta("x", None), &[1.0, 0.0]);
        assert_eq!(ix.sizes(), vec![("en".to_string(), 3)]);
        assert_eq!(ix.without_language(), 1);
        let hits = &ix.search("en", &[1.0, 0.0], None, 3)[0];
        let ids: Vec<&str> = hits.iter().map(|h| h.content.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        // Removing the first row moves the last into its place; search still finds the rest.
        assert!(ix.holds(&meta("a", Some("en")), &[1.0, 0.0]));
        assert!(!ix.holds(&meta("a", Some("en")), &[0.0, 1.0]));
        assert!(!ix.holds(&meta("a", Some("es")), &[1.0, 0.0]));
        assert!(ix.holds(&meta("x", None), &[0.0, 0.0]));
        assert!(ix.remove("a"));
        assert!(!ix.remove("a"));
        assert!(!ix.holds(&meta("a", Some("en")), &[1.0, 0.0]));
        let hits = &ix.search("en", &[1.0, 0.0], None, 3)[0];
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].content, "c");
        assert!((hits[0].similarity - 0.6).abs() < 1e-6);
        // Replacing moves a content to another language; the language-less one gets one.
        ix.upsert(meta("c", Some("es")), &[0.6, 0.8]);
        ix.upsert(meta("x", Some("es")), &[0.0, 1.0]);
        assert_eq!(
            ix.sizes(),
            vec![("en".to_string(), 1), ("es".to_string(), 2)]
        );
        assert_eq!(ix.without_language(), 0);
        let hits = &ix.search("es", &[0.0, 1.0, 1.0, 0.0], None, 1);
        assert_eq!(hits[0][0].content, "x");
        assert_eq!(hits[1][0].content, "c");
        assert!(ix.search("fr", &[1.0, 0.0], None, 5)[0].is_empty());
    }

    /// Contents with texts (their titles) and 2-d vectors, lexical retrieval on.
    fn lexical_index(items: &[(&str, &str, [f32; 2])]) -> Index {
        let mut ix = Index::new(2).with_lexical(1);
        for (id, title, v) in items {
            let mut m = meta(id, Some("en"));
            m.title = title.to_string();
            ix.upsert(m, v);
        }
        ix
    }

    fn refit(ix: Index) -> Index {
        let lock = RwLock::new(ix);
        crate::serve::lexical::refit_stale(&lock, false);
        lock.into_inner().unwrap()
    }

    /// What `predict` computes for the same contents: (vector + lexical) × ½.
    fn batch_ensemble(texts: &[&str], vectors: &[[f32; 2]], topic: &str, tv: [f32; 2]) -> Vec<f32> {
        let full: Vec<String> = texts
            .iter()
            .map(|t| crate::text::content_text_of_short(t, "", ""))
            .collect();
        let lex = crate::select::lexical::LexicalIndex::fit(&full).scores(topic);
        let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
        let v = PackedRows::from_rows(&flat, 2).scores(&tv, 1);
        v.iter().zip(&lex).map(|(a, b)| (a + b) * 0.5).collect()
    }

    #[test]
    fn the_lexical_ensemble_equals_the_batch_and_follows_writes_after_a_refit() {
        let items = [
            ("a", "adding fractions", [0.6, 0.8]),
            ("b", "volcano eruptions", [1.0, 0.0]),
            ("c", "fractional parts of shapes", [0.0, 1.0]),
            ("d", "eruptions of ideas", [0.8, 0.6]),
        ];
        let ix = lexical_index(&items);
        assert_eq!(ix.stale_languages(), vec!["en".to_string()]);
        let ix = refit(ix);
        assert!(ix.stale_languages().is_empty());
        assert!(ix.lexical_bytes() > 0);
        let topic = "fractions # arithmetic # ";
        let tv = [0.6f32, 0.8];
        let texts: Vec<&str> = items.iter().map(|x| x.1).collect();
        let vecs: Vec<[f32; 2]> = items.iter().map(|x| x.2).collect();
        let want = batch_ensemble(&texts, &vecs, topic, tv);
        let hits = &ix.search("en", &tv, Some(&[topic]), 4)[0];
        assert_eq!(hits[0].content, "a");
        for h in hits {
            let k = items.iter().position(|x| x.0 == h.content).unwrap();
            assert_eq!(h.similarity.to_bits(), want[k].to_bits(), "{}", h.content);
        }
        // Without lexical texts the same index ranks by the vectors alone.
        let plain = &ix.search("en", &tv, None, 4)[0];
        assert_eq!(plain[0].similarity, 1.0);
        // A removal moves the last row into the hole: every other content keeps its score.
        let mut ix = ix;
        ix.remove("a");
        assert_eq!(ix.stale_languages(), vec!["en".to_string()]);
        let stale = &ix.search("en", &tv, Some(&[topic]), 4)[0];
        for h in stale {
            let k = items.iter().position(|x| x.0 == h.content).unwrap();
            assert_eq!(h.similarity.to_bits(), want[k].to_bits(), "{}", h.content);
        }
        // A new content scores by its vector alone until the refit; then all equal a fresh fit.
        let mut e = meta("e", Some("en"));
        e.title = "fractions".into();
        ix.upsert(e, &[0.6, 0.8]);
        let before = &ix.search("en", &tv, Some(&[topic]), 4)[0];
        let e_before = before.iter().find(|h| h.content == "e").unwrap().similarity;
        assert_eq!(e_before, 0.5);
        let ix = refit(ix);
        let items2 = [items[1], items[2], items[3], ("e", "fractions", [0.6, 0.8])];
        let texts: Vec<&str> = items2.iter().map(|x| x.1).collect();
        let vecs: Vec<[f32; 2]> = items2.iter().map(|x| x.2).collect();
        let want = batch_ensemble(&texts, &vecs, topic, tv);
        let after = &ix.search("en", &tv, Some(&[topic]), 4)[0];
        assert_eq!(after[0].content, "e");
        assert!(after[0].similarity > e_before);
        for h in after {
            let k = items2.iter().position(|x| x.0 == h.content).unwrap();
            assert_eq!(h.similarity.to_bits(), want[k].to_bits(), "{}", h.content);
        }
    }

    #[test]
    fn candidates_carry_every_column_and_the_parent_similarities() {
        let ix = refit(lexical_index(&[
            ("a", "adding fractions", [0.6, 0.8]),
            ("b", "volcano eruptions", [1.0, 0.0]),
            ("c", "fractional parts", [0.0, 1.0]),
        ]));
        let topic = "fractions # ";
        let parent = "volcano # ";
        let cols = [Column::Vectors, Column::Lexical];
        let p = Parent {
            vector: &[1.0, 0.0],
            lexical: Some(parent),
        };
        let out = ix.candidates("en", &[0.0, 1.0], Some(&[topic]), &[Some(p)], &cols, 1);
        let c = &out[0];
        // The top 1 of each column and of the mean: c (vectors), a (lexical).
        assert!(c.ids.contains(&"c".to_string()) && c.ids.contains(&"a".to_string()));
        let lex = ix.langs["en"].lexical.as_ref().unwrap().scores(topic);
        let plex = ix.langs["en"].lexical.as_ref().unwrap().scores(parent);
        for (cand, id) in c.topic.candidates.iter().zip(&c.ids) {
            let r = ix.row[id];
            assert_eq!(cand.content as usize, r);
            assert_eq!(cand.sims.len(), 3);
            assert_eq!(cand.sims[1], lex[r]);
            assert_eq!(cand.sims[2], (cand.sims[0] + cand.sims[1]) * 0.5);
            assert_eq!(cand.parent_sims[0], ix.similarity(id, &[1.0, 0.0]).unwrap());
            assert_eq!(cand.parent_sims[1], plex[r]);
        }
        assert_eq!(c.topic.best.len(), 3);
        // No parent: NaN parent similarities; an unknown language: no candidates.
        let out = ix.candidates("en", &[0.0, 1.0], Some(&[topic]), &[None], &cols, 1);
        assert!(out[0].topic.candidates[0].parent_sims[0].is_nan());
        assert!(
            ix.candidates("fr", &[0.0, 1.0], Some(&[topic]), &[None], &cols, 1)[0]
                .ids
                .is_empty()
        );
    }
}

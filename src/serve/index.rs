//! The live content index: one row-major matrix of normalised vectors per language, with the
//! metadata a recommendation returns. Ranking a block of topics against a language is one
//! matrix product, then the top of each row (the same `top_r` and threshold as `predict`).

use crate::kernels::scores::PackedRows;
use crate::select::threshold;
pub use crate::store::ContentMeta;
use std::collections::{BTreeMap, HashMap};

/// One language's contents: ids in row order and their vectors, packed for scoring.
struct LangMatrix {
    ids: Vec<String>,
    vectors: PackedRows,
}

/// A content and its similarity to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub content: String,
    pub similarity: f32,
}

pub struct Index {
    dim: usize,
    langs: BTreeMap<String, LangMatrix>,
    /// Every stored content (with or without a language).
    meta: HashMap<String, ContentMeta>,
    /// Row of each recommendable content in its language's matrix.
    row: HashMap<String, usize>,
}

impl Index {
    pub fn new(dim: usize) -> Self {
        Index {
            dim,
            langs: BTreeMap::new(),
            meta: HashMap::new(),
            row: HashMap::new(),
        }
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
                });
            self.row.insert(meta.id.clone(), m.ids.len());
            m.ids.push(meta.id.clone());
            m.vectors.push(vector);
        }
        self.meta.insert(meta.id.clone(), meta);
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
            if r != last {
                self.row.insert(m.ids[r].clone(), r);
            }
        }
        true
    }

    /// The similarity of `v` to a recommendable content (`None`: unknown or no language).
    pub fn similarity(&self, id: &str, v: &[f32]) -> Option<f32> {
        let lang = self.meta.get(id)?.language.as_ref()?;
        let r = *self.row.get(id)?;
        let row = self.langs.get(lang)?.vectors.row(r);
        Some(row.iter().zip(v).map(|(a, b)| a * b).sum())
    }

    /// The `r` most similar contents of `lang` for each topic vector (rows of `topics`),
    /// best first. One matrix product for the whole block.
    pub fn search(&self, lang: &str, topics: &[f32], r: usize) -> Vec<Vec<Hit>> {
        let d = self.dim;
        let n_topics = topics.len() / d.max(1);
        let Some(m) = self.langs.get(lang).filter(|m| !m.ids.is_empty()) else {
            return vec![Vec::new(); n_topics];
        };
        let n = m.ids.len();
        let sims = m.vectors.scores(topics, n_topics);
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
        let hits = &ix.search("en", &[1.0, 0.0], 3)[0];
        let ids: Vec<&str> = hits.iter().map(|h| h.content.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        // Removing the first row moves the last into its place; search still finds the rest.
        assert!(ix.remove("a"));
        assert!(!ix.remove("a"));
        let hits = &ix.search("en", &[1.0, 0.0], 3)[0];
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
        let hits = &ix.search("es", &[0.0, 1.0, 1.0, 0.0], 1);
        assert_eq!(hits[0][0].content, "x");
        assert_eq!(hits[1][0].content, "c");
        assert!(ix.search("fr", &[1.0, 0.0], 5)[0].is_empty());
    }
}

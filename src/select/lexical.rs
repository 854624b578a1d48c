//! The lexical baseline: character n-gram TF-IDF cosine within each language (the first
//! place's candidate generator). Needs no weights; the yardstick neural models must beat.
//!
//! Features are hashed 3- to 5-grams of each lower-cased word padded with spaces; IDF is fitted
//! on the contents of the language being scored; n-grams in more than half of the contents
//! are dropped (they carry no signal and make the postings lists long); tf is sublinear.

use super::similarity::{BlockScorer, Similarity};
use anyhow::Result;
use rayon::prelude::*;
use std::collections::HashMap;

pub struct LexicalSim {
    pub topic_texts: Vec<String>,
    pub content_texts: Vec<String>,
}

const MIN_N: usize = 3;
const MAX_N: usize = 5;

/// Hashed n-gram counts of a text.
fn ngrams(text: &str) -> HashMap<u64, f32> {
    let mut out = HashMap::new();
    let lower = text.to_lowercase();
    for word in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let chars: Vec<char> = std::iter::once(' ')
            .chain(word.chars())
            .chain(std::iter::once(' '))
            .collect();
        for n in MIN_N..=MAX_N {
            if chars.len() < n {
                break;
            }
            for w in chars.windows(n) {
                // FNV-1a over the code points.
                let mut h: u64 = 0xcbf29ce484222325 ^ n as u64;
                for &c in w {
                    h = (h ^ c as u64).wrapping_mul(0x100000001b3);
                }
                *out.entry(h).or_insert(0.0) += 1.0;
            }
        }
    }
    out
}

/// A fitted TF-IDF index over one set of contents (one language): feature ids and idf, and
/// the postings of each feature. Built once, then scores any number of topic texts. The batch
/// pipeline builds one per language and ranking; the service keeps one per language and
/// rebuilds it when its contents change.
pub struct LexicalIndex {
    idf: HashMap<u64, (u32, f32)>,
    /// Postings per feature id: (content position, weight).
    postings: Vec<Vec<(u32, f32)>>,
    n: usize,
}

/// Sublinear tf × idf, L2-normalised, over the known features.
fn weigh(counts: HashMap<u64, f32>, idf: &HashMap<u64, (u32, f32)>) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = counts
        .into_iter()
        .filter_map(|(h, tf)| idf.get(&h).map(|&(id, w)| (id, (1.0 + tf.ln()) * w)))
        .collect();
    v.sort_unstable_by_key(|x| x.0);
    let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|(_, w)| *w /= norm);
    }
    v
}

impl LexicalIndex {
    /// Fits the index on contents' texts (positions are the slice's order).
    pub fn fit<S: AsRef<str> + Sync>(texts: &[S]) -> LexicalIndex {
        let counts: Vec<HashMap<u64, f32>> = texts.par_iter().map(|t| ngrams(t.as_ref())).collect();
        Self::from_counts(counts)
    }

    fn from_counts(counts: Vec<HashMap<u64, f32>>) -> LexicalIndex {
        let mut df: HashMap<u64, u32> = HashMap::new();
        for c in &counts {
            for h in c.keys() {
                *df.entry(*h).or_insert(0) += 1;
            }
        }
        let n = counts.len();
        let max_df = if n >= 20 { n / 2 } else { n };
        // Ids in hash order and weights summed in id order: the same texts give the same
        // scores to the last bit on every run and in any order of the contents (HashMap
        // iteration order is random; a content's position changes only where its score goes).
        let mut df: Vec<(u64, u32)> = df.into_iter().collect();
        df.sort_unstable();
        let mut idf = HashMap::new();
        for (h, d) in df {
            if (d as usize) <= max_df {
                let id = idf.len() as u32;
                idf.insert(h, (id, ((1.0 + n as f32) / (1.0 + d as f32)).ln() + 1.0));
            }
        }
        let mut postings = vec![Vec::new(); idf.len()];
        let vecs: Vec<Vec<(u32, f32)>> = counts.into_par_iter().map(|c| weigh(c, &idf)).collect();
        for (pos, v) in vecs.into_iter().enumerate() {
            for (id, w) in v {
                postings[id as usize].push((pos as u32, w));
            }
        }
        postings.iter_mut().for_each(|p| p.shrink_to_fit());
        LexicalIndex { idf, postings, n }
    }

    /// Contents it was fitted on.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Adds `text`'s similarity to every content into `row` (one value per content position).
    pub fn add_scores(&self, text: &str, row: &mut [f32]) {
        assert_eq!(row.len(), self.n, "a row of the index's contents");
        for (id, w) in weigh(ngrams(text), &self.idf) {
            for &(c, wc) in &self.postings[id as usize] {
                row[c as usize] += w * wc;
            }
        }
    }

    /// `text`'s similarity to every content, by position.
    pub fn scores(&self, text: &str) -> Vec<f32> {
        let mut row = vec![0f32; self.n];
        self.add_scores(text, &mut row);
        row
    }

    /// Bytes held (feature table and postings; approximate for the hash table).
    pub fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, (u32, f32))>() + 1;
        let table = self.idf.capacity() * entry;
        let lists = self.postings.capacity() * std::mem::size_of::<Vec<(u32, f32)>>();
        let postings: usize = self.postings.iter().map(|p| p.capacity() * 8).sum();
        table + lists + postings
    }
}

struct LexicalBlock<'a> {
    sim: &'a LexicalSim,
    index: LexicalIndex,
}

impl Similarity for LexicalSim {
    fn name(&self) -> String {
        "lexical".into()
    }
    fn against<'a>(&'a self, contents: &[usize]) -> Result<Box<dyn BlockScorer + 'a>> {
        let texts: Vec<&str> = contents
            .iter()
            .map(|&c| self.content_texts[c].as_str())
            .collect();
        Ok(Box::new(LexicalBlock {
            sim: self,
            index: LexicalIndex::fit(&texts),
        }))
    }
}

impl BlockScorer for LexicalBlock<'_> {
    fn block(&self, topics: &[usize]) -> Result<Vec<f32>> {
        let n = self.index.len();
        let mut out = vec![0f32; topics.len() * n];
        out.par_chunks_mut(n.max(1))
            .zip(topics.par_iter())
            .for_each(|(row, &t)| self.index.add_scores(&self.sim.topic_texts[t], row));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_ngrams_score_higher_and_identical_texts_score_one() {
        let sim = LexicalSim {
            topic_texts: vec!["adding fractions".into()],
            content_texts: vec![
                "adding fractions".into(),
                "fractional addition".into(),
                "volcano eruptions".into(),
            ],
        };
        let b = sim.against(&[0, 1, 2]).unwrap();
        let s = b.block(&[0]).unwrap();
        assert!((s[0] - 1.0).abs() < 1e-5, "{s:?}");
        assert!(s[1] > s[2], "{s:?}");
        assert!(s[2] >= 0.0 && s[1] < 1.0);
    }
}

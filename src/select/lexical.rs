//! The lexical baseline: character n-gram TF-IDF cosine within each language (the first
//! place's candidate generator). Needs no weights; the yardstick neural models must beat.
//!
//! Features are hashed 3- to 5-grams of each lower-cased word padded with spaces; IDF is fitted
//! on the contents of the language being scored; n-grams in more than half of the contents
//! are dropped (they carry no signal and make the postings lists long); tf is sublinear.

use super::similarity::{BlockScorer, Similarity};
use anyhow::Result;
use rayon::prelude::*;
use std::collections::HashMap as StdHashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Maps keyed by n-gram hashes: they are hashes already, so the map only mixes them (the
/// murmur3 finaliser) instead of running SipHash over them, a fifth of a fit's time.
type HashMap<K, V> = StdHashMap<K, V, BuildHasherDefault<Mix>>;

#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

pub struct LexicalSim {
    pub topic_texts: Vec<String>,
    pub content_texts: Vec<String>,
}

const MIN_N: usize = 3;
/// Texts a fit holds the n-gram counts of at once.
const FIT_SLICE: usize = 4096;
const MAX_N: usize = 5;

/// Hashed n-gram counts of a text.
fn ngrams(text: &str) -> HashMap<u64, f32> {
    let lower = text.to_lowercase();
    // Distinct n-grams are about one per byte of a typical text.
    let mut out = HashMap::with_capacity_and_hasher(lower.len(), Default::default());
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

/// A fitted TF-IDF index over one set of contents (one language): the known features (sorted
/// hashes; a feature's id is its position) with their idf, and each feature's postings. Built
/// once, then scores any number of topic texts. The batch pipeline builds one per language
/// and ranking; the service keeps one per language and refits it when its contents change.
///
/// Postings are one flat array with offsets per feature (not a vector per feature): most
/// n-grams occur in one or two contents, and a vector each would cost more in headers and
/// allocations than in postings.
pub struct LexicalIndex {
    /// Hashes of the known features, ascending.
    hashes: Vec<u64>,
    idf: Vec<f32>,
    /// Feature `f`'s postings are `postings[offsets[f]..offsets[f + 1]]`.
    offsets: Vec<u32>,
    /// (content position, weight), positions ascending within a feature.
    postings: Vec<(u32, f32)>,
    n: usize,
}

/// How a fit runs: over rayon's pool, or on the calling thread only (a background refit
/// that must not compete with requests for the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Pool,
    Caller,
}

impl LexicalIndex {
    /// Fits the index on contents' texts (positions are the slice's order).
    pub fn fit<S: AsRef<str> + Sync>(texts: &[S]) -> LexicalIndex {
        Self::fit_with(texts, Threads::Pool)
    }

    /// [`fit`](Self::fit), with the work where `threads` says. Two passes over the texts, a
    /// slice at a time (document frequencies, then weights straight into the postings), so
    /// the n-gram counts of a whole language are never held at once: they would take more
    /// memory than the index itself.
    pub fn fit_with<S: AsRef<str> + Sync>(texts: &[S], threads: Threads) -> LexicalIndex {
        let counts = |part: &[S]| -> Vec<HashMap<u64, f32>> {
            match threads {
                Threads::Pool => part.par_iter().map(|t| ngrams(t.as_ref())).collect(),
                Threads::Caller => part.iter().map(|t| ngrams(t.as_ref())).collect(),
            }
        };
        let mut df: HashMap<u64, u32> = HashMap::default();
        for part in texts.chunks(FIT_SLICE) {
            for c in counts(part) {
                for h in c.into_keys() {
                    *df.entry(h).or_insert(0) += 1;
                }
            }
        }
        let n = texts.len();
        let max_df = if n >= 20 { n / 2 } else { n };
        // Ids in hash order and weights summed in id order: the same texts give the same
        // scores to the last bit on every run and in any order of the contents (HashMap
        // iteration order is random; a content's position changes only where its score goes).
        let mut known: Vec<(u64, u32)> = df
            .into_iter()
            .filter(|&(_, d)| (d as usize) <= max_df)
            .collect();
        known.sort_unstable();
        let hashes: Vec<u64> = known.iter().map(|k| k.0).collect();
        let idf: Vec<f32> = known
            .iter()
            .map(|&(_, d)| ((1.0 + n as f32) / (1.0 + d as f32)).ln() + 1.0)
            .collect();
        let mut offsets = Vec::with_capacity(known.len() + 1);
        let mut total = 0u32;
        offsets.push(0);
        for &(_, d) in &known {
            total += d;
            offsets.push(total);
        }
        drop(known);
        // A hash table for the fit's many lookups (the sorted hashes answer queries).
        let ids: HashMap<u64, u32> = hashes
            .iter()
            .enumerate()
            .map(|(i, &h)| (h, i as u32))
            .collect();
        let weigh_all = |c: HashMap<u64, f32>| weigh(c, |h| ids.get(&h).copied(), &idf);
        let mut postings = vec![(0u32, 0f32); total as usize];
        let mut next: Vec<u32> = offsets[..offsets.len() - 1].to_vec();
        for (k, part) in texts.chunks(FIT_SLICE).enumerate() {
            let vecs: Vec<Vec<(u32, f32)>> = match threads {
                Threads::Pool => counts(part).into_par_iter().map(weigh_all).collect(),
                Threads::Caller => counts(part).into_iter().map(weigh_all).collect(),
            };
            for (i, v) in vecs.into_iter().enumerate() {
                let pos = (k * FIT_SLICE + i) as u32;
                for (id, w) in v {
                    let at = &mut next[id as usize];
                    postings[*at as usize] = (pos, w);
                    *at += 1;
                }
            }
        }
        LexicalIndex {
            hashes,
            idf,
            offsets,
            postings,
            n,
        }
    }

    /// Contents it was fitted on.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// `text`'s weighted known features, by id.
    fn query(&self, text: &str) -> Vec<(u32, f32)> {
        let lookup = |h| self.hashes.binary_search(&h).ok().map(|i| i as u32);
        weigh(ngrams(text), lookup, &self.idf)
    }

    fn postings(&self, id: u32) -> &[(u32, f32)] {
        let f = id as usize;
        &self.postings[self.offsets[f] as usize..self.offsets[f + 1] as usize]
    }

    /// Adds `text`'s similarity to every content into `row` (one value per content position).
    pub fn add_scores(&self, text: &str, row: &mut [f32]) {
        assert_eq!(row.len(), self.n, "a row of the index's contents");
        for (id, w) in self.query(text) {
            for &(c, wc) in self.postings(id) {
                row[c as usize] += w * wc;
            }
        }
    }

    /// Adds `text`'s similarity to every content into `row` at the slot `slot[position]` of
    /// each content (`u32::MAX`: nowhere). The same sums in the same order as
    /// [`add_scores`](Self::add_scores), so each value is equal to the bit.
    pub fn add_scores_at(&self, text: &str, slot: &[u32], row: &mut [f32]) {
        assert_eq!(slot.len(), self.n, "a slot per content");
        for (id, w) in self.query(text) {
            for &(c, wc) in self.postings(id) {
                let r = slot[c as usize];
                if r != u32::MAX {
                    row[r as usize] += w * wc;
                }
            }
        }
    }

    /// `text`'s similarity to every content, by position.
    pub fn scores(&self, text: &str) -> Vec<f32> {
        let mut row = vec![0f32; self.n];
        self.add_scores(text, &mut row);
        row
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.hashes.capacity() * 8
            + self.idf.capacity() * 4
            + self.offsets.capacity() * 4
            + self.postings.capacity() * 8
    }
}

/// Sublinear tf × idf, L2-normalised, over the known features (`id` finds a hash's id).
fn weigh(
    counts: HashMap<u64, f32>,
    id: impl Fn(u64) -> Option<u32>,
    idf: &[f32],
) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = counts
        .into_iter()
        .filter_map(|(h, tf)| {
            let i = id(h)?;
            Some((i, (1.0 + tf.ln()) * idf[i as usize]))
        })
        .collect();
    v.sort_unstable_by_key(|x| x.0);
    let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|(_, w)| *w /= norm);
    }
    v
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

    #[test]
    fn scores_do_not_depend_on_content_order_threads_or_slots() {
        let texts = [
            "adding fractions # numbers # halves and quarters",
            "fractional addition # sums",
            "volcano eruptions # lava",
            "eruptions and earthquakes",
            "adding and subtracting # numbers",
        ];
        let topic = "adding fractions # arithmetic # ";
        let a = LexicalIndex::fit(&texts);
        let order = [3usize, 0, 4, 2, 1];
        let shuffled: Vec<&str> = order.iter().map(|&i| texts[i]).collect();
        let b = LexicalIndex::fit_with(&shuffled, Threads::Caller);
        let (sa, sb) = (a.scores(topic), b.scores(topic));
        for (k, &i) in order.iter().enumerate() {
            assert_eq!(sa[i].to_bits(), sb[k].to_bits(), "content {i}");
        }
        // Into slots: position p's score lands at slot[p]; NOWHERE drops it.
        let slot = [2u32, u32::MAX, 0, 1, 3];
        let mut row = vec![0f32; 4];
        a.add_scores_at(topic, &slot, &mut row);
        for (p, &r) in slot.iter().enumerate() {
            if r != u32::MAX {
                assert_eq!(row[r as usize].to_bits(), sa[p].to_bits());
            }
        }
        assert!(a.memory_bytes() > 0 && a.len() == 5);
    }

    #[test]
    fn a_fit_over_several_slices_puts_each_content_at_its_position() {
        let texts: Vec<String> = (0..FIT_SLICE + 900)
            .map(|i| format!("w{i}x common words"))
            .collect();
        let ix = LexicalIndex::fit(&texts);
        for at in [3, FIT_SLICE - 1, FIT_SLICE, FIT_SLICE + 899] {
            let s = ix.scores(&texts[at]);
            let best = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
            assert_eq!(best, at);
            assert!((s[at] - 1.0).abs() < 1e-5, "{}", s[at]);
        }
    }
}

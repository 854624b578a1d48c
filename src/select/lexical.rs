//! The lexical baseline: character n-gram TF-IDF cosine within each language (the first
//! place's candidate generator). Needs no weights; the yardstick neural models must beat.
//!
//! Features are hashed 3- to 5-grams of each lower-cased word padded with spaces; IDF is fitted
//! on the contents of the language being scored; common n-grams are dropped ([`max_df`]: in
//! a large language, those in more than 5% of its contents): they carry little signal and
//! make up nearly all of the postings a query reads; tf is sublinear.

use super::postings::{self, log_count, Sizer, Writer};
use super::similarity::{BlockScorer, Similarity};
use anyhow::Result;
use bitpacking::{BitPacker, BitPacker4x};
use rayon::prelude::*;
use std::collections::HashMap as StdHashMap;
use std::hash::{BuildHasherDefault, Hasher};

mod form;
use form::Held;

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

/// Share of a language's contents above which an n-gram is dropped from its fit.
///
/// Char n-grams are Zipfian: on the generated corpus at 660,000 contents (one language), the
/// n-grams in more than 5% of the contents were 37–67% of a topic's n-grams but 92–98% of the
/// postings its row reads. Dropping them (the limit was half of the contents before) made a
/// topic's row read 13–40 times fewer postings and raised held-out F2 (README, "Ranking at
/// 10×").
pub const MAX_DF_SHARE: f64 = 0.05;
/// An n-gram in at most this many contents is kept in a language of any size (but never
/// one in more than half of them): a small language keeps the n-grams it needs to match at
/// all, and at this size the lists cost nothing.
pub const MAX_DF_FLOOR: usize = 100;
/// What decides which features a fit keeps, in words (a saved fit made under another rule
/// is fitted again: see `serve::lexical_saved`).
pub fn fit_rule() -> String {
    format!("{MIN_N}- to {MAX_N}-grams; max_df = max({MAX_DF_SHARE} n, min(n / 2, {MAX_DF_FLOOR}))")
}

/// The most contents of `n` an n-gram may occur in and still be a feature of their fit.
pub fn max_df(n: usize) -> usize {
    if n < 20 {
        return n;
    }
    ((n as f64 * MAX_DF_SHARE) as usize).max((n / 2).min(MAX_DF_FLOOR))
}

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
/// hashes; a feature's id is its position) and each feature's postings, compressed. Built
/// once, then scores any number of topic texts. The batch pipeline builds one per language
/// and ranking; the service keeps one per language and refits it when its contents change.
///
/// **Compact.** A posting is not stored as its weight but as what the weight is computed from:
/// the content's position and the n-gram's count in it, compressed ([`postings`]: gaps
/// bit-packed in blocks of 128, short lists as varints), about 1.5 bytes where a (position,
/// f32 weight) pair took 8. A feature's document frequency heads its list (its idf follows
/// from it), and each content's L2 norm is kept once. A query sums `(w · idf) · (1 + ln tf)`
/// per content and divides each sum by the content's norm once; the cosine is the same up to
/// f32 rounding (a few units in the last place) as weights stored per posting would give,
/// and every caller (`eval`, `predict`, the service) runs this same code, so they agree to
/// the bit.
///
/// Postings are one flat byte array with offsets per feature (not a vector per feature): most
/// n-grams occur in one or two contents, and a vector each would cost more in headers and
/// allocations than in postings.
pub struct LexicalIndex {
    /// Hashes of the known features, ascending.
    hashes: Held<u64>,
    /// Feature `f`'s list is `postings[offsets[f]..offsets[f + 1]]` ([`postings`]' format:
    /// its length, which is the feature's document frequency, then its postings).
    offsets: Held<u64>,
    postings: Held<u8>,
    packer: BitPacker4x,
    /// Each content's L2 norm of its weights (1 for a content with no known feature).
    norms: Held<f32>,
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
    /// slice at a time (document frequencies and list sizes, then the lists written straight
    /// into place), so the n-gram counts of a whole language are never held at once: they
    /// would take more memory than the index itself.
    pub fn fit_with<S: AsRef<str> + Sync>(texts: &[S], threads: Threads) -> LexicalIndex {
        let counts = |part: &[S]| -> Vec<HashMap<u64, f32>> {
            match threads {
                Threads::Pool => part.par_iter().map(|t| ngrams(t.as_ref())).collect(),
                Threads::Caller => part.iter().map(|t| ngrams(t.as_ref())).collect(),
            }
        };
        let mut seen: HashMap<u64, Sizer> = HashMap::default();
        for (k, part) in texts.chunks(FIT_SLICE).enumerate() {
            for (i, c) in counts(part).into_iter().enumerate() {
                let pos = (k * FIT_SLICE + i) as u32;
                for (h, tf) in c {
                    seen.entry(h).or_default().add(pos, tf as u32);
                }
            }
        }
        let n = texts.len();
        let max_df = max_df(n);
        // Ids in hash order and weights summed in id order: the same texts give the same
        // scores to the last bit on every run and in any order of the contents (HashMap
        // iteration order is random; a content's position changes only where its score goes).
        let mut known: Vec<(u64, Sizer)> = seen
            .into_iter()
            .filter(|(_, s)| (s.postings() as usize) <= max_df)
            .collect();
        known.sort_unstable_by_key(|k| k.0);
        let hashes: Vec<u64> = known.iter().map(|k| k.0).collect();
        let idf: Vec<f32> = known.iter().map(|(_, s)| idf_of(n, s.postings())).collect();
        let lens: Vec<u32> = known.iter().map(|(_, s)| s.postings()).collect();
        let mut offsets = Vec::with_capacity(known.len() + 1);
        offsets.push(0u64);
        for (_, s) in &known {
            offsets.push(offsets[offsets.len() - 1] + s.bytes());
        }
        drop(known);
        let mut postings = vec![0u8; offsets[offsets.len() - 1] as usize];
        let mut writer = Writer::new(&mut postings, &offsets, &lens);
        drop(lens);
        // A hash table for the fit's many lookups (the sorted hashes answer queries).
        let ids: HashMap<u64, u32> = hashes
            .iter()
            .enumerate()
            .map(|(i, &h)| (h, i as u32))
            .collect();
        let known_counts =
            |c: HashMap<u64, f32>| counted(c, |h| ids.get(&h).copied(), |f| idf[f as usize]);
        let mut norms = vec![0f32; n];
        for (k, part) in texts.chunks(FIT_SLICE).enumerate() {
            let vecs: Vec<(Vec<(u32, u32)>, f32)> = match threads {
                Threads::Pool => counts(part).into_par_iter().map(known_counts).collect(),
                Threads::Caller => counts(part).into_iter().map(known_counts).collect(),
            };
            for (i, (v, norm)) in vecs.into_iter().enumerate() {
                let pos = k * FIT_SLICE + i;
                // A content without known features has no postings: its sums stay 0, and
                // dividing them by 1 keeps them so (no branch in the division loop).
                norms[pos] = if norm > 0.0 { norm } else { 1.0 };
                for (id, tf) in v {
                    writer.add(&mut postings, id as usize, pos as u32, tf);
                }
            }
        }
        debug_assert!(writer.complete(&offsets), "every list filled to its size");
        LexicalIndex {
            hashes: hashes.into(),
            offsets: offsets.into(),
            postings: postings.into(),
            packer: BitPacker4x::new(),
            norms: norms.into(),
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

    /// Feature `f`'s list.
    fn list(&self, f: u32) -> &[u8] {
        let f = f as usize;
        &self.postings[self.offsets[f] as usize..self.offsets[f + 1] as usize]
    }

    fn idf(&self, f: u32) -> f32 {
        idf_of(self.n, postings::len(self.list(f)))
    }

    /// `text`'s known features: (id, normalised weight), ids ascending.
    fn query(&self, text: &str) -> Vec<(u32, f32)> {
        let lookup = |h| self.hashes.binary_search(&h).ok().map(|i| i as u32);
        let (found, norm) = counted(ngrams(text), lookup, |f| self.idf(f));
        found
            .into_iter()
            .map(|(f, tf)| {
                let w = log_count(tf) * self.idf(f);
                (f, if norm > 0.0 { w / norm } else { w })
            })
            .collect()
    }

    /// Calls `add(position, x)` for each posting of each of `text`'s features, features in id
    /// order and positions ascending in each, with `x = (w · idf) · (1 + ln tf)` (`w` the
    /// feature's weight in `text`): a content's sum of them, divided by its norm, is its
    /// cosine similarity to `text`.
    #[inline]
    fn each_product(&self, text: &str, mut add: impl FnMut(usize, f32)) {
        for (f, w) in self.query(text) {
            let c = w * self.idf(f);
            postings::each(&self.packer, self.list(f), |pos, lt| add(pos, c * lt));
        }
    }

    /// Writes `text`'s similarity to every content into `row` (one value per content
    /// position; `row` must hold zeros).
    pub fn scores_into(&self, text: &str, row: &mut [f32]) {
        assert_eq!(row.len(), self.n, "a row of the index's contents");
        self.each_product(text, |c, x| row[c] += x);
        for (r, &norm) in row.iter_mut().zip(self.norms.iter()) {
            *r /= norm;
        }
    }

    /// Writes `text`'s similarity to every content into `row` at the slot `slot[position]`
    /// of each content (`u32::MAX`: nowhere; `row` must hold zeros at the slots). The same
    /// sums in the same order as [`scores_into`](Self::scores_into), so each value is equal
    /// to the bit.
    pub fn scores_into_slots(&self, text: &str, slot: &[u32], row: &mut [f32]) {
        assert_eq!(slot.len(), self.n, "a slot per content");
        self.each_product(text, |c, x| {
            let r = slot[c];
            if r != u32::MAX {
                row[r as usize] += x;
            }
        });
        for (&r, &norm) in slot.iter().zip(self.norms.iter()) {
            if r != u32::MAX {
                row[r as usize] /= norm;
            }
        }
    }

    /// `text`'s similarity to every content, by position.
    pub fn scores(&self, text: &str) -> Vec<f32> {
        let mut row = vec![0f32; self.n];
        self.scores_into(text, &mut row);
        row
    }

    /// Bytes held in memory (a saved index mapped from its file holds none: see
    /// [`mapped_bytes`](Self::mapped_bytes)).
    pub fn memory_bytes(&self) -> usize {
        self.hashes.heap_bytes()
            + self.offsets.heap_bytes()
            + self.postings.heap_bytes()
            + self.norms.heap_bytes()
    }

    /// Bytes read through a mapping of a saved file (the page cache holds them, not the
    /// heap: the system can drop cold pages and read them again).
    pub fn mapped_bytes(&self) -> usize {
        self.hashes.mapped_bytes()
            + self.offsets.mapped_bytes()
            + self.postings.mapped_bytes()
            + self.norms.mapped_bytes()
    }

    /// Known features and postings (for the memory model).
    pub fn sizes(&self) -> (usize, usize) {
        let postings = (0..self.hashes.len() as u32)
            .map(|f| postings::len(self.list(f)) as usize)
            .sum();
        (self.hashes.len(), postings)
    }
}

/// A feature's idf among `n` contents, `df` of which hold it (smoothed, as scikit-learn's).
fn idf_of(n: usize, df: u32) -> f32 {
    ((1.0 + n as f32) / (1.0 + df as f32)).ln() + 1.0
}

/// The known features of n-gram `counts` (`id` finds a hash's id) with their counts, ids
/// ascending, and the L2 norm of their weights `(1 + ln tf) · idf` summed in id order.
fn counted(
    counts: HashMap<u64, f32>,
    id: impl Fn(u64) -> Option<u32>,
    idf: impl Fn(u32) -> f32,
) -> (Vec<(u32, u32)>, f32) {
    let mut v: Vec<(u32, u32)> = counts
        .into_iter()
        .filter_map(|(h, tf)| Some((id(h)?, tf as u32)))
        .collect();
    v.sort_unstable_by_key(|x| x.0);
    let norm = v
        .iter()
        .map(|&(f, tf)| {
            let w = log_count(tf) * idf(f);
            w * w
        })
        .sum::<f32>()
        .sqrt();
    (v, norm)
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
            .for_each(|(row, &t)| self.index.scores_into(&self.sim.topic_texts[t], row));
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
        a.scores_into_slots(topic, &slot, &mut row);
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

    /// The index's scores against TF-IDF computed the plain way (each content's counts as a
    /// map; the topic's weights normalised, summed in feature order, then divided by the
    /// content's norm): the compressed postings must give the same value to the bit, through
    /// repeated n-grams (counts above 1), long gaps (varints of several bytes) and the
    /// dropped frequent n-grams.
    #[test]
    fn an_index_read_back_scores_as_the_one_written_and_damage_is_refused() {
        let texts: Vec<String> = (0..300)
            .map(|i| format!("word{} shared text{} zz{}", i % 17, i % 5, i * 7 % 300))
            .collect();
        let ix = LexicalIndex::fit(&texts);
        let mut bytes = Vec::new();
        ix.write_to(&mut bytes).unwrap();
        let back = LexicalIndex::read_from(&mut bytes.as_slice()).unwrap();
        for q in ["word3 shared", "zz21 text4", "nothing known"] {
            let (a, b) = (ix.scores(q), back.scores(q));
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{q}"
            );
        }
        assert_eq!(back.memory_bytes(), ix.memory_bytes());
        // Cut short, or with the offsets' order broken: an error, never a panic.
        let err = LexicalIndex::read_from(&mut &bytes[..bytes.len() - 3])
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut bad = bytes.clone();
        let at = 24 + 8 * ix.hashes.len() + 8;
        bad[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = LexicalIndex::read_from(&mut bad.as_slice()).err().unwrap();
        assert!(err.to_string().contains("offsets"), "{err}");
    }

    #[test]
    fn common_ngrams_are_dropped_above_the_share_or_the_floor() {
        assert_eq!(max_df(10), 10, "a tiny language keeps every n-gram");
        assert_eq!(max_df(100), 50, "half of a small language");
        assert_eq!(max_df(700), 100, "the floor");
        assert_eq!(max_df(4000), 200);
        assert_eq!(max_df(660_000), 33_000);
        // 4,000 contents: "qqxq" in 200 of them (5%) stays a feature, "zzwz" in 201 does not.
        let texts: Vec<String> = (0..4000)
            .map(|i| {
                let mut t = format!("filler{i}");
                if i < 200 {
                    t.push_str(" qqxq");
                }
                if (1000..1201).contains(&i) {
                    t.push_str(" zzwz");
                }
                t
            })
            .collect();
        let ix = LexicalIndex::fit(&texts);
        assert!(ix.scores("qqxq")[0] > 0.0);
        assert!(ix.scores("zzwz").iter().all(|&s| s == 0.0));
        assert!(fit_rule().contains("0.05"), "{}", fit_rule());
    }

    #[test]
    fn compressed_postings_score_as_plain_tf_idf_to_the_bit() {
        let vocab = ["ab", "cde", "fghij", "klm", "nopq", "rs", "tuvw", "xyz"];
        let mut texts: Vec<String> = (0..700)
            .map(|i| {
                let mut t = format!("the common word{} ", i * 7919 % 1000);
                for k in 0..(i % 5 + 1) {
                    t.push_str(vocab[(i * 31 + k * 7) % vocab.len()]);
                    t.push(' ');
                }
                t
            })
            .collect();
        // A rare n-gram far apart (gaps past one varint byte) and a repeated one.
        texts[3].push_str(" zzqq zzqq zzqq zzqq");
        texts[650].push_str(" zzqq");
        let ix = LexicalIndex::fit(&texts);
        let n = texts.len();
        let mut df: StdHashMap<u64, usize> = StdHashMap::new();
        let grams: Vec<HashMap<u64, f32>> = texts.iter().map(|t| ngrams(t)).collect();
        for g in &grams {
            for &h in g.keys() {
                *df.entry(h).or_default() += 1;
            }
        }
        let idf = |h: &u64| ((1.0 + n as f32) / (1.0 + df[h] as f32)).ln() + 1.0;
        // Known features with their (1 + ln tf) and idf, in hash order, and the norm.
        let known = |g: &HashMap<u64, f32>| -> (Vec<(u64, f32, f32)>, f32) {
            let mut v: Vec<(u64, f32, f32)> = g
                .iter()
                // 700 contents: 5% is 35, so the floor of 100 contents decides.
                .filter(|(h, _)| df.get(h).is_some_and(|&d| d <= 100))
                .map(|(&h, &tf)| (h, 1.0 + tf.ln(), idf(&h)))
                .collect();
            v.sort_by_key(|x| x.0);
            let norm = v
                .iter()
                .map(|x| (x.1 * x.2) * (x.1 * x.2))
                .sum::<f32>()
                .sqrt();
            (v, norm)
        };
        let docs: Vec<(StdHashMap<u64, f32>, f32)> = grams
            .iter()
            .map(|g| {
                let (v, norm) = known(g);
                (v.into_iter().map(|(h, lt, _)| (h, lt)).collect(), norm)
            })
            .collect();
        for topic in [
            "zzqq common",
            "fghij klm word7",
            "nothing here",
            "xyz xyz rs",
        ] {
            let (q, qnorm) = known(&ngrams(topic));
            let got = ix.scores(topic);
            for (c, (d, norm)) in docs.iter().enumerate() {
                let mut want = 0f32;
                for &(h, lt, idf) in &q {
                    if let Some(&ltc) = d.get(&h) {
                        want += ((lt * idf) / qnorm * idf) * ltc;
                    }
                }
                if *norm > 0.0 {
                    want /= norm;
                }
                assert_eq!(got[c].to_bits(), want.to_bits(), "{topic}: content {c}");
            }
        }
        assert!(ix.scores("zzqq")[3] > ix.scores("zzqq")[650]);
        let (features, postings) = ix.sizes();
        assert!(features > 0 && postings > features, "{features} {postings}");
        assert!(ix.postings.len() < postings * 4, "about 2 bytes a posting");
    }
}

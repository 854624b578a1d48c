//! The cross-encoder's logits kept by the texts of their pair, so a topic asked for again (a
//! curator reopening it on the page, Studio asking each time a folder is visited) costs no
//! transformer pass. A logit is a pure function of its two texts (the model does not change
//! while the server runs, and a pair's logit does not depend on the batch it was read in), so
//! a kept one is exactly the one the model would give: answers stay equal to `predict`'s. A
//! content whose texts change gets a new key. Bounded: the least recently used pairs go first.

use lru::LruCache;
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// Pairs kept unless told otherwise (`--cross-cache`): about 100 bytes each.
pub const DEFAULT_PAIRS: usize = 100_000;

/// The key of a pair: SHA-256 of both texts, each prefixed with its length.
pub type PairKey = [u8; 32];

pub struct CrossCache {
    kept: Mutex<LruCache<PairKey, f32>>,
}

impl CrossCache {
    /// A cache of at most `pairs` logits; `None` for 0 (no cache).
    pub fn new(pairs: usize) -> Option<CrossCache> {
        NonZeroUsize::new(pairs).map(|n| CrossCache {
            kept: Mutex::new(LruCache::new(n)),
        })
    }

    pub fn key(topic: &str, content: &str) -> PairKey {
        let mut h = Sha256::new();
        for text in [topic, content] {
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        h.finalize().into()
    }

    /// The kept logit of each key, if any (a hit counts as a use).
    pub fn get_many(&self, keys: &[PairKey]) -> Vec<Option<f32>> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().map(|k| kept.get(k).copied()).collect()
    }

    pub fn put_many(&self, pairs: impl IntoIterator<Item = (PairKey, f32)>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in pairs {
            kept.put(k, v);
        }
    }

    pub fn len(&self) -> usize {
        self.kept.lock().map(|k| k.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_the_texts_apart_and_the_oldest_pair_goes_first() {
        // The length prefix keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(CrossCache::key("ab", "c"), CrossCache::key("a", "bc"));
        assert_eq!(CrossCache::key("t", "c"), CrossCache::key("t", "c"));
        assert!(CrossCache::new(0).is_none());
        let c = CrossCache::new(2).unwrap();
        let (a, b, d) = (
            CrossCache::key("t", "a"),
            CrossCache::key("t", "b"),
            CrossCache::key("t", "d"),
        );
        c.put_many([(a, 1.0), (b, 2.0)]);
        // `a` used again, so `b` is the least recently used when `d` comes.
        assert_eq!(c.get_many(&[a]), vec![Some(1.0)]);
        c.put_many([(d, 4.0)]);
        assert_eq!(c.get_many(&[a, b, d]), vec![Some(1.0), None, Some(4.0)]);
        assert_eq!(c.len(), 2);
    }
}

//! The model's own `tokenizer.json`: special tokens, truncation to `max_len`, no padding (the
//! batch builder pads to the longest member). Smart batching sorts inputs by token length.

use anyhow::{Context, Result};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub struct TextTokenizer {
    inner: Tokenizer,
    pub max_len: usize,
}

impl TextTokenizer {
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading tokenizer {}", path.display()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(TextTokenizer { inner, max_len })
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids with special tokens, truncated to `max_len`.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let enc = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Token ids and token type ids (0 for the first text, 1 for the second where the
    /// tokenizer's template says so) of text pairs, joined with the special tokens and
    /// truncated together to `max_len`, the longer text first.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        let inputs: Vec<tokenizers::EncodeInput> =
            pairs.iter().map(|&(a, b)| (a, b).into()).collect();
        let enc = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| anyhow::anyhow!("tokenizing pairs: {e}"))?;
        Ok(enc
            .into_iter()
            .map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec()))
            .collect())
    }

    /// How many tokens the vocabulary holds (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of the pad token, if the tokenizer names one.
    pub fn pad_id(&self) -> Option<u32> {
        ["[PAD]", "<pad>"]
            .iter()
            .find_map(|t| self.inner.token_to_id(t))
    }
}

/// Indices of `lengths` sorted longest first (stable), for smart batching.
pub fn length_order(lengths: &[usize]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    idx
}

//! The content-shaped row of `lecr bench encode`: texts whose token lengths follow those of
//! content texts (title, description and extracted text, up to 512 tokens) instead of the
//! short 33–39-token bench texts, encoded the way `lecr embed` encodes (batches in length
//! order, padding skipped), so that long-text cost per token shows beside short-text cost.

use crate::model::SentenceModel;
use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

/// Where the row's lengths come from.
pub enum ContentSource<'a> {
    /// The built-in profile ([`profile_length`]) over the bench texts' words.
    Profile,
    /// Real contents of a data folder (title, description and full text).
    Data(&'a Path),
}

/// The built-in length profile, modelled on LECR's content kinds (not measured from the
/// competition files, which are not here): 40% title and description only (videos, audio:
/// 12–64 tokens), 25% with a short extracted text (65–511 tokens), 35% whose extracted text
/// (documents, HTML5 apps) passes the cap. Draw `u` uniform in [0, 1).
pub fn profile_length(u: f64, v: f64, cap: usize) -> usize {
    let len = if u < 0.40 {
        12 + (v * 53.0) as usize
    } else if u < 0.65 {
        65 + (v * 447.0) as usize
    } else {
        cap
    };
    len.min(cap)
}

/// `n` token sequences (with the model's special tokens, at most `cap` tokens each).
pub fn content_ids(
    model: &SentenceModel,
    base: &[String],
    source: ContentSource,
    n: usize,
    cap: usize,
) -> Result<Vec<Vec<u32>>> {
    anyhow::ensure!(cap >= 2, "the content row needs a cap of at least 2 tokens");
    match source {
        ContentSource::Profile => {
            anyhow::ensure!(
                !base.is_empty(),
                "no bench texts to build content texts from"
            );
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(512);
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let want = profile_length(rng.gen(), rng.gen(), cap);
                out.push(ids_of_length(model, base, i, want)?);
            }
            Ok(out)
        }
        ContentSource::Data(dir) => {
            let ds = crate::data::load_dataset(dir).with_context(|| {
                format!(
                    "reading contents for the content row from {}",
                    dir.display()
                )
            })?;
            anyhow::ensure!(!ds.contents.is_empty(), "{}: no contents", dir.display());
            // Every k-th content, so the sample spans kinds and channels as the file orders them.
            let step = (ds.contents.len() / n.max(1)).max(1);
            let texts: Vec<String> = ds
                .contents
                .iter()
                .step_by(step)
                .take(n)
                .map(|c| {
                    format!(
                        "{} # {} # {}",
                        crate::text::clean(&c.title),
                        crate::text::clean(&c.description),
                        crate::text::clean(&c.text)
                    )
                })
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let mut ids = model.tokenizer.encode(&refs)?;
            for s in &mut ids {
                cut(s, cap);
            }
            Ok(ids)
        }
    }
}

/// Bench lines from `start` on, joined until the tokens reach `want`, then cut to `want`
/// (keeping the closing special token).
fn ids_of_length(
    model: &SentenceModel,
    base: &[String],
    start: usize,
    want: usize,
) -> Result<Vec<u32>> {
    let mut text = String::new();
    let mut at = start;
    loop {
        let ids = model.tokenizer.encode(&[text.as_str()])?.remove(0);
        if ids.len() >= want || at >= start + 4 * base.len() {
            let mut ids = ids;
            cut(&mut ids, want);
            return Ok(ids);
        }
        // About 35 tokens a line: add what the shortfall needs, at least one line.
        for _ in 0..(want - ids.len()).div_ceil(35).max(1) {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&base[at % base.len()]);
            at += 1;
        }
    }
}

/// Cuts a sequence to `len` tokens, keeping its last (closing special) token.
fn cut(ids: &mut Vec<u32>, len: usize) {
    if ids.len() > len && len >= 1 {
        let last = *ids.last().expect("longer than len >= 1");
        ids.truncate(len - 1);
        ids.push(last);
    }
}

/// The row's figures: texts/s and real tokens/s, median of runs.
pub struct Rate {
    pub texts_per_s: f64,
    pub tokens_per_s: f64,
}

/// Encodes `ids` as `lecr embed` does: longest first, in batches of `batch`, each padded to
/// its longest (padding rows are skipped when the encoder unpads). Median over `runs`.
pub fn rate(model: &SentenceModel, ids: &[Vec<u32>], batch: usize, runs: usize) -> Result<Rate> {
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let order = crate::model::tokenize::length_order(&lengths);
    let sorted: Vec<Vec<u32>> = order.iter().map(|&i| ids[i].clone()).collect();
    let tokens: usize = lengths.iter().sum();
    model.forward_ids(&sorted[..batch.min(sorted.len())], None, false)?; // warm-up
    let mut secs = Vec::new();
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        for b in sorted.chunks(batch.max(1)) {
            let out = model.forward_ids(b, None, false)?;
            std::hint::black_box(out.to_vec2::<f32>()?);
        }
        secs.push(t0.elapsed().as_secs_f64());
    }
    let s = super::median(secs);
    Ok(Rate {
        texts_per_s: ids.len() as f64 / s,
        tokens_per_s: tokens as f64 / s,
    })
}

/// Mean, median and largest length, and the share at `cap`.
pub fn describe(ids: &[Vec<u32>], cap: usize) -> String {
    let mut l: Vec<usize> = ids.iter().map(Vec::len).collect();
    l.sort_unstable();
    if l.is_empty() {
        return "no texts".into();
    }
    let mean = l.iter().sum::<usize>() as f64 / l.len() as f64;
    let at_cap = l.iter().filter(|&&x| x >= cap).count() as f64 / l.len() as f64;
    format!(
        "{} texts, tokens: mean {mean:.0}, median {}, max {}, {:.0}% at the {cap}-token cap",
        l.len(),
        l[l.len() / 2],
        l[l.len() - 1],
        100.0 * at_cap
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_spans_short_long_and_capped_texts() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let l: Vec<usize> = (0..10_000)
            .map(|_| profile_length(rng.gen(), rng.gen(), 512))
            .collect();
        let share = |f: &dyn Fn(usize) -> bool| l.iter().filter(|&&x| f(x)).count() as f64 / 1e4;
        assert!((share(&|x| x <= 64) - 0.40).abs() < 0.02);
        assert!((share(&|x| x == 512) - 0.35).abs() < 0.02);
        assert!(l.iter().all(|&x| (12..=512).contains(&x)));
        // A smaller cap caps everything.
        assert_eq!(profile_length(0.9, 0.5, 128), 128);
        assert_eq!(profile_length(0.5, 0.99, 128), 128);
    }

    #[test]
    fn cut_keeps_the_closing_token() {
        let mut v = vec![101, 5, 6, 7, 102];
        cut(&mut v, 3);
        assert_eq!(v, vec![101, 5, 102]);
        let mut w = vec![101, 102];
        cut(&mut w, 3);
        assert_eq!(w, vec![101, 102]);
    }
}

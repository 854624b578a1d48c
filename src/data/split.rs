//! Cross-validation folds that keep validation content out of training (method §3).
//!
//! Per language, over the topics of `correlations.csv` in file order: a topic's related group
//! (every topic sharing a content with it) goes to the fold it overlaps least, ties broken by the
//! fewest topics, then the lowest fold id. Topics without content get fold -1.

use super::load::Dataset;
use super::schema::NO_FOLD;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{BTreeSet, HashMap};

/// Folds of one split: one entry per topic of the dataset (in file order).
#[derive(Debug, Clone, PartialEq)]
pub struct Folds {
    pub k: usize,
    pub topic_fold: Vec<i32>,
}

/// Per-fold figures of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldStats {
    pub fold: usize,
    pub topics: usize,
    pub pairs: usize,
    pub val_contents: usize,
    /// Share of this fold's contents that also belong to a training topic.
    pub overlap: f64,
}

/// Topics with content as (topic index, content indices), in file order, each topic once.
fn topic_contents(ds: &Dataset) -> Vec<(usize, Vec<usize>)> {
    let mut pos: HashMap<usize, usize> = HashMap::new();
    let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
    for (t, c) in ds.pairs() {
        let p = *pos.entry(t).or_insert_with(|| {
            out.push((t, Vec::new()));
            out.len() - 1
        });
        if !out[p].1.contains(&c) {
            out[p].1.push(c);
        }
    }
    out
}

/// The method §3 split into `k` folds.
pub fn split_folds(ds: &Dataset, k: usize) -> Folds {
    assert!(k >= 1, "at least one fold");
    let n = ds.topics.len();
    let tc = topic_contents(ds);
    let mut content_topics: Vec<Vec<usize>> = vec![Vec::new(); ds.contents.len()];
    for (t, cs) in &tc {
        for &c in cs {
            content_topics[c].push(*t);
        }
    }
    let mut topic_fold = vec![NO_FOLD; n];
    // Languages in order of first appearance, each walked separately.
    let mut languages: Vec<&str> = Vec::new();
    for (t, _) in &tc {
        let l = ds.topics[*t].language.as_str();
        if !languages.contains(&l) {
            languages.push(l);
        }
    }
    let contents_of: HashMap<usize, &Vec<usize>> = tc.iter().map(|(t, cs)| (*t, cs)).collect();
    let mut stamp = vec![usize::MAX; n];
    let mut related = Vec::new();
    for (li, lang) in languages.iter().enumerate() {
        let mut sizes = vec![0usize; k];
        for (t, _) in tc.iter().filter(|(t, _)| ds.topics[*t].language == *lang) {
            // related(t): t and every same-language topic sharing a content with it.
            related.clear();
            let mark = li * n + t;
            for &c in contents_of[t].iter() {
                for &u in &content_topics[c] {
                    if stamp[u] != mark && ds.topics[u].language == *lang {
                        stamp[u] = mark;
                        related.push(u);
                    }
                }
            }
            let mut counts = vec![0usize; k];
            for &u in &related {
                if topic_fold[u] >= 0 {
                    counts[topic_fold[u] as usize] += 1;
                }
            }
            let best = (0..k)
                .min_by_key(|&f| (counts[f], sizes[f], f))
                .expect("k >= 1");
            for &u in &related {
                if topic_fold[u] < 0 {
                    topic_fold[u] = best as i32;
                    sizes[best] += 1;
                }
            }
        }
    }
    Folds { k, topic_fold }
}

/// A plain random split of the topics with content, for comparison: shuffled with `seed`,
/// then dealt round-robin.
pub fn random_folds(ds: &Dataset, k: usize, seed: u64) -> Folds {
    let mut topics: Vec<usize> = topic_contents(ds).into_iter().map(|(t, _)| t).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    topics.shuffle(&mut rng);
    let mut topic_fold = vec![NO_FOLD; ds.topics.len()];
    for (i, t) in topics.into_iter().enumerate() {
        topic_fold[t] = (i % k) as i32;
    }
    Folds { k, topic_fold }
}

/// The folds of each content item: the folds of the topics it belongs to.
pub fn content_folds(ds: &Dataset, folds: &Folds) -> Vec<BTreeSet<i32>> {
    let mut out = vec![BTreeSet::new(); ds.contents.len()];
    for (t, c) in ds.pairs() {
        let f = folds.topic_fold[t];
        if f >= 0 {
            out[c].insert(f);
        }
    }
    out
}

/// Topics, pairs and content overlap with training for each fold.
pub fn fold_stats(ds: &Dataset, folds: &Folds) -> Vec<FoldStats> {
    let cf = content_folds(ds, folds);
    let mut stats: Vec<FoldStats> = (0..folds.k)
        .map(|fold| FoldStats {
            fold,
            topics: 0,
            pairs: 0,
            val_contents: 0,
            overlap: 0.0,
        })
        .collect();
    for &f in &folds.topic_fold {
        if f >= 0 {
            stats[f as usize].topics += 1;
        }
    }
    for (t, _) in ds.pairs() {
        let f = folds.topic_fold[t];
        if f >= 0 {
            stats[f as usize].pairs += 1;
        }
    }
    let mut shared = vec![0usize; folds.k];
    for set in &cf {
        for &f in set {
            stats[f as usize].val_contents += 1;
            if set.len() > 1 {
                shared[f as usize] += 1;
            }
        }
    }
    for s in &mut stats {
        s.overlap = if s.val_contents == 0 {
            0.0
        } else {
            shared[s.fold] as f64 / s.val_contents as f64
        };
    }
    stats
}

/// Mean overlap over folds, weighted by validation contents.
pub fn mean_overlap(stats: &[FoldStats]) -> f64 {
    let total: usize = stats.iter().map(|s| s.val_contents).sum();
    if total == 0 {
        return 0.0;
    }
    stats
        .iter()
        .map(|s| s.overlap * s.val_contents as f64)
        .sum::<f64>()
        / total as f64
}

/// Writes the data folder again with fold columns: topics get `fold`, contents `folds` (the
/// space-separated folds of their topics), correlations `fold`. Other files are copied.
pub fn write_split(
    ds: &Dataset,
    folds: &Folds,
    out: &std::path::Path,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use super::schema::*;
    let cf = content_folds(ds, folds);
    let src = &ds.dir;
    let mut written = Vec::new();
    let topic_values: Vec<String> = folds.topic_fold.iter().map(|f| f.to_string()).collect();
    let content_values: Vec<String> = cf
        .iter()
        .map(|s| {
            s.iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let corr_values: Vec<String> = ds
        .correlations
        .iter()
        .map(|c| {
            ds.topic_index
                .get(&c.topic_id)
                .map(|&t| folds.topic_fold[t])
                .unwrap_or(NO_FOLD)
                .to_string()
        })
        .collect();
    for (file, col, values) in [
        (TOPICS_FILE, "fold", &topic_values),
        (CONTENT_FILE, "folds", &content_values),
        (CORRELATIONS_FILE, "fold", &corr_values),
    ] {
        let dst = out.join(file);
        rewrite_with_column(&src.join(file), &dst, col, values)?;
        written.push(dst);
    }
    // Sample submission and translated pools travel unchanged.
    let mut extra = vec![SAMPLE_SUBMISSION_FILE.to_string()];
    for k in 1..=ds.pool_count() {
        extra.push(format!("topics_{k}.csv"));
        extra.push(format!("content_{k}.csv"));
    }
    for name in extra {
        let from = src.join(&name);
        let to = out.join(&name);
        if from.exists() && from != to {
            crate::io::write_atomic(&to, |w| {
                let mut f = std::fs::File::open(&from)?;
                std::io::copy(&mut f, w)?;
                Ok(())
            })?;
            written.push(to);
        }
    }
    Ok(written)
}

/// Copies a CSV file row by row, setting column `col` (added, or replaced when present) to
/// `values[row]`.
fn rewrite_with_column(
    src: &std::path::Path,
    dst: &std::path::Path,
    col: &str,
    values: &[String],
) -> anyhow::Result<()> {
    let (mut rdr, headers) = super::load::open_csv(src, &[])?;
    let existing = headers.iter().position(|h| h == col);
    crate::io::write_atomic(dst, |w| {
        let mut w = crate::io::csv_writer(w);
        let mut h = headers.clone();
        if existing.is_none() {
            h.push_field(col);
        }
        w.write_record(&h)?;
        let mut rec = csv::StringRecord::new();
        let mut out = csv::StringRecord::new();
        let mut row = 0;
        while rdr.read_record(&mut rec)? {
            let v = values.get(row).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: more rows than when it was loaded (changed meanwhile?)",
                    src.display()
                )
            })?;
            out.clear();
            for (i, f) in rec.iter().enumerate() {
                out.push_field(if Some(i) == existing { v } else { f });
            }
            if existing.is_none() {
                out.push_field(v);
            }
            w.write_record(&out)?;
            row += 1;
        }
        w.flush()?;
        Ok(())
    })
}

//! The `lecr data check` summary: what a folder holds, by language, category, kind and level.

use super::load::Dataset;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

fn table<K: std::fmt::Display>(title: &str, rows: Vec<(K, usize)>) -> String {
    let mut s = format!("{title}:\n");
    for (k, n) in rows {
        let _ = writeln!(s, "  {k:<16} {n:>9}");
    }
    s
}

fn sorted_desc(m: BTreeMap<String, usize>) -> Vec<(String, usize)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// Counts of a dataset as text.
pub fn summarize(ds: &Dataset) -> String {
    let pairs = ds.pairs();
    let topics_with: HashSet<usize> = pairs.iter().map(|p| p.0).collect();
    let contents_used: HashSet<usize> = pairs.iter().map(|p| p.1).collect();
    let channels: HashSet<&str> = ds.topics.iter().map(|t| t.channel.as_str()).collect();
    let mut s = String::new();
    let _ = writeln!(s, "data folder: {}", ds.dir.display());
    let _ = writeln!(
        s,
        "topics {} in {} channels ({} with content, {} without); contents {} ({} in no topic); \
         pairs {}; topics to predict {}",
        ds.topics.len(),
        channels.len(),
        topics_with.len(),
        ds.topics.len() - topics_with.len(),
        ds.contents.len(),
        ds.contents.len() - contents_used.len(),
        pairs.len(),
        ds.sample_topics.len()
    );
    let mut by_lang: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for t in &ds.topics {
        by_lang.entry(t.language.clone()).or_default().0 += 1;
    }
    for c in &ds.contents {
        by_lang.entry(c.language.clone()).or_default().1 += 1;
    }
    for &(t, _) in &pairs {
        by_lang.entry(ds.topics[t].language.clone()).or_default().2 += 1;
    }
    let mut langs: Vec<_> = by_lang.into_iter().collect();
    langs.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    let _ = writeln!(
        s,
        "by language:\n  {:<8} {:>9} {:>9} {:>9}",
        "language", "topics", "contents", "pairs"
    );
    for (l, (t, c, p)) in langs {
        let _ = writeln!(s, "  {l:<8} {t:>9} {c:>9} {p:>9}");
    }
    let mut cat = BTreeMap::new();
    for t in &ds.topics {
        *cat.entry(t.category.clone()).or_insert(0) += 1;
    }
    s.push_str(&table("topics by category", sorted_desc(cat)));
    let mut lvl: BTreeMap<i64, usize> = BTreeMap::new();
    for t in &ds.topics {
        *lvl.entry(t.level.map(i64::from).unwrap_or(-1)).or_insert(0) += 1;
    }
    s.push_str(&table(
        "topics by level (-1: unreadable)",
        lvl.into_iter().collect(),
    ));
    let mut kind = BTreeMap::new();
    for c in &ds.contents {
        *kind.entry(c.kind.clone()).or_insert(0) += 1;
    }
    s.push_str(&table("contents by kind", sorted_desc(kind)));
    let with_text = ds
        .contents
        .iter()
        .filter(|c| !c.text.trim().is_empty())
        .count();
    let _ = writeln!(
        s,
        "contents with text: {with_text} ({:.1}%)",
        100.0 * with_text as f64 / ds.contents.len().max(1) as f64
    );
    s
}

//! Curators' decisions as training signal (`lecr train --set feedback=DIR`): accepted links
//! become training pairs, rejected contents become hard negatives of their topic. DIR is a
//! service store (`lecr.sqlite`) or a `lecr feedback export` folder (`correlations.csv`,
//! `rejected.csv`, and `topics.csv`/`content.csv` for the Studio topics and contents that are
//! not in the data folder).

use crate::data::schema::CorrelationRow;
use crate::data::Dataset;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Decisions resolved against a data folder.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Curated {
    /// Accepted (topic, content) pairs, dataset indices.
    pub accepted: Vec<(usize, usize)>,
    /// Rejected contents per topic.
    pub rejected: HashMap<usize, Vec<usize>>,
    /// Every topic with a decision.
    pub topics: HashSet<usize>,
    /// Decisions whose topic or content is not in the data folder (not used).
    pub unknown: usize,
}

type Sides = (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>);

/// The service store `source` names: a `postgres://` URL, or a folder holding `lecr.sqlite`;
/// `None` for another folder (an export).
fn store_at(source: &Path) -> Option<Result<crate::store::Store>> {
    use crate::store::{Location, Store};
    match Location::parse(&source.to_string_lossy()) {
        loc @ Location::Postgres(_) => Some(Store::open_at(&loc).map_err(Into::into)),
        _ if source.join(crate::store::FILE_NAME).exists() => {
            Some(Store::open_existing(source).map_err(Into::into))
        }
        _ => None,
    }
}

/// Accepted and rejected content ids per topic id, from a store (folder or `postgres://` URL)
/// or an export.
pub fn read_decisions(dir: &Path) -> Result<Sides> {
    if let Some(s) = store_at(dir) {
        return Ok(crate::store::decisions::split_decisions(
            &s?.decisions(None)?,
        ));
    }
    let acc = dir.join("correlations.csv");
    anyhow::ensure!(
        acc.exists(),
        "{}: neither a service store (lecr.sqlite) nor a `lecr feedback export` folder \
         (correlations.csv, rejected.csv)",
        dir.display()
    );
    let read = |p: &Path| -> Result<BTreeMap<String, Vec<String>>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        crate::data::load::read_rows::<CorrelationRow>(
            p,
            &["topic_id", "content_ids"],
            |row, _| {
                m.entry(row.topic_id.trim().to_string())
                    .or_default()
                    .extend(row.content_ids.split_whitespace().map(str::to_string));
            },
        )
        .with_context(|| format!("reading {}", p.display()))?;
        Ok(m)
    };
    let rej = dir.join("rejected.csv");
    Ok((
        read(&acc)?,
        if rej.exists() {
            read(&rej)?
        } else {
            BTreeMap::new()
        },
    ))
}

/// Appends to `ds` the topics and contents that the decisions in `dir` name and `ds` lacks
/// (the Studio topics curators worked on, with their ancestors, and their contents): from the
/// store's tables, or from an export's `topics.csv` and `content.csv` when present. Returns
/// how many topics and contents were added.
pub fn add_decided_items(dir: &Path, ds: &mut Dataset) -> Result<(usize, usize)> {
    let (topics, contents) = if let Some(s) = store_at(dir) {
        crate::store::decisions::decided_items(&s?)?
    } else {
        let read_if = |name: &str| {
            let p = dir.join(name);
            p.exists().then_some(p)
        };
        let topics = match read_if("topics.csv") {
            Some(p) => crate::data::load::read_topics_file(&p)?,
            None => Vec::new(),
        };
        let contents = match read_if("content.csv") {
            Some(p) => crate::data::load::read_contents_file(&p)?,
            None => Vec::new(),
        };
        (topics, contents)
    };
    Ok(ds.append(topics, contents))
}

/// Resolves the decisions in `dir` against `ds`.
pub fn load(dir: &Path, ds: &Dataset) -> Result<Curated> {
    let (acc, rej) = read_decisions(dir)?;
    Ok(resolve(&acc, &rej, ds))
}

pub fn resolve(
    accepted: &BTreeMap<String, Vec<String>>,
    rejected: &BTreeMap<String, Vec<String>>,
    ds: &Dataset,
) -> Curated {
    let mut out = Curated::default();
    let mut seen = HashSet::new();
    for (side, map) in [(true, accepted), (false, rejected)] {
        for (t, cs) in map {
            for c in cs {
                let (Some(&ti), Some(&ci)) = (ds.topic_index.get(t), ds.content_index.get(c))
                else {
                    out.unknown += 1;
                    continue;
                };
                out.topics.insert(ti);
                if side {
                    if seen.insert((ti, ci)) {
                        out.accepted.push((ti, ci));
                    }
                } else {
                    out.rejected.entry(ti).or_default().push(ci);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::schema::{Content, Topic};

    #[test]
    fn ids_resolve_and_unknown_ones_are_counted() {
        let mut ds = Dataset::default();
        for (i, id) in ["t1", "t2"].iter().enumerate() {
            ds.topics.push(Topic {
                id: id.to_string(),
                title: String::new(),
                description: String::new(),
                channel: "c".into(),
                category: "aligned".into(),
                level: Some(0),
                language: "en".into(),
                parent: None,
                has_content: true,
                fold: None,
                line: 0,
            });
            ds.topic_index.insert(id.to_string(), i);
        }
        for (i, id) in ["c1", "c2"].iter().enumerate() {
            ds.contents.push(Content {
                id: id.to_string(),
                title: String::new(),
                description: String::new(),
                kind: "video".into(),
                text: String::new(),
                language: "en".into(),
                copyright_holder: String::new(),
                license: String::new(),
                line: 0,
            });
            ds.content_index.insert(id.to_string(), i);
        }
        let acc = BTreeMap::from([("t1".to_string(), vec!["c1".to_string(), "zz".into()])]);
        let rej = BTreeMap::from([("t2".to_string(), vec!["c2".to_string()])]);
        let c = resolve(&acc, &rej, &ds);
        assert_eq!(c.accepted, vec![(0, 0)]);
        assert_eq!(c.rejected[&1], vec![1]);
        assert_eq!(c.unknown, 1);
        assert_eq!(c.topics, HashSet::from([0, 1]));
    }
}

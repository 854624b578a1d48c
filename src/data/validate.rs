//! Data-quality checks a curator can act on. Each problem names the file, line and field.
//! Structural errors stop loading (see `load`); everything here is a warning that is counted
//! and listed, so one bad row never hides the rest of the report.

use super::load::Dataset;
use super::schema::*;
use super::tree::Forest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// A short stable name for the kind of problem, e.g. `unknown_parent`.
    pub kind: &'static str,
    pub file: String,
    pub line: u64,
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(
        kind: &'static str,
        file: &str,
        line: u64,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            kind,
            file: file.to_string(),
            line,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} field `{}`: {} [{}]",
            self.file, self.line, self.field, self.message, self.kind
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for p in &self.problems {
            *m.entry(p.kind).or_insert(0) += 1;
        }
        m
    }
    pub fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Problem> {
        let kind = kind.to_string();
        self.problems.iter().filter(move |p| p.kind == kind)
    }
    /// The report as text: counts per kind, then the first `max` problems.
    pub fn render(&self, max: usize) -> String {
        let mut s = String::new();
        if self.problems.is_empty() {
            s.push_str("validation: no problems found\n");
            return s;
        }
        s.push_str(&format!("validation: {} problem(s)\n", self.problems.len()));
        for (k, n) in self.counts() {
            s.push_str(&format!("  {k:<28} {n}\n"));
        }
        s.push_str(&format!(
            "first {} problem(s):\n",
            max.min(self.problems.len())
        ));
        for p in self.problems.iter().take(max) {
            s.push_str(&format!("  {p}\n"));
        }
        s
    }
}

/// Runs every check on a loaded dataset.
pub fn validate(ds: &Dataset) -> Report {
    let mut out = ds.load_problems.clone();
    check_topics(ds, &mut out);
    check_contents(ds, &mut out);
    check_correlations(ds, &mut out);
    check_sample(ds, &mut out);
    Report { problems: out }
}

fn duplicates<'a>(ids: impl Iterator<Item = (&'a str, u64)>, file: &str, out: &mut Vec<Problem>) {
    let mut first: HashMap<&str, u64> = HashMap::new();
    for (id, line) in ids {
        if id.is_empty() {
            out.push(Problem::new("empty_id", file, line, "id", "empty id"));
            continue;
        }
        if let Some(l) = first.get(id) {
            out.push(Problem::new(
                "duplicate_id",
                file,
                line,
                "id",
                format!("duplicate id `{id}` (first at line {l})"),
            ));
        } else {
            first.insert(id, line);
        }
    }
}

fn check_topics(ds: &Dataset, out: &mut Vec<Problem>) {
    let f = TOPICS_FILE;
    duplicates(ds.topics.iter().map(|t| (t.id.as_str(), t.line)), f, out);
    let forest = Forest::build(&ds.topics, &ds.topic_index);
    for (i, t) in ds.topics.iter().enumerate() {
        if !CATEGORIES.contains(&t.category.as_str()) {
            out.push(Problem::new(
                "unknown_category",
                f,
                t.line,
                "category",
                format!("`{}` is not one of {CATEGORIES:?}", t.category),
            ));
        }
        if t.language.is_empty() {
            out.push(Problem::new(
                "empty_language",
                f,
                t.line,
                "language",
                "empty language",
            ));
        }
        if let Some(p) = &t.parent {
            match forest.parent[i] {
                None => out.push(Problem::new(
                    "unknown_parent",
                    f,
                    t.line,
                    "parent",
                    format!("parent `{p}` is not a topic id"),
                )),
                Some(pi) if ds.topics[pi].channel != t.channel => out.push(Problem::new(
                    "parent_other_channel",
                    f,
                    t.line,
                    "parent",
                    format!(
                        "parent `{p}` is in channel `{}`, this topic in `{}`",
                        ds.topics[pi].channel, t.channel
                    ),
                )),
                _ => {}
            }
        }
        if let (Some(level), Some(depth)) = (t.level, forest.depth[i]) {
            if level != depth {
                out.push(Problem::new(
                    "level_mismatch",
                    f,
                    t.line,
                    "level",
                    format!("level {level} but the topic is {depth} step(s) below its root"),
                ));
            }
        }
    }
    for cycle in &forest.cycles {
        let first = &ds.topics[cycle[0]];
        let ids: Vec<&str> = cycle.iter().map(|&i| ds.topics[i].id.as_str()).collect();
        out.push(Problem::new(
            "parent_cycle",
            f,
            first.line,
            "parent",
            format!("parent links form a cycle: {}", ids.join(" -> ")),
        ));
    }
}

fn check_contents(ds: &Dataset, out: &mut Vec<Problem>) {
    let f = CONTENT_FILE;
    duplicates(ds.contents.iter().map(|c| (c.id.as_str(), c.line)), f, out);
    for c in &ds.contents {
        if !KINDS.contains(&c.kind.as_str()) {
            out.push(Problem::new(
                "unknown_kind",
                f,
                c.line,
                "kind",
                format!("`{}` is not one of {KINDS:?}", c.kind),
            ));
        }
        if c.language.is_empty() {
            out.push(Problem::new(
                "empty_language",
                f,
                c.line,
                "language",
                "empty language",
            ));
        }
    }
}

fn check_correlations(ds: &Dataset, out: &mut Vec<Problem>) {
    let f = CORRELATIONS_FILE;
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for c in &ds.correlations {
        if let Some(l) = seen.get(c.topic_id.as_str()) {
            out.push(Problem::new(
                "duplicate_topic_row",
                f,
                c.line,
                "topic_id",
                format!("topic `{}` already has a row at line {l}", c.topic_id),
            ));
        } else {
            seen.insert(&c.topic_id, c.line);
        }
        let topic = ds.topic(&c.topic_id);
        match topic {
            None => out.push(Problem::new(
                "unknown_topic",
                f,
                c.line,
                "topic_id",
                format!("topic `{}` is not in {TOPICS_FILE}", c.topic_id),
            )),
            Some(t) if !t.has_content => out.push(Problem::new(
                "has_content_mismatch",
                f,
                c.line,
                "topic_id",
                format!(
                    "topic `{}` has content here but has_content is False in {TOPICS_FILE} line {}",
                    c.topic_id, t.line
                ),
            )),
            _ => {}
        }
        if c.content_ids.is_empty() {
            out.push(Problem::new(
                "empty_content_ids",
                f,
                c.line,
                "content_ids",
                "no content ids",
            ));
        }
        let mut in_row = HashSet::new();
        for cid in &c.content_ids {
            if !in_row.insert(cid.as_str()) {
                out.push(Problem::new(
                    "duplicate_pair",
                    f,
                    c.line,
                    "content_ids",
                    format!("content `{cid}` is listed twice"),
                ));
            }
            match ds.content(cid) {
                None => out.push(Problem::new(
                    "unknown_content",
                    f,
                    c.line,
                    "content_ids",
                    format!("content `{cid}` is not in {CONTENT_FILE}"),
                )),
                Some(content) => {
                    if let Some(t) = topic {
                        if t.language != content.language {
                            out.push(Problem::new(
                                "language_mismatch",
                                f,
                                c.line,
                                "content_ids",
                                format!(
                                    "topic `{}` is `{}` but content `{cid}` is `{}`",
                                    t.id, t.language, content.language
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    for t in &ds.topics {
        if t.has_content && !seen.contains_key(t.id.as_str()) {
            out.push(Problem::new(
                "has_content_mismatch",
                TOPICS_FILE,
                t.line,
                "has_content",
                format!("topic `{}` says True but has no row in {f}", t.id),
            ));
        }
    }
}

fn check_sample(ds: &Dataset, out: &mut Vec<Problem>) {
    for (id, &line) in ds.sample_topics.iter().zip(&ds.sample_lines) {
        if ds.topic(id).is_none() {
            out.push(Problem::new(
                "unknown_topic",
                SAMPLE_SUBMISSION_FILE,
                line,
                "topic_id",
                format!("topic `{id}` is not in {TOPICS_FILE}"),
            ));
        }
    }
}

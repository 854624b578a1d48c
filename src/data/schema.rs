//! Row types for the competition files (method §1). Everything is read as text and checked by
//! `validate`, so a bad value becomes a warning with file, line and field instead of a failure.

use serde::Deserialize;

pub const TOPICS_FILE: &str = "topics.csv";
pub const CONTENT_FILE: &str = "content.csv";
pub const CORRELATIONS_FILE: &str = "correlations.csv";
pub const SAMPLE_SUBMISSION_FILE: &str = "sample_submission.csv";

pub const TOPIC_COLUMNS: &[&str] = &[
    "id",
    "title",
    "description",
    "channel",
    "category",
    "level",
    "language",
    "parent",
    "has_content",
];
pub const CONTENT_COLUMNS: &[&str] = &[
    "id",
    "title",
    "description",
    "kind",
    "text",
    "language",
    "copyright_holder",
    "license",
];
pub const CORRELATION_COLUMNS: &[&str] = &["topic_id", "content_ids"];

pub const CATEGORIES: &[&str] = &["source", "aligned", "supplemental"];
pub const KINDS: &[&str] = &["document", "video", "exercise", "audio", "html5"];

/// Fold of topics without content (method §3).
pub const NO_FOLD: i32 = -1;

/// One row of `topics.csv` (or a translated `topics_{k}.csv`).
#[derive(Debug, Clone, Deserialize)]
pub struct TopicRow {
    pub id: String,
    pub title: String,
    pub description: String,
    pub channel: String,
    pub category: String,
    pub level: String,
    pub language: String,
    pub parent: String,
    pub has_content: String,
    #[serde(default)]
    pub fold: Option<String>,
    #[serde(default)]
    pub language_t: Option<String>,
}

/// One row of `content.csv` (or a translated `content_{k}.csv`).
#[derive(Debug, Clone, Deserialize)]
pub struct ContentRow {
    pub id: String,
    pub title: String,
    pub description: String,
    pub kind: String,
    pub text: String,
    pub language: String,
    pub copyright_holder: String,
    pub license: String,
    #[serde(default)]
    pub folds: Option<String>,
    #[serde(default)]
    pub language_t: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CorrelationRow {
    pub topic_id: String,
    #[serde(default)]
    pub content_ids: String,
    #[serde(default)]
    pub fold: Option<String>,
}

/// A topic as lecr uses it. `line` is the 1-based line of the row in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub id: String,
    pub title: String,
    pub description: String,
    pub channel: String,
    pub category: String,
    /// `None` when the file's value is not a non-negative integer (reported by validation).
    pub level: Option<u32>,
    pub language: String,
    pub parent: Option<String>,
    pub has_content: bool,
    /// Present in files written by `lecr split`.
    pub fold: Option<i32>,
    pub line: u64,
}

/// A content item as lecr uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub id: String,
    pub title: String,
    pub description: String,
    pub kind: String,
    pub text: String,
    pub language: String,
    pub copyright_holder: String,
    pub license: String,
    pub line: u64,
}

/// One row of `correlations.csv`: a topic and its ground-truth contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Correlation {
    pub topic_id: String,
    pub content_ids: Vec<String>,
    pub fold: Option<i32>,
    pub line: u64,
}

/// Parses Kaggle's `True`/`False` (and the usual spellings of booleans).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "t" => Some(true),
        "false" | "0" | "no" | "f" | "" => Some(false),
        _ => None,
    }
}

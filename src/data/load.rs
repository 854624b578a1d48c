//! Reading a data folder in the Kaggle layout (method §1), with the fold columns written by
//! `lecr split` and the translated pools `topics_{k}.csv` / `content_{k}.csv` when present.
//!
//! Structural problems (missing file or column, unparseable CSV) are errors that name the file,
//! line and field. Values that parse as CSV but make no sense (a level that is not a number) are
//! kept as [`Problem`]s for the validation report.

use super::schema::*;
use super::validate::Problem;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: file not found ({what})")]
    MissingFile { path: PathBuf, what: &'static str },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: missing column(s) {missing:?} in the header (found {found:?})")]
    MissingColumns {
        path: PathBuf,
        missing: Vec<String>,
        found: Vec<String>,
    },
    #[error("{path}:{line}{}: {message}", field.as_ref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
    Csv {
        path: PathBuf,
        line: u64,
        field: Option<String>,
        message: String,
    },
}

/// All files of one data folder.
#[derive(Debug, Default, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub topics: Vec<Topic>,
    pub contents: Vec<Content>,
    pub correlations: Vec<Correlation>,
    /// Topic ids of `sample_submission.csv` (the topics to predict), empty if the file is absent.
    pub sample_topics: Vec<String>,
    /// Line of each sample topic, for reports.
    pub sample_lines: Vec<u64>,
    /// First index of each topic id / content id.
    pub topic_index: HashMap<String, usize>,
    pub content_index: HashMap<String, usize>,
    /// Value problems met while reading (bad numbers, booleans); validation adds the rest.
    pub load_problems: Vec<Problem>,
}

impl Dataset {
    pub fn topic(&self, id: &str) -> Option<&Topic> {
        self.topic_index.get(id).map(|&i| &self.topics[i])
    }
    pub fn content(&self, id: &str) -> Option<&Content> {
        self.content_index.get(id).map(|&i| &self.contents[i])
    }
    /// The ground-truth pairs as (topic index, content index), skipping ids that do not
    /// resolve (validation reports those).
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for c in &self.correlations {
            let Some(&t) = self.topic_index.get(&c.topic_id) else {
                continue;
            };
            for cid in &c.content_ids {
                if let Some(&ci) = self.content_index.get(cid) {
                    out.push((t, ci));
                }
            }
        }
        out
    }
    /// Number of translated pools (`topics_{k}.csv` and `content_{k}.csv`, k = 1, 2, ...).
    pub fn pool_count(&self) -> usize {
        (1..)
            .take_while(|k| {
                self.dir.join(format!("topics_{k}.csv")).exists()
                    && self.dir.join(format!("content_{k}.csv")).exists()
            })
            .count()
    }
}

impl Dataset {
    /// Appends the topics and contents whose ids are new (curators' Studio items, say), keeping
    /// the indices in step. Returns how many of each were added.
    pub fn append(&mut self, topics: Vec<Topic>, contents: Vec<Content>) -> (usize, usize) {
        let (t0, c0) = (self.topics.len(), self.contents.len());
        for t in topics {
            if !self.topic_index.contains_key(&t.id) {
                self.topic_index.insert(t.id.clone(), self.topics.len());
                self.topics.push(t);
            }
        }
        for c in contents {
            if !self.content_index.contains_key(&c.id) {
                self.content_index.insert(c.id.clone(), self.contents.len());
                self.contents.push(c);
            }
        }
        (self.topics.len() - t0, self.contents.len() - c0)
    }
}

/// Reads one file in the layout of `topics.csv`; a value problem (a bad level, say) is an
/// error naming the file, line and field.
pub fn read_topics_file(path: &Path) -> Result<Vec<Topic>, DataError> {
    let mut problems = Vec::new();
    let topics = read_topics(path, &mut problems, &mut Vec::new())?;
    match problems.into_iter().next() {
        Some(p) => Err(DataError::Csv {
            path: path.to_path_buf(),
            line: p.line,
            field: Some(p.field),
            message: p.message,
        }),
        None => Ok(topics),
    }
}

/// Reads one file in the layout of `content.csv`.
pub fn read_contents_file(path: &Path) -> Result<Vec<Content>, DataError> {
    read_contents(path, &mut Vec::new())
}

/// A translated pool: the same ids, texts in `language_t`.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub topics: Vec<Topic>,
    pub contents: Vec<Content>,
    /// `language_t` of each topic / content row.
    pub topic_language_t: Vec<String>,
    pub content_language_t: Vec<String>,
}

/// Loads a data folder. `topics.csv`, `content.csv` and `correlations.csv` are required;
/// `sample_submission.csv` is optional.
pub fn load_dataset(dir: &Path) -> Result<Dataset, DataError> {
    let mut ds = Dataset {
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    let mut problems = Vec::new();
    ds.topics = read_topics(&dir.join(TOPICS_FILE), &mut problems, &mut Vec::new())?;
    ds.contents = read_contents(&dir.join(CONTENT_FILE), &mut Vec::new())?;
    ds.correlations = read_correlations(&dir.join(CORRELATIONS_FILE), &mut problems)?;
    let sample = dir.join(SAMPLE_SUBMISSION_FILE);
    if sample.exists() {
        read_rows::<CorrelationRow>(&sample, &["topic_id"], |row, line| {
            ds.sample_topics.push(row.topic_id.trim().to_string());
            ds.sample_lines.push(line);
        })?;
    }
    for (i, t) in ds.topics.iter().enumerate() {
        ds.topic_index.entry(t.id.clone()).or_insert(i);
    }
    for (i, c) in ds.contents.iter().enumerate() {
        ds.content_index.entry(c.id.clone()).or_insert(i);
    }
    ds.load_problems = problems;
    Ok(ds)
}

/// Loads translated pool `k` (1-based) of a data folder.
pub fn load_pool(dir: &Path, k: usize) -> Result<Pool, DataError> {
    let mut problems = Vec::new();
    let mut pool = Pool::default();
    pool.topics = read_topics(
        &dir.join(format!("topics_{k}.csv")),
        &mut problems,
        &mut pool.topic_language_t,
    )?;
    pool.contents = read_contents(
        &dir.join(format!("content_{k}.csv")),
        &mut pool.content_language_t,
    )?;
    Ok(pool)
}

fn read_topics(
    path: &Path,
    problems: &mut Vec<Problem>,
    language_t: &mut Vec<String>,
) -> Result<Vec<Topic>, DataError> {
    let mut topics = Vec::new();
    let file = file_name(path);
    read_rows::<TopicRow>(path, TOPIC_COLUMNS, |r, line| {
        let level = match r.level.trim().parse::<u32>() {
            Ok(v) => Some(v),
            Err(_) => {
                problems.push(Problem::new(
                    "bad_value",
                    &file,
                    line,
                    "level",
                    format!("`{}` is not a non-negative integer", r.level),
                ));
                None
            }
        };
        let has_content = parse_bool(&r.has_content).unwrap_or_else(|| {
            problems.push(Problem::new(
                "bad_value",
                &file,
                line,
                "has_content",
                format!("`{}` is not True or False", r.has_content),
            ));
            false
        });
        let fold = r
            .fold
            .as_deref()
            .and_then(|f| match f.trim().parse::<i32>() {
                Ok(v) => Some(v),
                Err(_) => {
                    problems.push(Problem::new(
                        "bad_value",
                        &file,
                        line,
                        "fold",
                        format!("`{f}` is not an integer"),
                    ));
                    None
                }
            });
        if let Some(lt) = r.language_t {
            language_t.push(lt.trim().to_string());
        }
        let parent = r.parent.trim();
        topics.push(Topic {
            id: r.id.trim().to_string(),
            title: r.title,
            description: r.description,
            channel: r.channel.trim().to_string(),
            category: r.category.trim().to_string(),
            level,
            language: r.language.trim().to_string(),
            parent: (!parent.is_empty()).then(|| parent.to_string()),
            has_content,
            fold,
            line,
        });
    })?;
    Ok(topics)
}

fn read_contents(path: &Path, language_t: &mut Vec<String>) -> Result<Vec<Content>, DataError> {
    let mut contents = Vec::new();
    read_rows::<ContentRow>(path, CONTENT_COLUMNS, |r, line| {
        if let Some(lt) = r.language_t {
            language_t.push(lt.trim().to_string());
        }
        contents.push(Content {
            id: r.id.trim().to_string(),
            title: r.title,
            description: r.description,
            kind: r.kind.trim().to_string(),
            text: r.text,
            language: r.language.trim().to_string(),
            copyright_holder: r.copyright_holder,
            license: r.license,
            line,
        });
    })?;
    Ok(contents)
}

fn read_correlations(
    path: &Path,
    problems: &mut Vec<Problem>,
) -> Result<Vec<Correlation>, DataError> {
    let mut out = Vec::new();
    let file = file_name(path);
    read_rows::<CorrelationRow>(path, CORRELATION_COLUMNS, |r, line| {
        let fold = r
            .fold
            .as_deref()
            .and_then(|f| match f.trim().parse::<i32>() {
                Ok(v) => Some(v),
                Err(_) => {
                    problems.push(Problem::new(
                        "bad_value",
                        &file,
                        line,
                        "fold",
                        format!("`{f}` is not an integer"),
                    ));
                    None
                }
            });
        out.push(Correlation {
            topic_id: r.topic_id.trim().to_string(),
            content_ids: r
                .content_ids
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            fold,
            line,
        });
    })?;
    Ok(out)
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Opens a CSV file with a header row and checks that `required` columns are present.
pub fn open_csv(
    path: &Path,
    required: &[&str],
) -> Result<(csv::Reader<std::fs::File>, csv::StringRecord), DataError> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::MissingFile {
            path: path.to_path_buf(),
            what: "expected in the Kaggle layout: topics.csv, content.csv, correlations.csv",
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file);
    let headers = rdr
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect::<csv::StringRecord>();
    let missing: Vec<String> = required
        .iter()
        .filter(|c| !headers.iter().any(|h| h == **c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::MissingColumns {
            path: path.to_path_buf(),
            missing,
            found: headers.iter().take(20).map(str::to_string).collect(),
        });
    }
    Ok((rdr, headers))
}

/// Reads every row of a CSV file into `T`, calling `f(row, line)`.
pub fn read_rows<T: DeserializeOwned>(
    path: &Path,
    required: &[&str],
    mut f: impl FnMut(T, u64),
) -> Result<(), DataError> {
    let (mut rdr, headers) = open_csv(path, required)?;
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let line = rec.position().map(|p| p.line()).unwrap_or(0);
                let row: T = rec.deserialize(Some(&headers)).map_err(|e| {
                    let field = match e.kind() {
                        csv::ErrorKind::Deserialize { err, .. } => err
                            .field()
                            .and_then(|i| headers.get(i as usize))
                            .map(str::to_string),
                        _ => None,
                    };
                    DataError::Csv {
                        path: path.to_path_buf(),
                        line,
                        field,
                        message: e.to_string(),
                    }
                })?;
                f(row, line);
            }
            Err(e) => return Err(csv_error(path, e)),
        }
    }
    Ok(())
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let (line, field, message) = match e.kind() {
        csv::ErrorKind::Utf8 { pos, err } => (
            pos.as_ref().map(|p| p.line()).unwrap_or(0),
            Some(format!("#{}", err.field() + 1)),
            format!("invalid UTF-8 (is this a text CSV file?): {err}"),
        ),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => (
            pos.as_ref().map(|p| p.line()).unwrap_or(0),
            None,
            format!(
                "row has {len} fields but the header has {expected_len} \
                 (truncated file or an unbalanced quote?)"
            ),
        ),
        csv::ErrorKind::Io(err) => {
            return DataError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(err.kind(), err.to_string()),
            }
        }
        _ => (
            e.position().map(|p| p.line()).unwrap_or(0),
            None,
            e.to_string(),
        ),
    };
    DataError::Csv {
        path: path.to_path_buf(),
        line,
        field,
        message,
    }
}

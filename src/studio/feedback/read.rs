//! Reading a Studio export: the `\copy … CSV HEADER` files an operator dumps with `psql`
//! (`docs/studio-feedback.md` has the commands). Every error names the file, the line and the
//! column; ids are normalized here (pitfall 1: dashed in uuid columns and in `context`,
//! dashless in `content[]` and in `contentnode`'s varchar(32) columns, case not guaranteed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why an export could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: missing ({hint})", path.display())]
    MissingFile { path: PathBuf, hint: &'static str },
    #[error("{}: missing column(s) {} (found: {})", path.display(), missing.join(", "), found.join(", "))]
    MissingColumns {
        path: PathBuf,
        missing: Vec<String>,
        found: Vec<String>,
    },
    #[error("{}, line {line}, column `{column}`: {message}", path.display())]
    Field {
        path: PathBuf,
        line: u64,
        column: String,
        message: String,
    },
    #[error("{}, line {line}: {message}", path.display())]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// One file of the export, read whole (exports are megabytes, not gigabytes: one row per
/// list shown and per curator action).
pub struct Table {
    pub path: PathBuf,
    columns: HashMap<String, usize>,
    rows: Vec<(u64, csv::StringRecord)>,
}

/// One row of a [`Table`], with what an error about it needs.
pub struct Row<'a> {
    table: &'a Table,
    pub line: u64,
    rec: &'a csv::StringRecord,
}

impl Table {
    /// Reads `dir/name`, which must have the `required` columns.
    pub fn read(dir: &Path, name: &str, required: &[&str], hint: &'static str) -> Result<Table> {
        let path = dir.join(name);
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ExportError::MissingFile {
                path: path.clone(),
                hint,
            },
            _ => ExportError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(std::io::BufReader::new(file));
        let csv_err = |path: &Path, e: csv::Error| ExportError::Csv {
            path: path.to_path_buf(),
            line: e.position().map_or(0, |p| p.line()),
            message: match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!(
                    "row has {len} fields but the header has {expected_len} \
                     (truncated file or an unbalanced quote?)"
                ),
                _ => e.to_string(),
            },
        };
        let headers = rdr.headers().map_err(|e| csv_err(&path, e))?.clone();
        let columns: HashMap<String, usize> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().trim_start_matches('\u{feff}').to_string(), i))
            .collect();
        let missing: Vec<String> = required
            .iter()
            .filter(|c| !columns.contains_key(**c))
            .map(|c| c.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ExportError::MissingColumns {
                path,
                missing,
                found: headers.iter().map(str::to_string).collect(),
            });
        }
        let mut rows = Vec::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| csv_err(&path, e))?;
            rows.push((rec.position().map_or(0, |p| p.line()), rec));
        }
        Ok(Table {
            path,
            columns,
            rows,
        })
    }

    /// Reads `dir/name` if it exists.
    pub fn read_optional(dir: &Path, name: &str, required: &[&str]) -> Result<Option<Table>> {
        if !dir.join(name).exists() {
            return Ok(None);
        }
        Table::read(dir, name, required, "optional").map(Some)
    }

    pub fn has(&self, column: &str) -> bool {
        self.columns.contains_key(column)
    }

    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(move |(line, rec)| Row {
            table: self,
            line: *line,
            rec,
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl Row<'_> {
    /// A column's text ("" when the column is absent: only optional columns are asked that way).
    pub fn get(&self, column: &str) -> &str {
        self.table
            .columns
            .get(column)
            .and_then(|&i| self.rec.get(i))
            .unwrap_or("")
    }

    /// An error about `column` of this row.
    pub fn error(&self, column: &str, message: impl Into<String>) -> ExportError {
        ExportError::Field {
            path: self.table.path.clone(),
            line: self.line,
            column: column.to_string(),
            message: message.into(),
        }
    }

    /// A UUID column (dashed or not, any case) as 32 lowercase hex digits.
    pub fn uuid(&self, column: &str) -> Result<String> {
        let v = self.get(column);
        hex_id(v).ok_or_else(|| self.error(column, format!("`{}` is not a UUID", clip(v))))
    }

    /// A UUID column that may be empty.
    pub fn opt_uuid(&self, column: &str) -> Result<Option<String>> {
        if self.get(column).trim().is_empty() {
            Ok(None)
        } else {
            self.uuid(column).map(Some)
        }
    }

    /// A jsonb column.
    pub fn json(&self, column: &str) -> Result<serde_json::Value> {
        serde_json::from_str(self.get(column))
            .map_err(|e| self.error(column, format!("not JSON: {e}")))
    }
}

/// A UUID in any of the export's spellings as 32 lowercase hex digits (what Studio's varchar(32)
/// id columns and the service's content ids hold).
pub fn hex_id(s: &str) -> Option<String> {
    uuid::Uuid::try_parse(s.trim())
        .ok()
        .map(|u| u.simple().to_string())
}

/// 32 hex digits as the dashed lowercase form (what Studio sends the service as a topic id).
pub fn dashed(hex: &str) -> String {
    uuid::Uuid::try_parse(hex)
        .map(|u| u.hyphenated().to_string())
        .unwrap_or_else(|_| hex.to_string())
}

/// A value cut for an error message.
pub fn clip(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A timestamp as PostgreSQL writes `timestamptz` (`2025-11-03 14:22:05.123+00`, any offset),
/// or ISO 8601 / RFC 3339, as UTC.
pub fn timestamp(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = s.trim();
    chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_every_spelling_normalize_to_one() {
        let want = "6f1c2a9e0b7d4c1e9a553f2d8e4b7c10";
        for s in [
            "6f1c2a9e-0b7d-4c1e-9a55-3f2d8e4b7c10",
            "6F1C2A9E-0B7D-4C1E-9A55-3F2D8E4B7C10",
            "6f1c2a9e0b7d4c1e9a553f2d8e4b7c10",
            " 6F1C2A9E0B7D4C1E9A553F2D8E4B7C10 ",
        ] {
            assert_eq!(hex_id(s).as_deref(), Some(want), "{s}");
        }
        assert_eq!(dashed(want), "6f1c2a9e-0b7d-4c1e-9a55-3f2d8e4b7c10");
        assert_eq!(hex_id("6f1c2a9e"), None);
        assert_eq!(hex_id("zz1c2a9e0b7d4c1e9a553f2d8e4b7c10"), None);
    }

    #[test]
    fn postgres_timestamps_with_any_offset() {
        let a = timestamp("2025-11-03 14:22:05.123+00").unwrap();
        let b = timestamp("2025-11-03 16:22:05.123+02").unwrap();
        let c = timestamp("2025-11-03 14:22:05.123+00:00").unwrap();
        let d = timestamp("2025-11-03T14:22:05.123Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
        assert_eq!(
            timestamp("2025-11-03 14:22:05+00").unwrap().timestamp(),
            a.timestamp()
        );
        assert!(timestamp("yesterday").is_none());
    }
}

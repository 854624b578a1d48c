//! State that outlives a process, used by `serve`, `train` and the CLI alike: one SQLite file
//! (`DIR/lecr.sqlite`, bundled SQLite, WAL, `synchronous=FULL`) holding
//!
//! - [`contents`]: each content's metadata, the exact text the encoder saw and its vector, and
//!   which model made the vectors;
//! - [`topics`]: the Studio topics the service has seen, with their ancestors;
//! - [`decisions`]: the append-only log of curators' decisions.
//!
//! Every change is one transaction, committed before the caller returns, so an answered write
//! survives a kill -9. The schema is versioned with `PRAGMA user_version`; [`Store::open`]
//! applies the missing migrations in one transaction, so a store written by one release opens
//! in the next, and refuses a store written by a newer release.
//!
//! This layer knows nothing of HTTP or models: it is below `serve` and `train`.

pub mod contents;
pub mod decisions;
pub mod topics;

pub use contents::{ContentMeta, StoredContent};
pub use decisions::{Decision, DecisionKind, DecisionOrigin, NewDecision};
pub use topics::{TopicOrigin, TopicRecord};

use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};

/// The file a store directory holds.
pub const FILE_NAME: &str = "lecr.sqlite";

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the store is at schema version {found}, this lecr knows versions up to {supported}; use a newer lecr")]
    NewerSchema {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The schema, one step per version: step `k` takes a store from version `k` to `k + 1`.
/// Version 1 is the layout of the releases before versioning (`CREATE ... IF NOT EXISTS`, so
/// it is a no-op on such a store); version 2 adds the decision's origin.
const MIGRATIONS: &[&str] = &[
    // 0 → 1
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS contents (
         id TEXT PRIMARY KEY,
         channel_id TEXT NOT NULL,
         title TEXT NOT NULL,
         description TEXT NOT NULL,
         kind TEXT NOT NULL,
         language TEXT,
         text TEXT NOT NULL,
         vector BLOB NOT NULL
     );
     CREATE TABLE IF NOT EXISTS feedback (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         topic_id TEXT NOT NULL,
         content_id TEXT NOT NULL,
         decision TEXT NOT NULL CHECK (decision IN ('accept', 'reject', 'undo')),
         model TEXT NOT NULL,
         margin REAL,
         time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
     );
     CREATE INDEX IF NOT EXISTS feedback_pair ON feedback (topic_id, content_id);
     CREATE TABLE IF NOT EXISTS topics (
         id TEXT PRIMARY KEY,
         channel TEXT NOT NULL,
         title TEXT NOT NULL,
         description TEXT NOT NULL,
         language TEXT NOT NULL,
         parent TEXT,
         level INTEGER NOT NULL,
         text TEXT NOT NULL
     );",
    // 1 → 2: where a decision was made (the curator page, or imported from Studio).
    "ALTER TABLE feedback ADD COLUMN origin TEXT NOT NULL DEFAULT 'page'
         CHECK (origin IN ('page', 'studio'));",
];

/// The schema version this lecr writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub struct Store {
    conn: Connection,
    /// Where it lives, for messages (`memory` for an in-memory store).
    place: String,
}

impl Store {
    /// Opens (creating) `dir/lecr.sqlite` and brings its schema up to date; `None` keeps
    /// everything in memory.
    pub fn open(dir: Option<&Path>) -> Result<Self> {
        let (mut conn, place) = match dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|source| StoreError::Io {
                    path: d.to_path_buf(),
                    source,
                })?;
                let p = d.join(FILE_NAME);
                (Connection::open(&p)?, p.display().to_string())
            }
            None => (Connection::open_in_memory()?, "the in-memory store".into()),
        };
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Another process (a `feedback export` while the service writes) waits, not fails.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut conn, &place)?;
        Ok(Store { conn, place })
    }

    /// Opens an existing store directory (for readers such as `feedback export`): a directory
    /// without `lecr.sqlite` is an error, not a new empty store.
    pub fn open_existing(dir: &Path) -> Result<Self> {
        if !dir.join(FILE_NAME).exists() {
            return Err(StoreError::Invalid(format!(
                "{}: no {FILE_NAME} here (give the folder `lecr serve --store` used)",
                dir.display()
            )));
        }
        Self::open(Some(dir))
    }

    /// Where the store lives (a path, or "the in-memory store").
    pub fn place(&self) -> &str {
        &self.place
    }

    /// The schema version of the open store.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            rusqlite::params![key, value],
        )?;
        Ok(())
    }
}

/// Applies the missing migrations in one immediate transaction (a second process opening the
/// same file waits for it), then records the version.
fn migrate(conn: &mut Connection, place: &str) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: place.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Read again under the lock: another process may have migrated meanwhile.
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for step in MIGRATIONS.iter().skip(found.max(0) as usize) {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    if found > 0 {
        tracing::info!("{place}: schema migrated from version {found} to {SCHEMA_VERSION}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_of_the_previous_schema_opens_migrated_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A store as releases before schema versions wrote it (user_version 0).
            let c = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute(
                "INSERT INTO feedback (topic_id, content_id, decision, model) \
                 VALUES ('t', 'c', 'accept', 'm')",
                [],
            )
            .unwrap();
        }
        let s = Store::open(Some(dir.path())).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let d = s.decisions(None).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, DecisionKind::Accept);
        assert_eq!(d[0].origin, DecisionOrigin::Page);
        drop(s);
        // Opening again changes nothing; a newer version is refused with a message.
        assert_eq!(
            Store::open(Some(dir.path()))
                .unwrap()
                .schema_version()
                .unwrap(),
            SCHEMA_VERSION
        );
        {
            let c = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let e = Store::open(Some(dir.path())).err().unwrap();
        assert!(e.to_string().contains("newer lecr"), "{e}");
    }

    #[test]
    fn a_new_store_is_at_the_latest_version_and_readers_need_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Store::open_existing(dir.path()).is_err());
        let s = Store::open(Some(dir.path())).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        drop(s);
        assert!(Store::open_existing(dir.path()).is_ok());
    }
}

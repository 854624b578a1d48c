//! State that outlives a process, used by `serve`, `train` and the CLI alike: one SQLite file
//! (`DIR/lecr.sqlite`, bundled SQLite, WAL, `synchronous=FULL`), or a PostgreSQL database
//! (`postgres://` URL) that several servers can share, holding
//!
//! - [`contents`]: each content's metadata, the exact text the encoder saw and its vector, and
//!   which model made the vectors;
//! - [`topics`]: the Studio topics the service has seen, with their ancestors;
//! - [`decisions`]: the append-only log of curators' decisions.
//!
//! Every change is one transaction, committed before the caller returns, so an answered write
//! survives a kill -9. The schema is versioned (SQLite: `PRAGMA user_version`; PostgreSQL: the
//! `lecr_schema` table); opening applies the missing migrations in one transaction (on
//! PostgreSQL under an advisory lock, so servers starting together do not race), so a store
//! written by one release opens in the next, and a store written by a newer release is refused.
//! Both back ends run the same SQL (`$N` parameters, `CAST`, `RETURNING`), except where a
//! dialect differs (the schema, the insertion-order column).
//!
//! This layer knows nothing of HTTP or models: it is below `serve` and `train`.

pub mod changes;
pub mod cluster;
pub mod contents;
pub mod decisions;
pub mod search;
pub mod tls;
pub mod topics;

pub use contents::{ContentMeta, StoredContent};
pub use decisions::{Decision, DecisionKind, DecisionOrigin, NewDecision};
pub use topics::{TopicOrigin, TopicRecord};

use rusqlite::{Connection, OptionalExtension};
use std::cell::RefCell;
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
    #[error("store: {0}")]
    Postgres(#[from] postgres::Error),
    /// The database cannot be reached (now); a later call reconnects.
    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    /// The database is unreachable, the connection broke, or the server gave way (as
    /// opposed to a bad query or data): worth a retry, not a bug. Server errors of classes 53
    /// (insufficient resources: too many connections, out of memory) and 57 (operator
    /// intervention: a query cancelled by `statement_timeout`, a server shutting down) count.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Postgres(e) => match e.as_db_error() {
                None => true,
                Some(db) => e.is_closed() || matches!(db.code().code().get(..2), Some("53" | "57")),
            },
            _ => false,
        }
    }
}

/// Where a store lives: `--store` (or `LECR_STORE`) as given.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    Memory,
    /// A directory holding `lecr.sqlite`.
    Dir(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL, else a directory.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::Dir(PathBuf::from(s))
        }
    }
}

/// The location as messages show it: a URL's password is never printed.
impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Memory => f.write_str("the in-memory store"),
            Location::Dir(d) => write!(f, "{}", d.join(FILE_NAME).display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db` (also a `password=`
/// parameter).
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let (a, b) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
                out.replace_range(a..b, "***");
            }
        }
    }
    if let Some(p) = out.find("password=") {
        let end = out[p..].find('&').map_or(out.len(), |e| p + e);
        out.replace_range(p + "password=".len()..end, "***");
    }
    out
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The schema, one step per version: step `k` takes a store from version `k` to `k + 1`.
/// Version 1 is the layout of the releases before versioning (`CREATE ... IF NOT EXISTS`, so
/// it is a no-op on such a store); version 2 adds the decision's origin; version 3 the change
/// log replicas follow; version 4 who wrote each change (a server skips its own).
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
    // 2 → 3: the change log a running service follows (other replicas' writes, an import
    // beside it).
    "CREATE TABLE IF NOT EXISTS changes (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         kind TEXT NOT NULL,
         key TEXT NOT NULL,
         at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
     );",
    // 3 → 4: the server that wrote a change (NULL: any other writer, such as an import), so
    // that a server following the log skips what it already applied.
    "ALTER TABLE changes ADD COLUMN writer TEXT;",
];

/// The same steps for PostgreSQL (insertion order from an `added` sequence, since there is no
/// rowid; `bytea` vectors; the time from the server's clock in UTC).
const PG_MIGRATIONS: &[&str] = &[
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
         vector BYTEA NOT NULL,
         added BIGSERIAL
     );
     CREATE TABLE IF NOT EXISTS feedback (
         seq BIGSERIAL PRIMARY KEY,
         topic_id TEXT NOT NULL,
         content_id TEXT NOT NULL,
         decision TEXT NOT NULL CHECK (decision IN ('accept', 'reject', 'undo')),
         model TEXT NOT NULL,
         margin REAL,
         time TEXT NOT NULL
             DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
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
         text TEXT NOT NULL,
         added BIGSERIAL
     );",
    // 1 → 2
    "ALTER TABLE feedback ADD COLUMN IF NOT EXISTS origin TEXT NOT NULL DEFAULT 'page'
         CHECK (origin IN ('page', 'studio'));",
    // 2 → 3: every committed change, in commit order, for the replicas to follow.
    "CREATE TABLE IF NOT EXISTS changes (
         seq BIGSERIAL PRIMARY KEY,
         kind TEXT NOT NULL,
         key TEXT NOT NULL,
         at TIMESTAMPTZ NOT NULL DEFAULT now()
     );",
    // 3 → 4
    "ALTER TABLE changes ADD COLUMN IF NOT EXISTS writer TEXT;",
];

/// The schema version this lecr writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key under which PostgreSQL migrations run ("lecr" in ASCII).
const PG_MIGRATION_LOCK: i64 = 0x6c65_6372;

/// The connection of one back end. PostgreSQL's client needs `&mut` for every query; the
/// `RefCell` keeps the store's read methods `&self` like SQLite's (a store is used by one
/// thread at a time: the service keeps it behind a mutex).
pub(crate) enum Db {
    Sqlite(Connection),
    Postgres(Box<Pg>),
}

/// A PostgreSQL connection that reconnects by itself: a call that finds it closed connects
/// again first (and fails with [`StoreError::Unavailable`] while the database is down).
pub(crate) struct Pg {
    /// Always `Some` but while dropping.
    client: RefCell<Option<postgres::Client>>,
    url: String,
    place: String,
}

/// The synchronous client runs its own runtime to close the connection: dropped on an async
/// thread (the service's last engine reference going at shutdown) that would panic, so the
/// drop happens on a thread of its own.
impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            std::thread::scope(|s| {
                s.spawn(move || drop(client));
            });
        }
    }
}

impl Pg {
    fn connect(url: &str, place: &str) -> Result<postgres::Client> {
        let mut client = tls::connect(url, place)?;
        // So an operator (and `--reembed`) can see which sessions are lecr's.
        client.batch_execute("SET application_name = 'lecr'; SET client_min_messages = warning")?;
        Ok(client)
    }

    /// The client, connected again if the connection was lost.
    pub(crate) fn borrow_mut(&self) -> Result<std::cell::RefMut<'_, postgres::Client>> {
        let mut c = self.client.borrow_mut();
        if c.as_ref().is_none_or(|c| c.is_closed()) {
            *c = Some(Pg::connect(&self.url, &self.place)?);
            tracing::info!("{}: reconnected", self.place);
        }
        Ok(std::cell::RefMut::map(c, |c| {
            c.as_mut().expect("connected just above")
        }))
    }
}

pub struct Store {
    db: Db,
    /// Where it lives, for messages (a URL without its password).
    place: String,
    /// Who this connection's changes are logged as ([`Store::set_writer`]).
    writer: Option<String>,
    /// Whether the PostgreSQL search table is known to exist ([`search`]).
    search: std::cell::Cell<bool>,
}

impl Store {
    /// Opens (creating) `dir/lecr.sqlite` and brings its schema up to date; `None` keeps
    /// everything in memory.
    pub fn open(dir: Option<&Path>) -> Result<Self> {
        match dir {
            Some(d) => Self::open_at(&Location::Dir(d.to_path_buf())),
            None => Self::open_at(&Location::Memory),
        }
    }

    /// Opens (creating) the store at `loc` and brings its schema up to date.
    pub fn open_at(loc: &Location) -> Result<Self> {
        let place = loc.to_string();
        let db = match loc {
            Location::Postgres(url) => {
                let mut client = Pg::connect(url, &place)?;
                migrate_pg(&mut client, &place)?;
                Db::Postgres(Box::new(Pg {
                    client: RefCell::new(Some(client)),
                    url: url.clone(),
                    place: place.clone(),
                }))
            }
            Location::Memory | Location::Dir(_) => {
                let mut conn = match loc {
                    Location::Dir(d) => {
                        std::fs::create_dir_all(d).map_err(|source| StoreError::Io {
                            path: d.to_path_buf(),
                            source,
                        })?;
                        Connection::open(d.join(FILE_NAME))?
                    }
                    _ => Connection::open_in_memory()?,
                };
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "FULL")?;
                // Another process (a `feedback export` while the service writes) waits.
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                migrate(&mut conn, &place)?;
                Db::Sqlite(conn)
            }
        };
        Ok(Store {
            db,
            place,
            writer: None,
            search: Default::default(),
        })
    }

    /// Opens an existing store (for readers such as `feedback export`): a directory without
    /// `lecr.sqlite` is an error, not a new empty store.
    pub fn open_existing(dir: &Path) -> Result<Self> {
        if !dir.join(FILE_NAME).exists() {
            return Err(StoreError::Invalid(format!(
                "{}: no {FILE_NAME} here (give the folder `lecr serve --store` used)",
                dir.display()
            )));
        }
        Self::open(Some(dir))
    }

    /// [`Store::open_existing`] for a directory, [`Store::open_at`] for a URL.
    pub fn open_existing_at(loc: &Location) -> Result<Self> {
        match loc {
            Location::Dir(d) => Self::open_existing(d),
            other => Self::open_at(other),
        }
    }

    /// Where the store lives (a path, a URL without its password, or "the in-memory store").
    pub fn place(&self) -> &str {
        &self.place
    }

    /// The schema version of the open store.
    pub fn schema_version(&self) -> Result<i64> {
        match &self.db {
            Db::Sqlite(c) => Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?),
            Db::Postgres(c) => Ok(c
                .borrow_mut()?
                .query_one("SELECT version::bigint FROM lecr_schema", &[])?
                .get(0)),
        }
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<String>> {
        const SQL: &str = "SELECT value FROM meta WHERE key = $1";
        match &self.db {
            Db::Sqlite(c) => Ok(c.query_row(SQL, [key], |r| r.get(0)).optional()?),
            Db::Postgres(c) => Ok(c.borrow_mut()?.query_opt(SQL, &[&key])?.map(|r| r.get(0))),
        }
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        const SQL: &str = "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value";
        match &self.db {
            Db::Sqlite(c) => {
                c.execute(SQL, rusqlite::params![key, value])?;
            }
            Db::Postgres(c) => {
                c.borrow_mut()?.execute(SQL, &[&key, &value])?;
            }
        }
        Ok(())
    }

    /// The insertion-order column of `contents` and `topics`.
    fn order_column(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "rowid",
            Db::Postgres(_) => "added",
        }
    }
}

/// A row of either back end, read by column index: one mapping per record type serves both.
pub(crate) trait Cells {
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_real(&self, i: usize) -> Result<Option<f32>>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>>;
}

/// `Cells` for a row type whose typed getter is `$get` (integer columns are selected as
/// `bigint` on PostgreSQL, so `i64` reads both).
macro_rules! cells {
    ($row:ty, $get:ident) => {
        impl Cells for $row {
            fn text(&self, i: usize) -> Result<String> {
                Ok(self.$get(i)?)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>> {
                Ok(self.$get(i)?)
            }
            fn int(&self, i: usize) -> Result<i64> {
                Ok(self.$get(i)?)
            }
            fn opt_real(&self, i: usize) -> Result<Option<f32>> {
                Ok(self.$get(i)?)
            }
            fn bytes(&self, i: usize) -> Result<Vec<u8>> {
                Ok(self.$get(i)?)
            }
        }
    };
}

cells!(rusqlite::Row<'_>, get);
cells!(postgres::Row, try_get);

/// Rows of a SQLite query mapped with a [`Cells`] mapping.
pub(crate) fn sqlite_rows<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl Fn(&rusqlite::Row) -> Result<T>,
) -> Result<Vec<T>> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(map(r)?);
    }
    Ok(out)
}

/// Applies the missing PostgreSQL migrations in one transaction, under an advisory lock so
/// that replicas starting together migrate once.
fn migrate_pg(client: &mut postgres::Client, place: &str) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS lecr_schema (version INTEGER NOT NULL);
         INSERT INTO lecr_schema (version)
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM lecr_schema);",
    )?;
    let found: i64 = tx
        .query_one("SELECT version::bigint FROM lecr_schema", &[])?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: place.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for step in PG_MIGRATIONS.iter().skip(found.max(0) as usize) {
        tx.batch_execute(step)?;
    }
    tx.execute(
        "UPDATE lecr_schema SET version = $1",
        &[&(SCHEMA_VERSION as i32)],
    )?;
    tx.commit()?;
    if found > 0 && found < SCHEMA_VERSION {
        tracing::info!("{place}: schema migrated from version {found} to {SCHEMA_VERSION}");
    }
    Ok(())
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

/// Runs `check` against a SQLite directory, then against a throwaway PostgreSQL cluster: the
/// store's tests are one suite over both back ends.
#[cfg(test)]
pub(crate) fn on_both_backends(check: impl Fn(&Location)) {
    let dir = tempfile::tempdir().unwrap();
    check(&Location::Dir(dir.path().to_path_buf()));
    let pg = cluster::Cluster::start().expect("a PostgreSQL cluster for the store tests");
    check(&Location::Postgres(pg.url()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_their_passwords_are_never_shown() {
        let loc = Location::parse("postgres://lecr:s3cret@db.internal:5432/lecr?sslmode=disable");
        assert!(matches!(loc, Location::Postgres(_)));
        assert_eq!(
            loc.to_string(),
            "postgres://lecr:***@db.internal:5432/lecr?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://db/lecr?user=a&password=x1&x=2"),
            "postgresql://db/lecr?user=a&password=***&x=2"
        );
        assert_eq!(redact("postgres://lecr@db/lecr"), "postgres://lecr@db/lecr");
        assert_eq!(
            Location::parse("/var/lib/lecr"),
            Location::Dir("/var/lib/lecr".into())
        );
    }

    #[test]
    fn a_postgres_store_of_the_previous_schema_opens_migrated_and_a_newer_one_is_refused() {
        let pg = cluster::Cluster::start().unwrap();
        let loc = Location::Postgres(pg.url());
        {
            let mut c = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
            c.batch_execute(PG_MIGRATIONS[0]).unwrap();
            c.batch_execute(
                "CREATE TABLE lecr_schema (version INTEGER NOT NULL);
                 INSERT INTO lecr_schema VALUES (1);
                 INSERT INTO feedback (topic_id, content_id, decision, model)
                     VALUES ('t', 'c', 'accept', 'm');",
            )
            .unwrap();
        }
        // Two servers opening it at once: the advisory lock lets one migrate.
        let opened: Vec<Store> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2).map(|_| s.spawn(|| Store::open_at(&loc))).collect();
            hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        for st in &opened {
            assert_eq!(st.schema_version().unwrap(), SCHEMA_VERSION);
        }
        let d = opened[0].decisions(None).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].kind, d[0].origin),
            (DecisionKind::Accept, DecisionOrigin::Page)
        );
        drop(opened);
        let mut c = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
        c.execute(
            "UPDATE lecr_schema SET version = $1",
            &[&(SCHEMA_VERSION as i32 + 1)],
        )
        .unwrap();
        let e = Store::open_at(&loc).err().unwrap();
        assert!(e.to_string().contains("newer lecr"), "{e}");
    }

    #[test]
    fn an_unreachable_database_is_a_clear_error_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://lecr:hunter2@127.0.0.1:{port}/lecr?connect_timeout=2");
        let e = Store::open_at(&Location::parse(&url))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("cannot connect") && e.contains(&port.to_string()),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

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

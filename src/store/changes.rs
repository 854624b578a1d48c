//! The change log: every write appends, in the same transaction, one row per content,
//! decision or topic it changed (on PostgreSQL, then `NOTIFY lecr_changes`). Each `lecr serve`
//! keeps its index in memory and follows the log: it waits for a notification (PostgreSQL) or
//! polls (both; a lost notification only delays) and applies what other processes committed:
//! other replicas, or `lecr feedback import --store` beside a running service. A server that
//! starts loads the whole store, so the log only has to cover the time between two polls;
//! rows older than an hour are pruned.

use super::{Cells, Db, Location, Result, Store, StoreError};
use std::time::Duration;

/// The channel replicas listen on.
pub const CHANNEL: &str = "lecr_changes";

/// What a change names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A content id, upserted or deleted (the store says which).
    Content,
    /// A decision's sequence number.
    Decision,
    /// A Studio topic id.
    Topic,
}

impl ChangeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Content => "content",
            ChangeKind::Decision => "decision",
            ChangeKind::Topic => "topic",
        }
    }

    fn parse(s: &str) -> Option<ChangeKind> {
        [ChangeKind::Content, ChangeKind::Decision, ChangeKind::Topic]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub key: String,
    /// The server that wrote it ([`Store::set_writer`]); `None`: another writer.
    pub writer: Option<String>,
}

/// Appends change rows for `keys` inside a PostgreSQL transaction, and the notification
/// (delivered when the transaction commits).
pub(crate) fn log(
    tx: &mut postgres::Transaction,
    writer: Option<&str>,
    kind: ChangeKind,
    keys: &[&str],
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO changes (kind, key, writer) SELECT $1, k, $3 FROM unnest($2::text[]) AS k",
        &[&kind.as_str(), &keys, &writer],
    )?;
    tx.execute(&format!("NOTIFY {CHANNEL}"), &[])?;
    Ok(())
}

/// Appends change rows for `keys` inside a SQLite transaction (a process polling the log sees
/// them once it commits).
pub(crate) fn log_sqlite(
    tx: &rusqlite::Transaction,
    writer: Option<&str>,
    kind: ChangeKind,
    keys: &[&str],
) -> Result<()> {
    let mut st =
        tx.prepare_cached("INSERT INTO changes (kind, key, writer) VALUES (?1, ?2, ?3)")?;
    for k in keys {
        st.execute(rusqlite::params![kind.as_str(), k, writer])?;
    }
    Ok(())
}

impl Store {
    /// Logs this connection's changes as written by `writer` (a server's id, unique to the
    /// process and the moment it started), so that the server following the log can tell
    /// its own changes from others'.
    pub fn set_writer(&mut self, writer: &str) {
        self.writer = Some(writer.to_string());
    }

    /// Who this connection's changes are logged as.
    pub fn writer(&self) -> Option<&str> {
        self.writer.as_deref()
    }

    /// Whether this store is shared (PostgreSQL) and so has a change log to follow.
    pub fn is_shared(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// The last change's sequence number (0 when none).
    pub fn last_change(&self) -> Result<i64> {
        match &self.db {
            Db::Sqlite(c) => Ok(c.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM changes",
                [],
                |r| r.get(0),
            )?),
            Db::Postgres(c) => Ok(c
                .borrow_mut()?
                .query_one("SELECT COALESCE(MAX(seq), 0)::bigint FROM changes", &[])?
                .get(0)),
        }
    }

    /// Changes after `seq`, oldest first, at most `limit`.
    pub fn changes_after(&self, seq: i64, limit: i64) -> Result<Vec<Change>> {
        const SQL: &str =
            "SELECT seq, kind, key, writer FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2";
        let map = |r: &dyn Cells| -> Result<Change> {
            let kind = r.text(1)?;
            Ok(Change {
                seq: r.int(0)?,
                kind: ChangeKind::parse(&kind)
                    .ok_or_else(|| StoreError::Invalid(format!("unknown change kind `{kind}`")))?,
                key: r.text(2)?,
                writer: r.opt_text(3)?,
            })
        };
        match &self.db {
            Db::Sqlite(c) => super::sqlite_rows(c, SQL, [seq, limit], |r| map(r)),
            Db::Postgres(c) => c
                .borrow_mut()?
                .query(SQL, &[&seq, &limit])?
                .iter()
                .map(|r| map(r))
                .collect(),
        }
    }

    /// Other lecr sessions connected to a shared store (replicas, followers, exports): 0 for
    /// SQLite.
    pub fn other_sessions(&self) -> Result<i64> {
        let Db::Postgres(c) = &self.db else {
            return Ok(0);
        };
        Ok(c.borrow_mut()?
            .query_one(
                "SELECT count(*)::bigint FROM pg_stat_activity
                 WHERE application_name = 'lecr' AND pid <> pg_backend_pid()
                   AND datname = current_database()",
                &[],
            )?
            .get(0))
    }

    /// Drops change rows older than `age` (a server that was away loads the whole store).
    pub fn prune_changes(&self, age: Duration) -> Result<u64> {
        let secs = age.as_secs_f64();
        match &self.db {
            Db::Sqlite(c) => Ok(c.execute(
                "DELETE FROM changes
                 WHERE at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ?1 || ' seconds')",
                [secs],
            )? as u64),
            Db::Postgres(c) => Ok(c.borrow_mut()?.execute(
                "DELETE FROM changes WHERE at < now() - make_interval(secs => $1)",
                &[&secs],
            )?),
        }
    }
}

/// A connection that waits for change notifications.
pub struct Listener {
    client: postgres::Client,
}

// (Dropped on the follower's own thread, never on an async one.)

impl Listener {
    /// Listens on the store's change channel (`None` for a store without one).
    pub fn open(loc: &Location) -> Result<Option<Listener>> {
        let Location::Postgres(url) = loc else {
            return Ok(None);
        };
        let mut client = super::tls::connect(url, &loc.to_string())?;
        client.batch_execute(&format!(
            "SET application_name = 'lecr'; SET client_min_messages = warning; LISTEN {CHANNEL}"
        ))?;
        Ok(Some(Listener { client }))
    }

    /// Waits up to `timeout` for a notification; true when one (or more) came.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut n = self.client.notifications();
        let mut got = n.timeout_iter(timeout).next()?.is_some();
        // Several commits may have notified: take them all now.
        while n.iter().next()?.is_some() {
            got = true;
        }
        Ok(got)
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        ContentMeta, DecisionKind, DecisionOrigin, NewDecision, StoredContent, TopicOrigin,
        TopicRecord,
    };

    #[test]
    fn every_write_is_logged_in_commit_order_on_both_backends() {
        crate::store::on_both_backends(|loc| {
            let mut s = Store::open_at(loc).unwrap();
            let start = s.last_change().unwrap();
            let meta = ContentMeta {
                id: "c1".into(),
                channel_id: "ch".into(),
                title: "t".into(),
                description: String::new(),
                kind: "video".into(),
                language: Some("en".into()),
                short_text: String::new(),
            };
            let c = StoredContent {
                meta,
                text: "t".into(),
                vector: vec![1.0, 0.0],
            };
            s.apply(&[c], &[]).unwrap();
            s.remember_topics(&[TopicRecord {
                id: "t1".into(),
                channel: "ch".into(),
                title: "T".into(),
                description: String::new(),
                language: "en".into(),
                parent: None,
                level: 0,
                text: "T".into(),
                origin: TopicOrigin::Studio,
            }])
            .unwrap();
            let seq = s
                .record_decision(&NewDecision {
                    topic_id: "t1",
                    content_id: "c1",
                    kind: DecisionKind::Accept,
                    model: "m",
                    margin: None,
                    origin: DecisionOrigin::Studio,
                })
                .unwrap();
            // A deletion logged as a server's (the others are nobody's).
            s.set_writer("server-1");
            s.apply(&[], &["c1".to_string()]).unwrap();
            // Another connection (another process) reads them in order.
            let other = Store::open_at(loc).unwrap();
            let writers: Vec<Option<String>> = other
                .changes_after(start, 100)
                .unwrap()
                .into_iter()
                .map(|c| c.writer)
                .collect();
            assert_eq!(
                writers,
                [None, None, None, Some("server-1".to_string())],
                "who wrote each change"
            );
            let got: Vec<(ChangeKind, String)> = other
                .changes_after(start, 100)
                .unwrap()
                .into_iter()
                .map(|c| (c.kind, c.key))
                .collect();
            assert_eq!(
                got,
                [
                    (ChangeKind::Content, "c1".to_string()),
                    (ChangeKind::Topic, "t1".to_string()),
                    (ChangeKind::Decision, seq.to_string()),
                    (ChangeKind::Content, "c1".to_string()),
                ]
            );
            assert!(other.last_change().unwrap() >= start + 4);
            assert_eq!(other.changes_after(start, 2).unwrap().len(), 2);
            // Nothing is an hour old yet; everything is older than no time at all.
            assert_eq!(other.prune_changes(Duration::from_secs(3600)).unwrap(), 0);
            std::thread::sleep(Duration::from_millis(20));
            assert!(other.prune_changes(Duration::ZERO).unwrap() >= 4);
        });
    }
}

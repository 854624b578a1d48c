//! Curators' decisions and the Studio topics the service has seen, in the service's SQLite
//! store. Decisions are an append-only log (accept, reject, undo); a pair's current decision is
//! its latest entry, and an undo clears it. Each write is one transaction, committed before
//! the `200`.

use super::catalog::{Origin, TopicRec};
use super::store::Store;
use crate::data::{Content, Topic};
use anyhow::Result;
use rusqlite::params;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

pub const DECISIONS: &[&str] = &["accept", "reject", "undo"];

/// One decision as the log holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub seq: i64,
    pub topic_id: String,
    pub content_id: String,
    /// `accept`, `reject` or `undo`.
    pub decision: String,
    /// The model (and reranker) whose recommendation was judged.
    pub model: String,
    /// The margin the page showed (its threshold setting).
    pub margin: Option<f32>,
    /// UTC, ISO 8601, from SQLite's clock.
    pub time: String,
}

pub(super) const SCHEMA: &str = "
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
    );";

const DECISION_COLUMNS: &str = "seq, topic_id, content_id, decision, model, margin, time";

fn decision_row(r: &rusqlite::Row) -> rusqlite::Result<Decision> {
    Ok(Decision {
        seq: r.get(0)?,
        topic_id: r.get(1)?,
        content_id: r.get(2)?,
        decision: r.get(3)?,
        model: r.get(4)?,
        margin: r.get(5)?,
        time: r.get(6)?,
    })
}

impl Store {
    /// Appends a decision; returns its sequence number.
    pub fn record_decision(
        &mut self,
        topic_id: &str,
        content_id: &str,
        decision: &str,
        model: &str,
        margin: Option<f32>,
    ) -> Result<i64> {
        anyhow::ensure!(
            DECISIONS.contains(&decision),
            "decision `{decision}`: expected accept, reject or undo"
        );
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO feedback (topic_id, content_id, decision, model, margin)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![topic_id, content_id, decision, model, margin],
        )?;
        let seq = tx.last_insert_rowid();
        tx.commit()?;
        Ok(seq)
    }

    /// The current decision of every judged pair (of one topic, or all), oldest first;
    /// undone pairs are left out.
    pub fn decisions(&self, topic_id: Option<&str>) -> Result<Vec<Decision>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {DECISION_COLUMNS} FROM feedback
             WHERE seq IN (SELECT MAX(seq) FROM feedback
                           WHERE ?1 IS NULL OR topic_id = ?1 GROUP BY topic_id, content_id)
               AND decision != 'undo'
             ORDER BY seq"
        ))?;
        let rows = st.query_map([topic_id], decision_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every logged decision, undos included, oldest first.
    pub fn decision_log(&self) -> Result<Vec<Decision>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {DECISION_COLUMNS} FROM feedback ORDER BY seq"
        ))?;
        let rows = st.query_map([], decision_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Keeps Studio topics (one transaction).
    pub fn remember_topics(&mut self, topics: &[TopicRec]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO topics (id, channel, title, description, language, parent, level, text)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET channel = excluded.channel,
                     title = excluded.title, description = excluded.description,
                     language = excluded.language, parent = excluded.parent,
                     level = excluded.level, text = excluded.text",
            )?;
            for t in topics {
                up.execute(params![
                    t.id,
                    t.channel,
                    t.title,
                    t.description,
                    t.language,
                    t.parent,
                    t.level,
                    t.text
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The Studio topics kept so far.
    pub fn topics(&self) -> Result<Vec<TopicRec>> {
        let mut st = self.conn.prepare(
            "SELECT id, channel, title, description, language, parent, level, text
             FROM topics ORDER BY rowid",
        )?;
        let rows = st.query_map([], |r| {
            Ok(TopicRec {
                id: r.get(0)?,
                channel: r.get(1)?,
                title: r.get(2)?,
                description: r.get(3)?,
                language: r.get(4)?,
                parent: r.get(5)?,
                level: r.get(6)?,
                text: r.get(7)?,
                origin: Origin::Studio,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Accepted and rejected contents per topic (current decisions), topics and contents sorted.
pub fn split_decisions(
    decisions: &[Decision],
) -> (
    std::collections::BTreeMap<String, Vec<String>>,
    std::collections::BTreeMap<String, Vec<String>>,
) {
    let mut accepted: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut rejected: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for d in decisions {
        let side = match d.decision.as_str() {
            "accept" => &mut accepted,
            "reject" => &mut rejected,
            _ => continue,
        };
        side.entry(d.topic_id.clone())
            .or_default()
            .push(d.content_id.clone());
    }
    for v in accepted.values_mut().chain(rejected.values_mut()) {
        v.sort();
        v.dedup();
    }
    (accepted, rejected)
}

/// The Studio topics (with their ancestors) and the stored contents that current decisions
/// name, as data-folder rows: what training needs to use decisions made outside the data
/// folder. Decided topics count as having content when one of their links was accepted.
pub fn decided_items(store: &Store) -> Result<(Vec<Topic>, Vec<Content>)> {
    let current = store.decisions(None)?;
    let studio: HashMap<String, TopicRec> = store
        .topics()?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let accepted: HashSet<&str> = current
        .iter()
        .filter(|d| d.decision == "accept")
        .map(|d| d.topic_id.as_str())
        .collect();
    let mut topic_ids: BTreeSet<&str> = BTreeSet::new();
    for d in &current {
        let mut id = Some(d.topic_id.as_str());
        while let Some(t) = id.and_then(|i| studio.get(i)) {
            if !topic_ids.insert(t.id.as_str()) {
                break;
            }
            id = t.parent.as_deref();
        }
    }
    let topics = topic_ids
        .into_iter()
        .map(|id| {
            let t = &studio[id];
            Topic {
                id: t.id.clone(),
                title: t.title.clone(),
                description: t.description.clone(),
                channel: t.channel.clone(),
                category: String::new(),
                level: Some(t.level),
                language: t.language.clone(),
                parent: t.parent.clone(),
                has_content: accepted.contains(id),
                fold: None,
                line: 0,
            }
        })
        .collect();
    let content_ids: BTreeSet<&str> = current.iter().map(|d| d.content_id.as_str()).collect();
    let mut contents = Vec::new();
    for id in content_ids {
        if let Some(m) = store.content_meta(id)? {
            contents.push(Content {
                id: m.id,
                title: m.title,
                description: m.description,
                kind: m.kind,
                text: m.short_text,
                language: m.language.unwrap_or_default(),
                copyright_holder: String::new(),
                license: String::new(),
                line: 0,
            });
        }
    }
    Ok((topics, contents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_decision_wins_and_undo_clears_it_durably() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(Some(dir.path())).unwrap();
            s.record_decision("t1", "c1", "accept", "m", Some(0.18))
                .unwrap();
            s.record_decision("t1", "c2", "reject", "m", None).unwrap();
            s.record_decision("t1", "c1", "reject", "m", None).unwrap();
            s.record_decision("t2", "c1", "accept", "m", None).unwrap();
            s.record_decision("t2", "c1", "undo", "m", None).unwrap();
            assert!(s.record_decision("t2", "c1", "maybe", "m", None).is_err());
        }
        let s = Store::open(Some(dir.path())).unwrap();
        let d = s.decisions(None).unwrap();
        let pairs: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|x| {
                (
                    x.topic_id.as_str(),
                    x.content_id.as_str(),
                    x.decision.as_str(),
                )
            })
            .collect();
        assert_eq!(pairs, [("t1", "c2", "reject"), ("t1", "c1", "reject")]);
        assert_eq!(s.decisions(Some("t2")).unwrap(), vec![]);
        assert_eq!(s.decision_log().unwrap().len(), 5);
        assert!(
            d[0].time.ends_with('Z') && d[0].time.len() >= 20,
            "{}",
            d[0].time
        );
        let (acc, rej) = split_decisions(&d);
        assert!(acc.is_empty());
        assert_eq!(rej["t1"], ["c1", "c2"]);
    }
}

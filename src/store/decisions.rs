//! Curators' decisions: an append-only log (accept, reject, undo); a pair's current decision
//! is its latest entry, and an undo clears it. Each write is one transaction, committed before
//! the caller returns.

use super::topics::TopicRecord;
use super::{sqlite_rows, Cells, Db, Result, Store, StoreError};
use crate::data::{Content, Topic};
use rusqlite::params;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// What a curator decided about a recommended content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    Accept,
    Reject,
    /// Takes the pair's earlier decision back.
    Undo,
}

impl DecisionKind {
    pub const ALL: [DecisionKind; 3] = [Self::Accept, Self::Reject, Self::Undo];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Undo => "undo",
        }
    }

    /// `accept`, `reject` or `undo`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionOrigin {
    /// lecr's curator page (or `feedback simulate`).
    Page,
    /// Imported from Kolibri Studio's recommendation feedback.
    Studio,
}

impl DecisionOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Studio => "studio",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Page, Self::Studio]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A decision to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision<'a> {
    pub topic_id: &'a str,
    pub content_id: &'a str,
    pub kind: DecisionKind,
    /// The model (and reranker) whose recommendation was judged.
    pub model: &'a str,
    /// The margin the page showed (its threshold setting).
    pub margin: Option<f32>,
    pub origin: DecisionOrigin,
}

/// One decision as the log holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub seq: i64,
    pub topic_id: String,
    pub content_id: String,
    #[serde(rename = "decision")]
    pub kind: DecisionKind,
    pub model: String,
    pub margin: Option<f32>,
    pub origin: DecisionOrigin,
    /// UTC, ISO 8601, from SQLite's clock.
    pub time: String,
}

const DECISION_COLUMNS: &str = "seq, topic_id, content_id, decision, model, margin, origin, time";

fn decision_row(r: &dyn Cells) -> Result<Decision> {
    let bad =
        |what: &str, v: String| StoreError::Invalid(format!("unknown {what} `{v}` in the log"));
    let kind = r.text(3)?;
    let origin = r.text(6)?;
    Ok(Decision {
        seq: r.int(0)?,
        topic_id: r.text(1)?,
        content_id: r.text(2)?,
        kind: DecisionKind::parse(&kind).ok_or_else(|| bad("decision", kind))?,
        model: r.text(4)?,
        margin: r.opt_real(5)?,
        origin: DecisionOrigin::parse(&origin).ok_or_else(|| bad("origin", origin))?,
        time: r.text(7)?,
    })
}

impl Store {
    /// Appends a decision; returns its sequence number.
    pub fn record_decision(&mut self, d: &NewDecision) -> Result<i64> {
        Ok(self.record_decisions(std::slice::from_ref(d))?[0])
    }

    /// Appends decisions in one transaction (all or none); returns their sequence numbers.
    pub fn record_decisions(&mut self, ds: &[NewDecision]) -> Result<Vec<i64>> {
        for d in ds {
            if let Some(m) = d.margin {
                if !(0.0..=1.0).contains(&m) {
                    return Err(StoreError::Invalid(format!(
                        "decision margin {m}: expected 0 to 1"
                    )));
                }
            }
        }
        const SQL: &str =
            "INSERT INTO feedback (topic_id, content_id, decision, model, margin, origin)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq";
        let mut seqs = Vec::with_capacity(ds.len());
        match &mut self.db {
            Db::Sqlite(c) => {
                let tx = c.transaction()?;
                {
                    let mut st = tx.prepare_cached(SQL)?;
                    for d in ds {
                        let (kind, origin) = (d.kind.as_str(), d.origin.as_str());
                        seqs.push(st.query_row(
                            params![d.topic_id, d.content_id, kind, d.model, d.margin, origin],
                            |r| r.get(0),
                        )?);
                    }
                }
                let keys: Vec<String> = seqs.iter().map(i64::to_string).collect();
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                super::changes::log_sqlite(
                    &tx,
                    self.writer.as_deref(),
                    super::changes::ChangeKind::Decision,
                    &keys,
                )?;
                tx.commit()?;
            }
            Db::Postgres(c) => {
                let mut c = c.borrow_mut()?;
                let mut tx = c.transaction()?;
                let st = tx.prepare(SQL)?;
                for d in ds {
                    let (kind, origin) = (d.kind.as_str(), d.origin.as_str());
                    let seq: i64 = tx
                        .query_one(
                            &st,
                            &[
                                &d.topic_id,
                                &d.content_id,
                                &kind,
                                &d.model,
                                &d.margin,
                                &origin,
                            ],
                        )?
                        .get(0);
                    seqs.push(seq);
                }
                let keys: Vec<String> = seqs.iter().map(i64::to_string).collect();
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                super::changes::log(
                    &mut tx,
                    self.writer.as_deref(),
                    super::changes::ChangeKind::Decision,
                    &keys,
                )?;
                tx.commit()?;
            }
        }
        Ok(seqs)
    }

    /// The current decision of every judged pair (of one topic, or all), oldest first;
    /// undone pairs are left out.
    pub fn decisions(&self, topic_id: Option<&str>) -> Result<Vec<Decision>> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM feedback
             WHERE seq IN (SELECT MAX(seq) FROM feedback
                           WHERE CAST($1 AS TEXT) IS NULL OR topic_id = $1
                           GROUP BY topic_id, content_id)
               AND decision != 'undo'
             ORDER BY seq"
        );
        self.decision_query(&sql, topic_id)
    }

    /// One logged decision by its sequence number.
    pub fn decision(&self, seq: i64) -> Result<Option<Decision>> {
        let sql = format!("SELECT {DECISION_COLUMNS} FROM feedback WHERE seq = $1");
        match &self.db {
            Db::Sqlite(c) => Ok(sqlite_rows(c, &sql, [seq], |r| decision_row(r))?.pop()),
            Db::Postgres(c) => c
                .borrow_mut()?
                .query_opt(&sql, &[&seq])?
                .map(|r| decision_row(&r))
                .transpose(),
        }
    }

    /// Every logged decision, undos included, oldest first.
    pub fn decision_log(&self) -> Result<Vec<Decision>> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM feedback WHERE CAST($1 AS TEXT) IS NULL ORDER BY seq"
        );
        self.decision_query(&sql, None)
    }

    fn decision_query(&self, sql: &str, topic_id: Option<&str>) -> Result<Vec<Decision>> {
        match &self.db {
            Db::Sqlite(c) => sqlite_rows(c, sql, [topic_id], |r| decision_row(r)),
            Db::Postgres(c) => c
                .borrow_mut()?
                .query(sql, &[&topic_id])?
                .iter()
                .map(|r| decision_row(r))
                .collect(),
        }
    }
}

/// Content ids per topic id, both sorted.
pub type Sides = BTreeMap<String, Vec<String>>;

/// Accepted and rejected contents per topic (current decisions), topics and contents sorted.
pub fn split_decisions(decisions: &[Decision]) -> (Sides, Sides) {
    let mut accepted = Sides::new();
    let mut rejected = Sides::new();
    for d in decisions {
        let side = match d.kind {
            DecisionKind::Accept => &mut accepted,
            DecisionKind::Reject => &mut rejected,
            DecisionKind::Undo => continue,
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
    let studio: HashMap<String, TopicRecord> = store
        .topics()?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let accepted: HashSet<&str> = current
        .iter()
        .filter(|d| d.kind == DecisionKind::Accept)
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
        crate::store::on_both_backends(|loc| {
            {
                let mut s = Store::open_at(loc).unwrap();
                let mut put = |t: &str, c: &str, kind, margin| {
                    s.record_decision(&NewDecision {
                        topic_id: t,
                        content_id: c,
                        kind,
                        model: "m",
                        margin,
                        origin: DecisionOrigin::Page,
                    })
                };
                use DecisionKind::*;
                put("t1", "c1", Accept, Some(0.18)).unwrap();
                put("t1", "c2", Reject, None).unwrap();
                put("t1", "c1", Reject, None).unwrap();
                put("t2", "c1", Accept, None).unwrap();
                put("t2", "c1", Undo, None).unwrap();
                // A margin outside 0..1 is refused and nothing is written.
                assert!(put("t2", "c1", Accept, Some(1.5)).is_err());
                assert!(put("t2", "c1", Accept, Some(f32::NAN)).is_err());
            }
            let s = Store::open_at(loc).unwrap();
            let d = s.decisions(None).unwrap();
            let pairs: Vec<(&str, &str, &str)> = d
                .iter()
                .map(|x| (x.topic_id.as_str(), x.content_id.as_str(), x.kind.as_str()))
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
        });
    }
}

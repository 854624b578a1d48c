//! Studio topics in the store: every topic (and ancestor with an id) that reached the
//! service's recommend endpoint, so the curator page still lists them after a restart and
//! training can use decisions made on them.

use super::{Result, Store};
use rusqlite::params;
use serde::Serialize;

/// Where a topic came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicOrigin {
    /// A `--data` folder's `topics.csv`.
    Data,
    /// A request of Kolibri Studio's.
    Studio,
}

/// A topic as the service keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRecord {
    pub id: String,
    pub channel: String,
    pub title: String,
    pub description: String,
    pub language: String,
    pub parent: Option<String>,
    pub level: u32,
    /// The encoder's topic text (method §2: title, ancestors, description).
    pub text: String,
    pub origin: TopicOrigin,
}

impl Store {
    /// Keeps Studio topics (one transaction; a topic sent again replaces the old record).
    pub fn remember_topics(&mut self, topics: &[TopicRecord]) -> Result<()> {
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

    /// The Studio topics kept so far, in the order first kept.
    pub fn topics(&self) -> Result<Vec<TopicRecord>> {
        let mut st = self.conn.prepare(
            "SELECT id, channel, title, description, language, parent, level, text
             FROM topics ORDER BY rowid",
        )?;
        let rows = st.query_map([], |r| {
            Ok(TopicRecord {
                id: r.get(0)?,
                channel: r.get(1)?,
                title: r.get(2)?,
                description: r.get(3)?,
                language: r.get(4)?,
                parent: r.get(5)?,
                level: r.get(6)?,
                text: r.get(7)?,
                origin: TopicOrigin::Studio,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

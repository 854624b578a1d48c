//! Studio topics in the store: every topic (and ancestor with an id) that reached the
//! service's recommend endpoint, so the curator page still lists them after a restart and
//! training can use decisions made on them.

use super::{sqlite_rows, Cells, Db, Result, Store};
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
        const UPSERT: &str = "INSERT INTO topics
                 (id, channel, title, description, language, parent, level, text)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET channel = excluded.channel,
                 title = excluded.title, description = excluded.description,
                 language = excluded.language, parent = excluded.parent,
                 level = excluded.level, text = excluded.text";
        let keys: Vec<&str> = topics.iter().map(|t| t.id.as_str()).collect();
        match &mut self.db {
            Db::Sqlite(c) => {
                let tx = c.transaction()?;
                {
                    let mut up = tx.prepare_cached(UPSERT)?;
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
                super::changes::log_sqlite(
                    &tx,
                    self.writer.as_deref(),
                    super::changes::ChangeKind::Topic,
                    &keys,
                )?;
                tx.commit()?;
            }
            Db::Postgres(c) => {
                let mut c = c.borrow_mut()?;
                let mut tx = c.transaction()?;
                let up = tx.prepare(UPSERT)?;
                for t in topics {
                    let level = t.level as i32;
                    tx.execute(
                        &up,
                        &[
                            &t.id,
                            &t.channel,
                            &t.title,
                            &t.description,
                            &t.language,
                            &t.parent,
                            &level,
                            &t.text,
                        ],
                    )?;
                }
                super::changes::log(
                    &mut tx,
                    self.writer.as_deref(),
                    super::changes::ChangeKind::Topic,
                    &keys,
                )?;
                tx.commit()?;
            }
        }
        Ok(())
    }

    /// The Studio topics kept so far, in the order first kept.
    pub fn topics(&self) -> Result<Vec<TopicRecord>> {
        self.topics_where(None)
    }

    /// One kept topic.
    pub fn topic(&self, id: &str) -> Result<Option<TopicRecord>> {
        Ok(self.topics_where(Some(id))?.pop())
    }

    fn topics_where(&self, id: Option<&str>) -> Result<Vec<TopicRecord>> {
        let sql = format!(
            "SELECT id, channel, title, description, language, parent, CAST(level AS BIGINT), text
             FROM topics WHERE CAST($1 AS TEXT) IS NULL OR id = $1 ORDER BY {}",
            self.order_column()
        );
        let map = |r: &dyn Cells| -> Result<TopicRecord> {
            Ok(TopicRecord {
                id: r.text(0)?,
                channel: r.text(1)?,
                title: r.text(2)?,
                description: r.text(3)?,
                language: r.text(4)?,
                parent: r.opt_text(5)?,
                level: r.int(6)?.clamp(0, u32::MAX as i64) as u32,
                text: r.text(7)?,
                origin: TopicOrigin::Studio,
            })
        };
        match &self.db {
            Db::Sqlite(c) => sqlite_rows(c, &sql, [id], |r| map(r)),
            Db::Postgres(c) => c
                .borrow_mut()?
                .query(&sql, &[&id])?
                .iter()
                .map(|r| map(r))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_kept_in_order_and_replaced() {
        crate::store::on_both_backends(|loc| {
            let t = |id: &str, parent: Option<&str>, level| TopicRecord {
                id: id.into(),
                channel: "ch".into(),
                title: format!("T {id}"),
                description: String::new(),
                language: "en".into(),
                parent: parent.map(Into::into),
                level,
                text: format!("T {id} # "),
                origin: TopicOrigin::Studio,
            };
            {
                let mut s = Store::open_at(loc).unwrap();
                s.remember_topics(&[t("r", None, 0), t("a", Some("r"), 1)])
                    .unwrap();
                let mut moved = t("r", None, 0);
                moved.title = "Root, renamed".into();
                s.remember_topics(&[t("b", Some("r"), 1), moved]).unwrap();
            }
            let s = Store::open_at(loc).unwrap();
            let got = s.topics().unwrap();
            let ids: Vec<&str> = got.iter().map(|x| x.id.as_str()).collect();
            assert_eq!(ids, ["r", "a", "b"], "{loc}");
            assert_eq!(got[0].title, "Root, renamed");
            assert_eq!(got[1], t("a", Some("r"), 1));
        });
    }
}

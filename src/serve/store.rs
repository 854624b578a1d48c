//! The service's durable store: one SQLite file (`DIR/lecr.sqlite`, bundled SQLite) holding
//! each content's metadata, the exact text the encoder saw and its vector, plus which model
//! made the vectors. Every change is one transaction, committed with `synchronous=FULL`
//! before the request is answered, so a `200` survives a kill -9.

use super::index::ContentMeta;
use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

pub struct Store {
    pub(super) conn: Connection,
}

/// A stored content: metadata, encoder text and vector.
#[derive(Debug, Clone)]
pub struct StoredContent {
    pub meta: ContentMeta,
    pub text: String,
    pub vector: Vec<f32>,
}

impl Store {
    /// Opens (creating) `dir/lecr.sqlite`; `None` keeps everything in memory.
    pub fn open(dir: Option<&Path>) -> Result<Self> {
        let conn = match dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                let p = d.join("lecr.sqlite");
                Connection::open(&p).with_context(|| format!("opening {}", p.display()))?
            }
            None => Connection::open_in_memory()?,
        };
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
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
             );",
        )?;
        conn.execute_batch(super::feedback::SCHEMA)?;
        Ok(Store { conn })
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
            params![key, value],
        )?;
        Ok(())
    }

    pub fn count(&self) -> Result<usize> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM contents", [], |r| r.get::<_, i64>(0))?
            as usize)
    }

    /// Every stored content, in insertion order.
    pub fn all(&self) -> Result<Vec<StoredContent>> {
        let mut st = self.conn.prepare(
            "SELECT id, channel_id, title, description, kind, language, text, vector
             FROM contents ORDER BY rowid",
        )?;
        let rows = st.query_map([], |r| {
            Ok(StoredContent {
                meta: meta_row(r)?,
                text: r.get(6)?,
                vector: from_blob(&r.get::<_, Vec<u8>>(7)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One content's metadata, without its vector.
    pub fn content_meta(&self, id: &str) -> Result<Option<ContentMeta>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, channel_id, title, description, kind, language, text
                 FROM contents WHERE id = ?1",
                [id],
                meta_row,
            )
            .optional()?)
    }

    /// The stored encoder text of each id that exists (to skip re-embedding unchanged texts).
    pub fn text_and_vector(&self, id: &str) -> Result<Option<(String, Vec<f32>)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT text, vector FROM contents WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, String>(0)?, from_blob(&r.get::<_, Vec<u8>>(1)?))),
            )
            .optional()?)
    }

    /// Writes contents and deletes ids in one transaction.
    pub fn apply(&mut self, upserts: &[StoredContent], deletes: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO contents (id, channel_id, title, description, kind, language, text, vector)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET channel_id = excluded.channel_id,
                     title = excluded.title, description = excluded.description,
                     kind = excluded.kind, language = excluded.language,
                     text = excluded.text, vector = excluded.vector",
            )?;
            for c in upserts {
                let m = &c.meta;
                up.execute(params![
                    m.id,
                    m.channel_id,
                    m.title,
                    m.description,
                    m.kind,
                    m.language,
                    c.text,
                    to_blob(&c.vector)
                ])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM contents WHERE id = ?1")?;
            for id in deletes {
                del.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A content's metadata from a row whose first seven columns are `id, channel_id, title,
/// description, kind, language, text`.
fn meta_row(r: &rusqlite::Row) -> rusqlite::Result<ContentMeta> {
    let (title, description, text): (String, String, String) = (r.get(2)?, r.get(3)?, r.get(6)?);
    Ok(ContentMeta {
        id: r.get(0)?,
        channel_id: r.get(1)?,
        short_text: crate::text::short_text_of(&text, &title, &description),
        title,
        description,
        kind: r.get(4)?,
        language: r.get(5)?,
    })
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let c = |id: &str, lang: Option<&str>| StoredContent {
            meta: ContentMeta {
                id: id.into(),
                channel_id: "ch".into(),
                title: format!("title {id}"),
                description: "d".into(),
                kind: "video".into(),
                language: lang.map(str::to_string),
                short_text: "s".into(),
            },
            text: format!("title {id} # d # s"),
            vector: vec![0.5, -0.25, 1e-7],
        };
        {
            let mut s = Store::open(Some(dir.path())).unwrap();
            s.set_meta("model", "m1").unwrap();
            s.apply(&[c("a", Some("en")), c("b", None), c("x", None)], &[])
                .unwrap();
            s.apply(&[c("b", Some("es"))], &["x".to_string()]).unwrap();
        }
        let s = Store::open(Some(dir.path())).unwrap();
        assert_eq!(s.get_meta("model").unwrap().as_deref(), Some("m1"));
        let all = s.all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].meta, c("a", Some("en")).meta);
        assert_eq!(all[1].meta.language.as_deref(), Some("es"));
        assert_eq!(all[0].vector, vec![0.5, -0.25, 1e-7]);
        assert_eq!(
            s.text_and_vector("a").unwrap().unwrap().0,
            "title a # d # s"
        );
        assert!(s.text_and_vector("x").unwrap().is_none());
    }
}

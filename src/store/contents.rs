//! Contents in the store: each one's metadata, the exact text the encoder saw and its vector
//! (little-endian f32), plus (in `meta`) the id of the model that made the vectors.

use super::{Result, Store};
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;

/// What the service knows of a content resource besides its vector.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentMeta {
    pub id: String,
    pub channel_id: String,
    pub title: String,
    pub description: String,
    pub kind: String,
    /// None: stored, but not recommendable until a request gives it a language.
    pub language: Option<String>,
    /// The text field as the encoder sees it (the reranker's text features read it).
    pub short_text: String,
}

/// A stored content: metadata, encoder text and vector.
#[derive(Debug, Clone)]
pub struct StoredContent {
    pub meta: ContentMeta,
    pub text: String,
    pub vector: Vec<f32>,
}

impl Store {
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

    /// The stored encoder text and vector of one id.
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

    /// The stored encoder text and vector of each of `ids` that exists (to skip embedding
    /// unchanged texts again).
    pub fn texts_and_vectors(&self, ids: &[&str]) -> Result<HashMap<String, (String, Vec<f32>)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT text, vector FROM contents WHERE id = ?1")?;
        let mut out = HashMap::new();
        for &id in ids {
            if let Some(tv) = st
                .query_row([id], |r| {
                    Ok((r.get::<_, String>(0)?, from_blob(&r.get::<_, Vec<u8>>(1)?)))
                })
                .optional()?
            {
                out.insert(id.to_string(), tv);
            }
        }
        Ok(out)
    }

    /// Writes contents and deletes ids in one transaction; returns how many rows were deleted.
    pub fn apply(&mut self, upserts: &[StoredContent], deletes: &[String]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut deleted = 0;
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
                deleted += del.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(deleted)
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

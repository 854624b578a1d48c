//! Contents in the store: each one's metadata, the exact text the encoder saw and its vector
//! (little-endian f32), plus (in `meta`) the id of the model that made the vectors.

use super::{sqlite_rows, Cells, Db, Result, Store};
use rusqlite::params;
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

const META_COLUMNS: &str = "id, channel_id, title, description, kind, language, text";

impl Store {
    pub fn count(&self) -> Result<usize> {
        const SQL: &str = "SELECT COUNT(*) FROM contents";
        let n: i64 = match &self.db {
            Db::Sqlite(c) => c.query_row(SQL, [], |r| r.get(0))?,
            Db::Postgres(c) => c.borrow_mut()?.query_one(SQL, &[])?.get(0),
        };
        Ok(n as usize)
    }

    /// Every stored content, in insertion order.
    pub fn all(&self) -> Result<Vec<StoredContent>> {
        let mut out = Vec::new();
        self.each(|c| {
            out.push(c);
            Ok::<(), super::StoreError>(())
        })?;
        Ok(out)
    }

    /// Visits every stored content in insertion order, one row at a time (streamed: the
    /// catalog is never held twice, as rows and as `visit`'s copy). Stops at `visit`'s error.
    pub fn each<E: From<super::StoreError>>(
        &self,
        mut visit: impl FnMut(StoredContent) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.each_row(", vector", |r| visit(stored_row(r)?))
    }

    /// Visits every stored content's metadata in insertion order, streamed, without the
    /// vectors (the PostgreSQL index mode keeps those in the database).
    pub fn each_meta<E: From<super::StoreError>>(
        &self,
        mut visit: impl FnMut(ContentMeta) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.each_row("", |r| visit(meta_row(r)?))
    }

    /// Streams `SELECT META_COLUMNS{extra} FROM contents` in insertion order into `visit`.
    fn each_row<E: From<super::StoreError>>(
        &self,
        extra: &str,
        mut visit: impl FnMut(&dyn super::Cells) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let sql = format!(
            "SELECT {META_COLUMNS}{extra} FROM contents ORDER BY {}",
            self.order_column()
        );
        match &self.db {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(&sql).map_err(super::StoreError::from)?;
                let mut rows = st.query([]).map_err(super::StoreError::from)?;
                while let Some(r) = rows.next().map_err(super::StoreError::from)? {
                    visit(r)?;
                }
            }
            Db::Postgres(c) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut c = c.borrow_mut()?;
                let none: [&(dyn postgres::types::ToSql + Sync); 0] = [];
                let mut rows = c
                    .query_raw(sql.as_str(), none)
                    .map_err(super::StoreError::from)?;
                while let Some(r) = rows.next().map_err(super::StoreError::from)? {
                    visit(&r)?;
                }
            }
        }
        Ok(())
    }

    /// One stored content with its vector (`None`: not stored, e.g. deleted).
    pub fn content(&self, id: &str) -> Result<Option<StoredContent>> {
        let sql = format!("SELECT {META_COLUMNS}, vector FROM contents WHERE id = $1");
        let map = stored_row;
        match &self.db {
            Db::Sqlite(c) => Ok(sqlite_rows(c, &sql, [id], |r| map(r))?.pop()),
            Db::Postgres(c) => c
                .borrow_mut()?
                .query_opt(&sql, &[&id])?
                .map(|r| map(&r))
                .transpose(),
        }
    }

    /// The stored contents among `ids`, with their vectors (absent ids: not stored).
    pub fn contents(&self, ids: &[&str]) -> Result<HashMap<String, StoredContent>> {
        let map = stored_row;
        let rows: Vec<StoredContent> = match &self.db {
            Db::Sqlite(_) => {
                let mut out = Vec::new();
                for id in ids {
                    out.extend(self.content(id)?);
                }
                out
            }
            Db::Postgres(c) => {
                let sql = format!("SELECT {META_COLUMNS}, vector FROM contents WHERE id = ANY($1)");
                c.borrow_mut()?
                    .query(&sql, &[&ids])?
                    .iter()
                    .map(|r| map(r))
                    .collect::<Result<_>>()?
            }
        };
        Ok(rows.into_iter().map(|c| (c.meta.id.clone(), c)).collect())
    }

    /// One content's metadata, without its vector.
    pub fn content_meta(&self, id: &str) -> Result<Option<ContentMeta>> {
        let sql = format!("SELECT {META_COLUMNS} FROM contents WHERE id = $1");
        match &self.db {
            Db::Sqlite(c) => Ok(sqlite_rows(c, &sql, [id], |r| meta_row(r))?.pop()),
            Db::Postgres(c) => c
                .borrow_mut()?
                .query_opt(&sql, &[&id])?
                .map(|r| meta_row(&r))
                .transpose(),
        }
    }

    /// The stored encoder text and vector of one id.
    pub fn text_and_vector(&self, id: &str) -> Result<Option<(String, Vec<f32>)>> {
        Ok(self.texts_and_vectors(&[id])?.remove(id))
    }

    /// The stored encoder text and vector of each of `ids` that exists (to skip embedding
    /// unchanged texts again).
    pub fn texts_and_vectors(&self, ids: &[&str]) -> Result<HashMap<String, (String, Vec<f32>)>> {
        const SQL: &str = "SELECT text, vector FROM contents WHERE id = $1";
        let mut out = HashMap::new();
        let map = |r: &dyn Cells| -> Result<(String, Vec<f32>)> {
            Ok((r.text(0)?, from_blob(&r.bytes(1)?)))
        };
        match &self.db {
            Db::Sqlite(c) => {
                for &id in ids {
                    if let Some(tv) = sqlite_rows(c, SQL, [id], |r| map(r))?.pop() {
                        out.insert(id.to_string(), tv);
                    }
                }
            }
            // One query for all of them: a round trip per id made a restart with `--data` at
            // LECR scale take 25 s over loopback.
            Db::Postgres(c) => {
                let rows = c.borrow_mut()?.query(
                    "SELECT text, vector, id FROM contents WHERE id = ANY($1)",
                    &[&ids],
                )?;
                for r in &rows {
                    out.insert(r.text(2)?, map(r)?);
                }
            }
        }
        Ok(out)
    }

    /// Writes contents and deletes ids in one transaction; returns the ids that were there to
    /// delete (in `deletes`' order). The store is the answer to "was it known", not a
    /// replica's index: the index follows the change log on its own thread and may already
    /// have applied this very deletion.
    pub fn apply(&mut self, upserts: &[StoredContent], deletes: &[String]) -> Result<Vec<String>> {
        const UPSERT: &str = "INSERT INTO contents
                 (id, channel_id, title, description, kind, language, text, vector)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET channel_id = excluded.channel_id,
                 title = excluded.title, description = excluded.description,
                 kind = excluded.kind, language = excluded.language,
                 text = excluded.text, vector = excluded.vector";
        const DELETE: &str = "DELETE FROM contents WHERE id = $1";
        let mut deleted = Vec::new();
        // What the change log names: every id written or deleted.
        let keys: Vec<&str> = upserts
            .iter()
            .map(|c| c.meta.id.as_str())
            .chain(deletes.iter().map(String::as_str))
            .collect();
        // Asked before the connection is borrowed for the transaction.
        let search = self.search_on()?;
        match &mut self.db {
            Db::Sqlite(c) => {
                let tx = c.transaction()?;
                {
                    let mut up = tx.prepare_cached(UPSERT)?;
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
                    let mut del = tx.prepare_cached(DELETE)?;
                    for id in deletes {
                        if del.execute([id])? > 0 {
                            deleted.push(id.clone());
                        }
                    }
                }
                super::changes::log_sqlite(
                    &tx,
                    self.writer.as_deref(),
                    super::changes::ChangeKind::Content,
                    &keys,
                )?;
                tx.commit()?;
            }
            Db::Postgres(c) => {
                let mut c = c.borrow_mut()?;
                let mut tx = c.transaction()?;
                let up = tx.prepare(UPSERT)?;
                for c in upserts {
                    let m = &c.meta;
                    tx.execute(
                        &up,
                        &[
                            &m.id,
                            &m.channel_id,
                            &m.title,
                            &m.description,
                            &m.kind,
                            &m.language,
                            &c.text,
                            &to_blob(&c.vector),
                        ],
                    )?;
                }
                if search {
                    super::search::apply_pg(&mut tx, upserts)?;
                }
                let del = tx.prepare(DELETE)?;
                for id in deletes {
                    if tx.execute(&del, &[id])? > 0 {
                        deleted.push(id.clone());
                    }
                }
                super::changes::log(
                    &mut tx,
                    self.writer.as_deref(),
                    super::changes::ChangeKind::Content,
                    &keys,
                )?;
                tx.commit()?;
            }
        }
        Ok(deleted)
    }
}

/// A stored content from a row of [`META_COLUMNS`] and `vector`.
fn stored_row(r: &dyn Cells) -> Result<StoredContent> {
    Ok(StoredContent {
        meta: meta_row(r)?,
        text: r.text(6)?,
        vector: from_blob(&r.bytes(7)?),
    })
}

/// A content's metadata from a row whose first seven columns are [`META_COLUMNS`].
fn meta_row(r: &dyn Cells) -> Result<ContentMeta> {
    let (title, description, text) = (r.text(2)?, r.text(3)?, r.text(6)?);
    Ok(ContentMeta {
        id: r.text(0)?,
        channel_id: r.text(1)?,
        short_text: crate::text::short_text_of(&text, &title, &description),
        title,
        description,
        kind: r.text(4)?,
        language: r.opt_text(5)?,
    })
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_round_trip_and_survive_reopening() {
        super::super::on_both_backends(|loc| {
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
                let mut s = Store::open_at(loc).unwrap();
                s.set_meta("model", "m1").unwrap();
                s.set_meta("model", "m2").unwrap();
                s.apply(&[c("a", Some("en")), c("b", None), c("x", None)], &[])
                    .unwrap();
                let deleted = s
                    .apply(
                        &[c("b", Some("es"))],
                        &["x".to_string(), "never".to_string()],
                    )
                    .unwrap();
                assert_eq!(deleted, ["x"], "{loc}: only what was there");
            }
            let s = Store::open_at(loc).unwrap();
            assert_eq!(s.get_meta("model").unwrap().as_deref(), Some("m2"));
            assert_eq!(s.get_meta("nothing").unwrap(), None);
            assert_eq!(s.count().unwrap(), 2);
            let all = s.all().unwrap();
            assert_eq!(all.len(), 2);
            assert_eq!(
                all[0].meta,
                c("a", Some("en")).meta,
                "{loc}: insertion order"
            );
            assert_eq!(all[1].meta.language.as_deref(), Some("es"));
            assert_eq!(all[0].vector, vec![0.5, -0.25, 1e-7]);
            assert_eq!(
                s.text_and_vector("a").unwrap().unwrap().0,
                "title a # d # s"
            );
            assert!(s.text_and_vector("x").unwrap().is_none());
            assert_eq!(s.texts_and_vectors(&["a", "x", "b"]).unwrap().len(), 2);
            assert_eq!(s.content_meta("b").unwrap().unwrap().title, "title b");
            assert!(s.content_meta("x").unwrap().is_none());
        });
    }
}

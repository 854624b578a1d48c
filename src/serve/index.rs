//! The live content index: per language, the contents' vectors, with the metadata a
//! recommendation returns, and (with `--model lexical`) the language's lexical index
//! ([`super::lexical`]). Ranking a block of topics against a language is one matrix product
//! (plus each topic's lexical row), then the top of each row (the same `top_r` and threshold
//! as `predict`).
//!
//! The vectors are held as int8 in memory ([`QuantizedRows`]) and as f32 in a file on disk
//! ([`ExactRows`]). The product runs on the int8 rows; every approximate score comes with a
//! proven upper bound on the exact one, so each topic's answer reads back the exact rows of
//! its approximate top, then of every content whose bound still reaches that top's last exact
//! score, and ranks on exact scores there. The top of each ranked row is then the one f32
//! vectors give, to the bit ([`Index::refine`]): the service still equals `predict`.

use super::exact::ExactRows;
use super::lexical::{Fitted, LexRows, Refit, Snapshot};
use super::meta::MetaTable;
use super::remote::{LexicalSide, RemoteSearch};
use crate::kernels::quantized::{chain_dot, QuantizedRows, TopicNorms};
use crate::rerank::candidates::{from_rows, rank_depth, TopicCandidates};
use crate::select::threshold;
pub use crate::store::ContentMeta;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// One language's contents: ids in row order and their vectors (int8 for the product, f32 on
/// disk for the exact scores); with lexical retrieval, the lexical index and how current it
/// is.
struct LangMatrix {
    ids: Vec<String>,
    vectors: QuantizedRows,
    /// `None` in the PostgreSQL index mode, which keeps a language's ids and lexical index
    /// only (the store holds the vectors).
    exact: Option<ExactRows>,
    lexical: Option<LexRows>,
    /// Writes to this language so far.
    version: u64,
    /// The version the lexical index was fitted at.
    fitted: Option<u64>,
}

/// A content and its similarity to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub content: String,
    pub similarity: f32,
}

/// A similarity column of the second stage, in the order its reranker was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The model's cosine similarity (the index's vectors).
    Vectors,
    /// The lexical TF-IDF similarity.
    Lexical,
}

/// A topic's parent, for the reranker's parent-similarity features.
pub struct Parent<'a> {
    pub vector: &'a [f32],
    pub lexical: Option<&'a str>,
}

/// A topic's second-stage candidates: candidate `i` of `topic` is content `ids[i]`.
#[derive(Debug)]
pub struct ServedCandidates {
    pub topic: TopicCandidates,
    pub ids: Vec<String>,
}

pub struct Index {
    dim: usize,
    langs: BTreeMap<String, LangMatrix>,
    /// Every stored content (with or without a language); its texts on disk.
    meta: MetaTable,
    /// Row of each recommendable content in its language's matrix.
    row: HashMap<String, usize>,
    /// With lexical retrieval: how many models the vectors average (the lexical similarity
    /// is one more member of the mean).
    lexical_with: Option<usize>,
    /// Heap bytes of the ids as keys of `row` and in their languages' row order.
    heap: usize,
    /// Where the languages' exact vectors' files go.
    exact_dir: PathBuf,
    /// Exact rows read back so far (for the metrics).
    rescored: std::sync::atomic::AtomicU64,
    /// The PostgreSQL index mode: the vectors and their search live in the store; `langs`
    /// stays empty and `counts` says how many recommendable contents each language has.
    remote: Option<RemoteSearch>,
    counts: BTreeMap<String, usize>,
}

impl Index {
    pub fn new(dim: usize) -> Self {
        Index {
            dim,
            langs: BTreeMap::new(),
            meta: MetaTable::new_in(&std::env::temp_dir()),
            row: HashMap::new(),
            lexical_with: None,
            heap: 0,
            exact_dir: std::env::temp_dir(),
            rescored: Default::default(),
            remote: None,
            counts: BTreeMap::new(),
        }
    }

    /// The PostgreSQL index mode: searches go to `remote`, and the index keeps only the
    /// contents' metadata (upserts ignore their vectors).
    pub fn with_remote(mut self, remote: RemoteSearch) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Whether the vectors and their search live in PostgreSQL.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Puts the exact vectors' files and the metadata's texts file in `dir` (by default the
    /// system's temporary folder).
    pub fn with_exact_dir(mut self, dir: &Path) -> Self {
        self.exact_dir = dir.to_path_buf();
        self.meta.set_dir(dir);
        self
    }

    /// Exact rows read back to rescore so far.
    pub fn rescored(&self) -> u64 {
        self.rescored.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds lexical retrieval: the ensemble becomes the mean of `models` models (the vectors
    /// hold their mean) and the lexical similarity, as `predict --model .. --model lexical`.
    pub fn with_lexical(mut self, models: usize) -> Self {
        self.lexical_with = Some(models.max(1));
        self
    }

    /// Whether lexical retrieval is on.
    pub fn lexical(&self) -> bool {
        self.lexical_with.is_some()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// A content's metadata (its texts read back from the metadata file).
    pub fn get(&self, id: &str) -> io::Result<Option<ContentMeta>> {
        self.meta.get(id)
    }

    /// Whether the index holds a content (no disk read).
    pub fn contains(&self, id: &str) -> bool {
        self.meta.contains(id)
    }

    /// Contents per language (recommendable ones).
    pub fn sizes(&self) -> Vec<(String, usize)> {
        if self.is_remote() {
            return self.counts.iter().map(|(l, &n)| (l.clone(), n)).collect();
        }
        self.langs
            .iter()
            .map(|(l, m)| (l.clone(), m.ids.len()))
            .collect()
    }

    /// Stored contents that have no language yet.
    pub fn without_language(&self) -> usize {
        self.meta.without_language()
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn has_language(&self, lang: &str) -> bool {
        if self.is_remote() {
            return self.counts.get(lang).is_some_and(|&n| n > 0);
        }
        self.langs.get(lang).is_some_and(|m| !m.ids.is_empty())
    }

    /// Adds or replaces a content (a replaced one leaves its old language's matrix). Fails
    /// only when the exact vectors' file cannot be written; the content is then not added.
    pub fn upsert(&mut self, meta: ContentMeta, vector: &[f32]) -> io::Result<()> {
        assert_eq!(vector.len(), self.dim, "vector of the index dimension");
        self.remove(&meta.id)?;
        if self.is_remote() {
            return self.upsert_meta(meta);
        }
        // The steps that can fail go first: the texts, then the exact vector.
        self.meta.insert(&meta)?;
        if let Some(lang) = &meta.language {
            if let Err(e) = self.lang_rows(lang, true) {
                self.meta.remove(&meta.id);
                return Err(e);
            }
            let m = self.langs.get_mut(lang).expect("made above");
            let pushed = m
                .exact
                .as_mut()
                .expect("in-memory languages hold exact vectors")
                .push(vector);
            if let Err(e) = pushed {
                self.meta.remove(&meta.id);
                return Err(e);
            }
            m.vectors.push(vector);
            self.push_row(lang, &meta.id);
        }
        Ok(())
    }

    /// `lang`'s rows, made when missing (with an exact vectors' file when `exact`).
    fn lang_rows(&mut self, lang: &str, exact: bool) -> io::Result<&mut LangMatrix> {
        if !self.langs.contains_key(lang) {
            let d = self.dim;
            let m = LangMatrix {
                ids: Vec::new(),
                vectors: QuantizedRows::new(d),
                exact: exact
                    .then(|| ExactRows::new_in(&self.exact_dir, d))
                    .transpose()?,
                lexical: None,
                version: 0,
                fitted: None,
            };
            self.langs.insert(lang.to_string(), m);
        }
        Ok(self.langs.get_mut(lang).expect("inserted above"))
    }

    /// Appends `id` to its language's row order (and to its lexical index, unfitted).
    fn push_row(&mut self, lang: &str, id: &str) {
        let m = self.langs.get_mut(lang).expect("made by lang_rows");
        self.heap += 2 * id.len();
        self.row.insert(id.to_string(), m.ids.len());
        m.ids.push(id.to_string());
        m.version += 1;
        if let Some(lx) = &mut m.lexical {
            lx.push_unfitted();
        }
    }

    /// Takes row `r` out of `lang`'s row order (the last row moves into the hole).
    fn take_row(&mut self, lang: &str, id: &str, r: usize) {
        let m = self
            .langs
            .get_mut(lang)
            .expect("a row implies its language");
        self.row.remove(id);
        self.heap -= 2 * id.len();
        let last = m.ids.len() - 1;
        m.ids.swap_remove(r);
        if m.exact.is_some() {
            m.vectors.swap_remove(r);
        }
        m.version += 1;
        if let Some(lx) = &mut m.lexical {
            lx.swap_remove(r);
        }
        if r != last {
            self.row.insert(m.ids[r].clone(), r);
        }
    }

    /// The PostgreSQL index mode's upsert: the metadata (the store holds the vector), and
    /// with lexical retrieval the content's row in its language's lexical index.
    /// Fails only when the metadata's texts file cannot be written; the content then stays
    /// as it was.
    pub fn upsert_meta(&mut self, meta: ContentMeta) -> io::Result<()> {
        debug_assert!(self.is_remote(), "vectors are needed in memory");
        let old = self.meta.language(&meta.id).map(str::to_string);
        let was = self.meta.contains(&meta.id);
        self.meta.insert(&meta)?;
        if was {
            self.forget_row(&meta.id, old.as_deref());
        }
        if let Some(lang) = &meta.language {
            *self.counts.entry(lang.clone()).or_default() += 1;
            if self.lexical() {
                self.lang_rows(lang, false)
                    .expect("no file is made without exact vectors");
                self.push_row(lang, &meta.id);
            }
        }
        Ok(())
    }

    /// Takes a removed (or replaced) content's share out of the PostgreSQL index mode's
    /// counts, and its row out of the lexical index; `language` was its language.
    fn forget_row(&mut self, id: &str, language: Option<&str>) {
        if let Some(lang) = language {
            if let Some(n) = self.counts.get_mut(lang) {
                *n -= 1;
            }
            if let Some(&r) = self.row.get(id) {
                self.take_row(lang, id, r);
            }
        }
    }

    /// Gives back the spare capacity of the row-ordered parts (after a bulk load: growing
    /// by doubling leaves up to half of each allocation unused).
    pub fn shrink_to_fit(&mut self) {
        for m in self.langs.values_mut() {
            m.ids.shrink_to_fit();
            m.vectors.shrink_to_fit();
        }
        self.meta.shrink_to_fit();
        self.row.shrink_to_fit();
    }

    /// Whether the index holds exactly this content: the same metadata, and (recommendable)
    /// the same vector.
    pub fn holds(&self, meta: &ContentMeta, vector: &[f32]) -> bool {
        if !self
            .meta
            .get(&meta.id)
            .is_ok_and(|m| m.as_ref() == Some(meta))
        {
            return false;
        }
        if self.is_remote() {
            // The vector is the store's own.
            return true;
        }
        match (&meta.language, self.row.get(&meta.id)) {
            (Some(lang), Some(&r)) => self
                .langs
                .get(lang)
                .and_then(|m| m.exact.as_ref())
                .is_some_and(|e| e.row(r).is_ok_and(|x| x == vector)),
            (None, None) => true,
            _ => false,
        }
    }

    /// Removes a content; false when it was not there. Fails only when the exact vectors'
    /// file cannot be written; the content then stays.
    pub fn remove(&mut self, id: &str) -> io::Result<bool> {
        if !self.meta.contains(id) {
            return Ok(false);
        }
        let lang = self.meta.language(id).map(str::to_string);
        if self.is_remote() {
            self.meta.remove(id);
            self.forget_row(id, lang.as_deref());
            return Ok(true);
        }
        if let (Some(lang), Some(&r)) = (&lang, self.row.get(id)) {
            let m = self
                .langs
                .get_mut(lang)
                .expect("a row implies its language");
            // The only step that can fail goes first.
            if let Some(e) = &mut m.exact {
                e.swap_remove(r)?;
            }
        }
        self.meta.remove(id);
        if let (Some(lang), Some(&r)) = (&lang, self.row.get(id)) {
            self.take_row(lang, id, r);
        }
        Ok(true)
    }

    /// The exact similarity of `v` to a recommendable content (`None`: unknown, no language,
    /// or its exact vector unreadable); bit-identical to the same pair's value in
    /// [`search`](Self::search).
    pub fn similarity(&self, id: &str, v: &[f32]) -> Option<f32> {
        let lang = self.meta.language(id)?;
        let r = *self.row.get(id)?;
        let exact = self.langs.get(lang)?.exact.as_ref()?.row(r).ok()?;
        Some(chain_dot(&exact, v))
    }

    /// The approximate vector similarities of a block of topics (`m × n`, the int8 product),
    /// and with lexical retrieval their lexical similarities (one text per topic).
    fn columns(
        &self,
        m: &LangMatrix,
        topics: &[f32],
        lexical: Option<&[&str]>,
    ) -> (Vec<f32>, Option<Vec<f32>>) {
        let n_topics = topics.len() / self.dim.max(1);
        let vectors = m.vectors.scores(topics, n_topics);
        let lex = match (self.lexical_with, lexical, &m.lexical) {
            (Some(_), Some(texts), Some(lx)) => {
                let n = m.ids.len();
                let mut rows = vec![0f32; texts.len() * n];
                rows.par_chunks_mut(n.max(1))
                    .zip(texts.par_iter())
                    .for_each(|(row, t)| lx.scores_into(t, row));
                Some(rows)
            }
            // Lexical retrieval on, but the language was never fitted: nothing scores.
            (Some(_), Some(_), None) => Some(vec![0.0; vectors.len()]),
            _ => None,
        };
        (vectors, lex)
    }

    /// The ranked row of a topic's vector similarities `v` (and lexical ones `l`): with
    /// lexical retrieval, `predict`'s ensemble (the members summed, then times 1/members; with
    /// one model, `v · 1.0` is `v` to the bit).
    fn ensemble(&self, v: &[f32], l: Option<&[f32]>) -> Vec<f32> {
        match (self.lexical_with, l) {
            (Some(models), Some(l)) => v
                .iter()
                .zip(l)
                .map(|(&a, &b)| ensemble(models, a, b))
                .collect(),
            _ => v.to_vec(),
        }
    }

    /// With lexical retrieval and the topics' texts, what the PostgreSQL index mode ranks
    /// against besides the store's nearest contents: the language's ids in row order and each
    /// topic's lexical similarities to all of them (and its parent's, with `parents`).
    fn lexical_side(
        &self,
        lang: &str,
        lexical: Option<&[&str]>,
        parents: Option<&[Option<Parent>]>,
    ) -> Option<LexicalSide<'_>> {
        let models = self.lexical_with?;
        let texts = lexical?;
        let m = self.langs.get(lang);
        let lx = m.and_then(|m| m.lexical.as_ref());
        let rows = lx.map(|lx| {
            texts
                .par_iter()
                .map(|t| lx.scores(t))
                .collect::<Vec<Vec<f32>>>()
        });
        let parent_rows = match (lx, parents) {
            (Some(lx), Some(ps)) => ps
                .iter()
                .map(|p| p.as_ref().and_then(|p| p.lexical).map(|t| lx.scores(t)))
                .collect(),
            _ => Vec::new(),
        };
        Some(LexicalSide {
            models,
            ids: m.map_or(&[][..], |m| &m.ids[..]),
            row_of: &self.row,
            rows,
            parent_rows,
        })
    }

    /// Makes `v`, one topic's approximate similarities to `m`'s rows, exact wherever the top
    /// `depth` of any row of `derive(v)` can lie, and returns the exact vectors it read, by row.
    ///
    /// `derive` maps vector similarities to the rows that get ranked; each must be monotone
    /// non-decreasing in each value of `v` (sums, and products by non-negative weights, are,
    /// rounding included), and `uses` says which rows read `v` at all. First the approximate
    /// top `depth` of every row is made exact; then, per row, every content whose upper bound
    /// reaches that row's `depth`-th best exact score. Any other content's exact score lies
    /// strictly below that score, and so does its approximate one: the row's top `depth`
    /// (order, ties and values) is the one exact vectors give.
    fn refine(
        &self,
        m: &LangMatrix,
        t: &[f32],
        v: &mut [f32],
        derive: &dyn Fn(&[f32]) -> Vec<Vec<f32>>,
        uses: &[bool],
        depth: usize,
    ) -> io::Result<HashMap<u32, Vec<f32>>> {
        let mut exact = HashMap::new();
        if depth == 0 || v.is_empty() {
            return Ok(exact);
        }
        let upper = derive(&m.vectors.upper_bounds(v, TopicNorms::of(t)));
        let first: Vec<u32> = derive(v)
            .iter()
            .flat_map(|row| threshold::top_r(row, depth).into_iter().map(|(j, _)| j))
            .collect();
        read_exact(m, t, v, &mut exact, first)?;
        let now = derive(v);
        let mut more = Vec::new();
        for (c, row) in now.iter().enumerate() {
            if !uses[c] || exact.len() >= row.len() {
                continue;
            }
            let mut known: Vec<f32> = exact.keys().map(|&j| row[j as usize]).collect();
            let (_, floor, _) = known.select_nth_unstable_by(depth - 1, |a, b| b.total_cmp(a));
            let floor = *floor;
            more.extend(
                upper[c]
                    .iter()
                    .enumerate()
                    .filter(|&(j, &u)| u >= floor && !exact.contains_key(&(j as u32)))
                    .map(|(j, _)| j as u32),
            );
        }
        read_exact(m, t, v, &mut exact, more)?;
        self.rescored
            .fetch_add(exact.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(exact)
    }

    /// The `r` most similar contents of `lang` for each topic vector (rows of `topics`),
    /// best first; with lexical retrieval, by the ensemble of the vectors and the lexical
    /// similarity of each topic's `lexical` text. One matrix product for the whole block;
    /// exact similarities (see [`refine`](Self::refine)). Fails only when the exact vectors
    /// cannot be read.
    pub fn search(
        &self,
        lang: &str,
        topics: &[f32],
        lexical: Option<&[&str]>,
        r: usize,
    ) -> io::Result<Vec<Vec<Hit>>> {
        let d = self.dim;
        let n_topics = topics.len() / d.max(1);
        if let Some(remote) = &self.remote {
            if !self.has_language(lang) {
                return Ok(vec![Vec::new(); n_topics]);
            }
            let side = self.lexical_side(lang, lexical, None);
            return remote.search(lang, topics, d, side.as_ref(), r);
        }
        let Some(m) = self.langs.get(lang).filter(|m| !m.ids.is_empty()) else {
            return Ok(vec![Vec::new(); n_topics]);
        };
        let n = m.ids.len();
        let (mut sims, lex) = self.columns(m, topics, lexical);
        sims.par_chunks_mut(n)
            .enumerate()
            .map(|(i, v)| {
                let t = &topics[i * d..(i + 1) * d];
                let l = lex.as_ref().map(|l| &l[i * n..(i + 1) * n]);
                let derive = |v: &[f32]| vec![self.ensemble(v, l)];
                self.refine(m, t, v, &derive, &[true], r)?;
                Ok(threshold::top_r(&self.ensemble(v, l), r)
                    .into_iter()
                    .map(|(j, s)| Hit {
                        content: m.ids[j as usize].clone(),
                        similarity: s,
                    })
                    .collect())
            })
            .collect()
    }

    /// The second stage's candidates of each topic (rows of `topics`) in `lang`, built as the
    /// batch pipeline builds them: the top `k` of each column of `columns` (and of their mean
    /// when there are several), with ranks, best and k-th similarities, and the similarities
    /// of each topic's parent; exact similarities (see [`refine`](Self::refine)). Fails only
    /// when the exact vectors cannot be read.
    pub fn candidates(
        &self,
        lang: &str,
        topics: &[f32],
        lexical: Option<&[&str]>,
        parents: &[Option<Parent>],
        columns: &[Column],
        k: usize,
    ) -> io::Result<Vec<ServedCandidates>> {
        let d = self.dim;
        let n_topics = topics.len() / d.max(1);
        let empty = || ServedCandidates {
            topic: from_rows(
                0,
                &vec![&[][..]; columns.len().max(1)],
                None,
                columns.len(),
                k,
            ),
            ids: Vec::new(),
        };
        if let Some(remote) = &self.remote {
            if !self.has_language(lang) {
                return Ok((0..n_topics).map(|_| empty()).collect());
            }
            let side = columns
                .contains(&Column::Lexical)
                .then(|| self.lexical_side(lang, lexical, Some(parents)))
                .flatten();
            return remote.candidates(lang, topics, d, side.as_ref(), parents, columns, k);
        }
        let Some(m) = self.langs.get(lang).filter(|m| !m.ids.is_empty()) else {
            return Ok((0..n_topics).map(|_| empty()).collect());
        };
        let n = m.ids.len();
        let (mut vectors, lex) = self.columns(m, topics, lexical);
        let n_ret = columns.len();
        let mut uses: Vec<bool> = columns.iter().map(|c| *c == Column::Vectors).collect();
        if n_ret > 1 {
            uses.push(columns.contains(&Column::Vectors));
        }
        vectors
            .par_chunks_mut(n)
            .enumerate()
            .map(|(i, v)| {
                let t = &topics[i * d..(i + 1) * d];
                let l = lex.as_ref().map(|l| &l[i * n..(i + 1) * n]);
                let derive = |v: &[f32]| -> Vec<Vec<f32>> {
                    let mut rows: Vec<Vec<f32>> = columns
                        .iter()
                        .map(|c| match c {
                            Column::Vectors => v.to_vec(),
                            Column::Lexical => l.map_or_else(|| vec![0.0; n], <[f32]>::to_vec),
                        })
                        .collect();
                    if n_ret > 1 {
                        rows.push(mean(&rows));
                    }
                    rows
                };
                let exact = self.refine(m, t, v, &derive, &uses, rank_depth(k))?;
                let rows = derive(v);
                let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
                let mut tc = from_rows(0, &refs, None, n_ret, k);
                if let Some(p) = parents.get(i).and_then(Option::as_ref) {
                    let plex = match (p.lexical, &m.lexical) {
                        (Some(t), Some(lx)) if columns.contains(&Column::Lexical) => {
                            Some(lx.scores(t))
                        }
                        _ => None,
                    };
                    for c in &mut tc.candidates {
                        let j = c.content as usize;
                        let mut ps = Vec::with_capacity(columns.len() + 1);
                        for col in columns {
                            ps.push(match col {
                                Column::Vectors => match exact.get(&(j as u32)) {
                                    Some(x) => chain_dot(x, p.vector),
                                    None => chain_dot(&m.exact()?.row(j)?, p.vector),
                                },
                                Column::Lexical => plex.as_ref().map_or(0.0, |r| r[j]),
                            });
                        }
                        if n_ret > 1 {
                            let cols: Vec<Vec<f32>> = ps.iter().map(|&v| vec![v]).collect();
                            ps.push(mean(&cols)[0]);
                        }
                        c.parent_sims = ps;
                    }
                }
                let ids = tc
                    .candidates
                    .iter()
                    .map(|c| m.ids[c.content as usize].clone())
                    .collect();
                Ok(ServedCandidates { topic: tc, ids })
            })
            .collect()
    }

    /// Languages whose lexical index misses writes (none without lexical retrieval).
    pub fn stale_languages(&self) -> Vec<String> {
        if !self.lexical() {
            return Vec::new();
        }
        self.langs
            .iter()
            .filter(|(_, m)| m.fitted != Some(m.version))
            .map(|(l, _)| l.clone())
            .collect()
    }

    /// A language's contents to fit the lexical index on: ids and lexical texts.
    /// (`None` also when the metadata's texts cannot be read back: said in the log, and the
    /// language keeps its current fit.)
    pub fn snapshot(&self, lang: &str) -> Option<Snapshot> {
        let m = self.langs.get(lang)?;
        let texts = m
            .ids
            .iter()
            .map(|id| {
                let c = self.meta.get(id)?.expect("a row implies its metadata");
                Ok(crate::text::content_text_of_short(
                    &c.title,
                    &c.description,
                    &c.short_text,
                ))
            })
            .collect::<io::Result<Vec<String>>>();
        let texts = match texts {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("the lexical index of `{lang}` cannot be refitted: {e}");
                return None;
            }
        };
        Some(Snapshot {
            language: lang.to_string(),
            version: m.version,
            ids: m.ids.clone(),
            texts,
        })
    }

    /// Puts a language's fitted lexical index in place.
    pub fn install(&mut self, snap: Snapshot, fitted: Fitted) {
        let Some(m) = self.langs.get_mut(&snap.language) else {
            return;
        };
        m.lexical = Some(LexRows::new(fitted, &m.ids, snap.version == m.version));
        m.fitted = Some(snap.version);
    }

    /// Bytes the lexical indexes hold in memory.
    pub fn lexical_bytes(&self) -> usize {
        self.langs
            .values()
            .filter_map(|m| m.lexical.as_ref())
            .map(LexRows::memory_bytes)
            .sum()
    }

    /// Bytes of the lexical indexes used in place from their saved files (page cache).
    pub fn lexical_mapped_bytes(&self) -> usize {
        self.langs
            .values()
            .filter_map(|m| m.lexical.as_ref())
            .map(LexRows::mapped_bytes)
            .sum()
    }

    /// What the index holds in memory, part by part (allocations, spare capacity included;
    /// hash tables counted by their buckets). Constant time: the heap bytes of the ids and
    /// metadata are counted as contents come and go.
    pub fn memory(&self) -> IndexMemory {
        let table = |cap: usize, entry: usize| cap * (entry + 1);
        let ids: usize = self
            .langs
            .values()
            .map(|m| m.ids.capacity() * std::mem::size_of::<String>())
            .sum();
        IndexMemory {
            vectors: self.langs.values().map(|m| m.vectors.memory_bytes()).sum(),
            exact_on_disk: self
                .langs
                .values()
                .filter_map(|m| m.exact.as_ref())
                .map(ExactRows::file_bytes)
                .sum(),
            lexical: self.lexical_bytes(),
            lexical_mapped: self.lexical_mapped_bytes(),
            metadata: self.meta.memory_bytes()
                + table(self.row.capacity(), std::mem::size_of::<(String, usize)>())
                + ids
                + self.heap,
            metadata_on_disk: self.meta.file_bytes(),
        }
    }
}

impl LangMatrix {
    /// The exact vectors (an error in the PostgreSQL index mode, which holds none).
    fn exact(&self) -> io::Result<&ExactRows> {
        self.exact
            .as_ref()
            .ok_or_else(|| io::Error::other("no exact vectors in the PostgreSQL index mode"))
    }
}

/// Makes `v[j]` exact for each row `j` of `rows` not read yet, keeping the vectors read.
fn read_exact(
    m: &LangMatrix,
    t: &[f32],
    v: &mut [f32],
    exact: &mut HashMap<u32, Vec<f32>>,
    rows: Vec<u32>,
) -> io::Result<()> {
    for j in rows {
        if let std::collections::hash_map::Entry::Vacant(e) = exact.entry(j) {
            let x = m.exact()?.row(j as usize)?;
            v[j as usize] = chain_dot(&x, t);
            e.insert(x);
        }
    }
    Ok(())
}

/// Bytes the index holds in memory, by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexMemory {
    /// The int8 content vectors, with their scales and bounds.
    pub vectors: usize,
    /// The exact (f32) vectors' files: on disk, read through the page cache, not in memory.
    pub exact_on_disk: u64,
    /// The lexical indexes (with their row maps), in memory.
    pub lexical: usize,
    /// The lexical indexes used in place from their saved files: in the page cache, which
    /// the system can reclaim, not in the heap.
    pub lexical_mapped: usize,
    /// Ids, the metadata recommendations return (less its texts) and the row lookup.
    pub metadata: usize,
    /// The metadata's texts (titles, descriptions, short texts), in a file on disk read
    /// through the page cache.
    pub metadata_on_disk: u64,
}

/// `predict`'s ensemble of one content's similarities: the mean of `models` models (`v`,
/// their mean already) and the lexical similarity `l`, summed then times 1/members (with
/// one model, `v · 1.0` is `v` to the bit). Non-decreasing in `v` and in `l`.
pub(super) fn ensemble(models: usize, v: f32, l: f32) -> f32 {
    let w = models as f32;
    let inv = 1.0 / (models + 1) as f32;
    (v * w + l) * inv
}

/// The mean of equal-length rows as `predict`'s ensemble computes it: summed in order, then
/// times 1/count.
pub(super) fn mean<R: AsRef<[f32]>>(rows: &[R]) -> Vec<f32> {
    let mut acc = rows[0].as_ref().to_vec();
    for r in &rows[1..] {
        let r = r.as_ref();
        acc.iter_mut().zip(r).for_each(|(a, b)| *a += b);
    }
    let inv = 1.0 / rows.len() as f32;
    acc.iter_mut().for_each(|v| *v *= inv);
    acc
}

impl Refit for RwLock<Index> {
    fn stale_languages(&self) -> Vec<String> {
        self.read().map(|i| i.stale_languages()).unwrap_or_default()
    }
    fn snapshot(&self, language: &str) -> Option<Snapshot> {
        self.read().ok()?.snapshot(language)
    }
    fn install(&self, snapshot: Snapshot, fitted: Fitted) {
        if let Ok(mut i) = self.write() {
            i.install(snapshot, fitted);
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;

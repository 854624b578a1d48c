//! What the service does, without HTTP: the façade the handlers call (the habit of
//! text-embeddings-inference's `Infer`). Its state is private; each method validates its input
//! against the [`Limits`], does the work and returns a [`ServeError`] that the HTTP layer maps
//! to a status in one place.
//!
//! - Model work (embedding topic and content texts) goes through the one bounded [`Queue`].
//! - Store I/O runs in `spawn_blocking`; no lock is held across an embedding or an `.await`.
//! - Locks are never nested except in this order: store, catalog, index, reranker links.
//! - A poisoned lock (a panic while it was held) turns into [`ServeError::Failed`], and
//!   `/health` then says `failed` with the reason.
//!
//! [`content`] keeps the store and the index in step (upsert, remove, seeding, re-embedding);
//! [`recommend`] ranks and selects; [`page`] answers the curator page.

pub mod content;
pub mod follow;
pub mod lexical;
pub mod page;
pub mod recommend;

use super::catalog::Catalog;
use super::embedder::Embedder;
use super::error::{ServeError, ServeResult};
use super::index::Index;
use super::limits::Limits;
use super::metrics::Metrics;
use super::queue::{ModelSide, Queue};
use super::rerank::ServeReranker;
use super::schema::Schemas;
use crate::data::Dataset;
use crate::store::Store;
use anyhow::Result;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use content::{Resource, Skipped, UpsertSummary};
pub use recommend::{Recommendation, TopicRecommendations};

/// The settings the engine answers with when a request does not override them.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub limits: Limits,
    /// Tokens the encoder keeps (the texts are cut to [`Limits::encoder_chars`] before it).
    pub max_len: usize,
    /// The dynamic threshold's margin (method §8).
    pub margin: f32,
    /// Recommendations per topic with `override_threshold`.
    pub top_k: usize,
    /// Most topic texts the worker embeds together.
    pub max_batch: usize,
    /// Lexical retrieval (`--model lexical`) next to the model's vectors.
    pub lexical: bool,
    /// Where the contents' vectors and their search live.
    pub index: IndexMode,
}

/// Where the contents' vectors and their nearest-neighbour search live (`--index`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum IndexMode {
    /// In each server's memory (int8, exact rescoring): answers equal `predict`'s.
    #[default]
    Memory,
    /// In the PostgreSQL store (pgvector, HNSW): a server holds the metadata only.
    Postgres(crate::store::search::SearchSettings),
}

/// Contents per language (recommendable), all stored, and those without a language.
pub struct IndexSizes {
    pub by_language: Vec<(String, usize)>,
    pub all: usize,
    pub without_language: usize,
}

pub struct Engine {
    model: Arc<ModelSide>,
    queue: Queue,
    store: Mutex<Store>,
    catalog: RwLock<Catalog>,
    reranker: Option<ServeReranker>,
    metrics: Arc<Metrics>,
    schemas: Schemas,
    settings: EngineSettings,
    /// The first reason the engine broke, if it did.
    failure: OnceLock<String>,
    /// Why the store cannot be reached now (writes get 503, reads go on), if it cannot.
    store_down: Mutex<Option<String>>,
    /// The shared store's last change before the index was loaded: following starts there.
    followed_from: i64,
    /// Who this server's changes are logged as (a version-4 UUID drawn at start): following
    /// the log skips them, since this server applied them as it wrote them.
    writer: String,
    /// With lexical retrieval: what its refits change, and the thread that refits.
    lexical: Option<Arc<lexical::LexicalTarget>>,
    rebuilder: OnceLock<crate::serve::lexical::Rebuilder>,
}

const MODEL_KEY: &str = "model";

/// The PostgreSQL index mode's index: the store's search table made (or brought up to date)
/// for the model's vectors, and connections to search it.
fn remote_index(
    store: &mut Store,
    at: Option<&crate::store::Location>,
    index: Index,
    search: crate::store::search::SearchSettings,
    uncertain: prometheus::IntCounter,
) -> Result<Index> {
    let Some(loc @ crate::store::Location::Postgres(_)) = at else {
        anyhow::bail!(
            "--index postgres keeps the vectors and their search in the PostgreSQL store: give \
             --store postgres://... (or --index memory)"
        );
    };
    anyhow::ensure!(
        (1..=1000).contains(&search.ef_search),
        "--ef-search {}: pgvector accepts 1 to 1000",
        search.ef_search
    );
    let t0 = std::time::Instant::now();
    let bar = crate::progress::bar(store.count()? as u64, "search table");
    let setup = store.enable_search(index.dim(), search.indexed_from, |n| {
        bar.set_position(n as u64)
    })?;
    bar.finish_and_clear();
    let g = &setup.graphs;
    tracing::info!(
        "{} ({}): search table of {} contents ({} written now) in {:.1}s; HNSW graphs of {} \
         languages ({}{}), {} scanned exactly (under {} contents)",
        store.place(),
        store.search_engine()?,
        setup.rows,
        setup.filled,
        t0.elapsed().as_secs_f64(),
        g.indexed.len(),
        g.indexed.join(", "),
        if g.built.is_empty() {
            String::new()
        } else {
            format!("; built now: {}", g.built.join(", "))
        },
        g.scanned.len(),
        search.indexed_from
    );
    let connections = rayon::current_num_threads().max(2);
    Ok(index.with_remote(super::remote::RemoteSearch::open(
        loc,
        connections,
        search,
        uncertain,
    )?))
}

impl Engine {
    /// Opens the store, checks (or re-embeds for) the model, loads the index from it and
    /// starts the model worker.
    pub fn open(
        embedder: Box<dyn Embedder>,
        store: Option<&crate::store::Location>,
        reembed: bool,
        metrics: Arc<Metrics>,
        settings: EngineSettings,
    ) -> Result<Self> {
        let store_at = store;
        let mut store = Store::open_at(store.unwrap_or(&crate::store::Location::Memory))?;
        let writer = uuid::Uuid::new_v4().to_string();
        store.set_writer(&writer);
        let place = store.place().to_string();
        // Read before the index is loaded, so no change of another replica falls in between.
        let followed_from = store.last_change()?;
        match store.get_meta(MODEL_KEY)? {
            Some(id) if id != embedder.id() => {
                let n = store.count()?;
                let others = store.other_sessions()?;
                anyhow::ensure!(
                    !reembed || others == 0,
                    "{place}: {others} other lecr session(s) are connected; stop the other \
                     replicas before --reembed (they would go on serving the old model's vectors)"
                );
                anyhow::ensure!(
                    reembed,
                    "{place}: its {n} content vectors were made by `{id}`, not by this server's \
                     `{}`; start with --reembed to embed them again with this model, or use \
                     another --store",
                    embedder.id()
                );
                // Every vector changes (maybe its size too): the search table goes, and a
                // server in the PostgreSQL index mode makes it again below.
                store.forget_search()?;
                content::reembed_all(&mut store, embedder.as_ref())?;
                store.set_meta(MODEL_KEY, embedder.id())?;
            }
            Some(_) => {}
            None => store.set_meta(MODEL_KEY, embedder.id())?,
        }
        let t0 = std::time::Instant::now();
        let mut index = Index::new(embedder.dim());
        if let IndexMode::Postgres(search) = settings.index {
            index = remote_index(
                &mut store,
                store_at,
                index,
                search,
                metrics.search_uncertain.clone(),
            )?;
        }
        // The exact vectors' files beside a store on disk (the system's temporary folder,
        // which may be memory, otherwise).
        if let Some(crate::store::Location::Dir(dir)) = store_at {
            index = index.with_exact_dir(dir);
        }
        if settings.lexical {
            index = index.with_lexical(embedder.members());
        }
        if index.is_remote() {
            store.each_meta(|m| {
                index.upsert_meta(m)?;
                Ok::<(), anyhow::Error>(())
            })?;
        } else {
            // Streamed row by row: the catalog is held once, in the index.
            store.each(|c| {
                anyhow::ensure!(
                    c.vector.len() == index.dim(),
                    "{place}: content {} has a vector of {} values, the model gives {}",
                    c.meta.id,
                    c.vector.len(),
                    index.dim()
                );
                index.upsert(c.meta, &c.vector)?;
                Ok(())
            })?;
        }
        index.shrink_to_fit();
        tracing::info!(
            "{} contents read from {place} into the index in {:.1}s",
            index.len(),
            t0.elapsed().as_secs_f64()
        );
        metrics.set_index(&index);
        let mut catalog = Catalog::default();
        catalog.add(store.topics()?);
        let model = Arc::new(ModelSide::new(embedder, index));
        let lexical = settings.lexical.then(|| {
            Arc::new(lexical::LexicalTarget {
                model: model.clone(),
                metrics: metrics.clone(),
                saved: match store_at {
                    Some(crate::store::Location::Dir(dir)) => {
                        Some(crate::serve::lexical_saved::SavedFits::beside(dir))
                    }
                    _ => None,
                },
                read_back: Default::default(),
            })
        });
        let queue = Queue::start(
            model.clone(),
            settings.limits.max_queue,
            settings.max_batch,
            metrics.clone(),
        );
        Ok(Engine {
            model,
            queue,
            store: Mutex::new(store),
            catalog: RwLock::new(catalog),
            reranker: None,
            metrics,
            schemas: Schemas::load()?,
            settings,
            failure: OnceLock::new(),
            store_down: Mutex::new(None),
            followed_from,
            writer,
            lexical,
            rebuilder: OnceLock::new(),
        })
    }

    /// Adds a data folder's topics and links to what the page can browse.
    pub fn add_dataset(&self, ds: &Dataset) -> Result<()> {
        self.catalog_mut()?.add_dataset(ds);
        Ok(())
    }

    /// Reranks recommendations with `rr`; its tree context gets the links curators accepted.
    /// Returns how many accepted links it got.
    pub fn set_reranker(&mut self, mut rr: ServeReranker) -> Result<usize> {
        if let Some(scorer) = rr.take_scorer() {
            let id = scorer.id().to_string();
            self.model
                .cross
                .set(scorer)
                .map_err(|_| anyhow::anyhow!("a cross-encoder is already loaded"))?;
            tracing::info!("the reranker reads the cross-encoder {id}");
        }
        self.reranker = Some(rr);
        self.load_accepted_links()
    }

    /// The id of the weights that made the vectors.
    pub fn model_id(&self) -> &str {
        self.model.embedder.id()
    }

    pub fn dim(&self) -> usize {
        self.model.embedder.dim()
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn reranker(&self) -> Option<&ServeReranker> {
        self.reranker.as_ref()
    }

    /// How many contents the index holds.
    pub fn sizes(&self) -> ServeResult<IndexSizes> {
        let index = self.index()?;
        Ok(IndexSizes {
            by_language: index.sizes(),
            all: index.len(),
            without_language: index.without_language(),
        })
    }

    /// Why the engine cannot serve, when it cannot: a dead model worker or a poisoned lock.
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned().or_else(|| self.queue.failure())
    }

    /// Why the service is degraded (serving reads only), if it is: the store is unreachable.
    pub fn degraded(&self) -> Option<String> {
        self.store_down.lock().ok().and_then(|d| d.clone())
    }

    /// A store call's result: an unreachable store becomes `StoreUnavailable` (and marks the
    /// service degraded until a store call succeeds again); other store errors are internal.
    fn checked<T>(&self, r: crate::store::Result<T>) -> ServeResult<T> {
        let mut down = self.store_down.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(v) => {
                if down.take().is_some() {
                    tracing::info!("the store is reachable again");
                }
                Ok(v)
            }
            Err(e) if e.is_unavailable() => {
                let why = e.to_string();
                if down.is_none() {
                    tracing::warn!("the store is unreachable: {why}");
                }
                *down = Some(why.clone());
                Err(ServeError::StoreUnavailable(why))
            }
            Err(e) => Err(ServeError::internal(e)),
        }
    }

    /// Texts waiting for the model.
    pub fn queued(&self) -> usize {
        self.queue.waiting()
    }

    fn broken(&self, what: &str) -> ServeError {
        let why = format!("{what} is poisoned by an earlier panic; restart the server");
        let _ = self.failure.set(why.clone());
        tracing::error!("{why}");
        ServeError::Failed(why)
    }

    /// The index's exact vectors' file failed (a disk error): the index no longer matches
    /// the store, so the server stops serving until restarted (which rebuilds the file).
    fn index_io<T>(&self, r: std::io::Result<T>) -> ServeResult<T> {
        r.map_err(|e| {
            let why = format!(
                "the index's exact vectors' file: {e}; the index no longer matches the store; \
                 restart the server"
            );
            let _ = self.failure.set(why.clone());
            tracing::error!("{why}");
            ServeError::Failed(why)
        })
    }

    fn index(&self) -> ServeResult<RwLockReadGuard<'_, Index>> {
        self.model
            .index
            .read()
            .map_err(|_| self.broken("the index lock"))
    }

    fn index_mut(&self) -> ServeResult<RwLockWriteGuard<'_, Index>> {
        self.model
            .index
            .write()
            .map_err(|_| self.broken("the index lock"))
    }

    fn catalog(&self) -> ServeResult<RwLockReadGuard<'_, Catalog>> {
        self.catalog
            .read()
            .map_err(|_| self.broken("the catalog lock"))
    }

    fn catalog_mut(&self) -> ServeResult<RwLockWriteGuard<'_, Catalog>> {
        self.catalog
            .write()
            .map_err(|_| self.broken("the catalog lock"))
    }

    fn store(&self) -> ServeResult<MutexGuard<'_, Store>> {
        self.store.lock().map_err(|_| self.broken("the store lock"))
    }

    /// Whether `lang` may be asked for: an le-utils code, or one some content has.
    fn known_language(&self, lang: &str) -> ServeResult<bool> {
        Ok(self.schemas.is_known_language(lang) || self.index()?.has_language(lang))
    }

    /// A text as the tokenizer gets it: cut to [`Limits::encoder_chars`].
    fn encoder_text(&self, s: String) -> String {
        crate::text::cap_chars(s, Limits::encoder_chars(self.settings.max_len))
    }

    /// Gives the reranker's tree context the links curators accepted so far (at start-up).
    fn load_accepted_links(&self) -> Result<usize> {
        let Some(r) = &self.reranker else {
            return Ok(0);
        };
        let decisions = self.checked(self.store()?.decisions(None))?;
        let catalog = self.catalog()?;
        let mut links = r.links_mut()?;
        let mut n = 0;
        for d in decisions
            .iter()
            .filter(|d| d.kind == crate::store::DecisionKind::Accept)
        {
            let channel = catalog.get(&d.topic_id).map_or("", |t| t.channel.as_str());
            links.accept(&d.topic_id, channel, &d.content_id);
            n += 1;
        }
        Ok(n)
    }
}

/// Runs blocking work (store I/O, the reranker's trees) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ServeResult<T> + Send + 'static,
) -> ServeResult<T> {
    tokio::task::spawn_blocking(f).await?
}

/// A field's length against a limit: 422 naming the field and the limit.
fn check_len(field: impl Fn() -> String, value: &str, limit: usize, flag: &str) -> ServeResult<()> {
    let n = value.chars().count();
    if n > limit {
        return Err(ServeError::validation(
            field(),
            format!("{n} characters, more than {flag} {limit}"),
        ));
    }
    Ok(())
}

/// A count against a limit: 413 naming the field and the limit.
pub(crate) fn check_count(field: &str, n: usize, limit: usize, flag: &str) -> ServeResult<()> {
    if n > limit {
        return Err(ServeError::too_large(
            field,
            format!("{n} items, more than {flag} {limit} per request"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Embedder for Fixed {
        fn id(&self) -> &str {
            "fixed"
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed(
            &self,
            _: super::super::embedder::Role,
            texts: &[String],
        ) -> anyhow::Result<Vec<f32>> {
            Ok(texts.iter().flat_map(|_| [0.6, 0.8]).collect())
        }
    }

    pub(super) fn engine_for_tests() -> Engine {
        engine()
    }

    fn engine() -> Engine {
        let settings = EngineSettings {
            limits: Limits::DEFAULT,
            max_len: 16,
            margin: 0.18,
            top_k: 20,
            max_batch: 8,
            lexical: false,
            index: IndexMode::Memory,
        };
        Engine::open(
            Box::new(Fixed),
            None,
            false,
            Arc::new(Metrics::new()),
            settings,
        )
        .unwrap()
    }

    #[test]
    fn a_poisoned_lock_fails_requests_and_health_with_the_reason() {
        let e = engine();
        assert!(e.channels().is_ok());
        assert!(e.failure().is_none());
        // A panic while the catalog is being changed poisons its lock.
        std::thread::scope(|s| {
            let r = s
                .spawn(|| {
                    let _g = e.catalog.write().unwrap();
                    panic!("while changing the catalog");
                })
                .join();
            assert!(r.is_err());
        });
        match e.channels() {
            Err(ServeError::Failed(why)) => assert!(why.contains("catalog"), "{why}"),
            other => panic!("expected Failed, got {:?}", other.map(|_| ())),
        }
        assert!(e.failure().is_some_and(|w| w.contains("restart")));
    }
}

#[cfg(test)]
mod degraded_tests {
    #[test]
    fn an_unreachable_store_marks_the_engine_degraded_until_a_call_succeeds() {
        let e = super::tests::engine_for_tests();
        let r: super::ServeResult<()> =
            e.checked(Err(crate::store::StoreError::Unavailable("db down".into())));
        assert!(matches!(r, Err(super::ServeError::StoreUnavailable(_))));
        assert_eq!(e.degraded().as_deref(), Some("db down"));
        assert!(e.checked(Ok(())).is_ok());
        assert_eq!(e.degraded(), None);
    }
}

/// A content's metadata from `index`, its texts read back from the index's metadata file
/// (`None`: not in the index, e.g. removed since it was ranked).
pub(super) fn meta_of(index: &Index, id: &str) -> ServeResult<Option<crate::store::ContentMeta>> {
    index.get(id).map_err(|e| {
        tracing::error!("reading the index's metadata file: {e}");
        ServeError::Internal(anyhow::anyhow!("reading the index's metadata file: {e}"))
    })
}

//! `lecr serve`: a recommendations backend that Kolibri Studio's curriculum-automation client
//! can call, as layers that only talk down: [`api`] (HTTP, validation) → [`batcher`] (dynamic
//! batching) → [`engine`] (store + index in step, ranking) → [`index`] / [`store`], with the
//! model behind the [`embedder::Embedder`] trait. Selection uses the same threshold code as
//! `eval` and `predict`.

pub mod api;
pub mod batcher;
pub mod catalog;
pub mod embedder;
pub mod engine;
pub mod feedback;
pub mod index;
pub mod metrics;
pub mod page;
pub mod recommend;
pub mod request;
pub mod rerank;
pub mod schema;
pub mod store;

use anyhow::{Context, Result};
use api::{ApiOptions, AppState, Phase};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything `lecr serve` is told.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub models: Vec<String>,
    pub int8: bool,
    pub max_len: usize,
    pub batch_size: usize,
    /// Most topic texts the batcher embeds together.
    pub max_batch: usize,
    pub store: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub reembed: bool,
    /// A `lecr rerank train` folder: rerank the model's candidates (one model only).
    pub reranker: Option<PathBuf>,
    pub addr: String,
    pub api: ApiOptions,
}

/// Binds, loads the model and index in the background (503 until ready), serves until SIGTERM
/// or Ctrl-C, lets in-flight requests finish, then closes the store.
pub fn run(o: ServeOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&o.addr)
            .await
            .with_context(|| format!("binding {}", o.addr))?;
        let local = listener.local_addr()?;
        let metrics = Arc::new(metrics::Metrics::new());
        let state = Arc::new(AppState {
            phase: std::sync::RwLock::new(Phase::Loading("loading the model and the index".into())),
            schemas: schema::Schemas::load()?,
            opts: o.api.clone(),
            metrics: metrics.clone(),
        });
        println!(
            "listening on http://{local}/{}/ (loading; /{}/connect answers 503 until ready)",
            o.api.prefix, o.api.prefix
        );
        let _ = std::io::stdout().flush();
        let failed = Arc::new(tokio::sync::Notify::new());
        let (st, fail, opts) = (state.clone(), failed.clone(), o.clone());
        tokio::task::spawn_blocking(move || match load(&opts, metrics) {
            Ok((engine, batcher)) => {
                let index = engine.index.read().expect("index lock");
                let sizes: Vec<String> = index
                    .sizes()
                    .iter()
                    .map(|(l, n)| format!("{l} {n}"))
                    .collect();
                println!(
                    "ready: {} contents ({}; {} without a language), model {}",
                    index.len(),
                    sizes.join(", "),
                    index.without_language(),
                    engine.embedder.id()
                );
                let _ = std::io::stdout().flush();
                drop(index);
                *st.phase.write().expect("phase lock") = Phase::Ready { engine, batcher };
            }
            Err(e) => {
                tracing::error!("could not start: {e:#}");
                *st.phase.write().expect("phase lock") = Phase::Failed(format!("{e:#}"));
                fail.notify_one();
            }
        });
        let shutdown = {
            let failed = failed.clone();
            async move {
                tokio::select! {
                    _ = terminate() => tracing::info!("shutting down: finishing in-flight requests"),
                    _ = failed.notified() => {}
                }
            }
        };
        axum::serve(listener, api::router(state.clone()))
            .with_graceful_shutdown(shutdown)
            .await?;
        // Closing: the engine (and its SQLite connection) goes with the last reference; the
        // batcher thread holds one until it sees the queue closed.
        let phase = std::mem::replace(
            &mut *state.phase.write().expect("phase lock"),
            Phase::Loading("stopped".into()),
        );
        let engine = match phase {
            Phase::Failed(why) => anyhow::bail!("{why}"),
            Phase::Ready { engine, batcher } => {
                drop(batcher);
                Some(Arc::downgrade(&engine))
            }
            Phase::Loading(_) => None,
        };
        let t0 = std::time::Instant::now();
        while engine.as_ref().is_some_and(|w| w.strong_count() > 0) {
            if t0.elapsed() > std::time::Duration::from_secs(10) {
                tracing::warn!("the batcher did not stop within 10 s; exiting anyway");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        println!("stopped; store closed");
        Ok(())
    })
}

fn load(
    o: &ServeOptions,
    metrics: Arc<metrics::Metrics>,
) -> Result<(Arc<engine::Engine>, batcher::Batcher)> {
    if o.store.is_none() {
        tracing::warn!("no --store: the index lives in memory and is lost when the server stops");
    }
    let embedder = embedder::ModelEmbedder::load(&o.models, o.int8, o.max_len, o.batch_size)?;
    let mut engine =
        engine::Engine::open(Box::new(embedder), o.store.as_deref(), o.reembed, metrics)?;
    let ds = match &o.data {
        Some(dir) => Some(crate::data::load_dataset(dir)?),
        None => None,
    };
    if let Some(ds) = &ds {
        let t0 = std::time::Instant::now();
        let s = engine.seed(ds)?;
        println!(
            "seeded from {}: {} added, {} replaced, {} unchanged, {} skipped; {} embedded in {:.1}s",
            ds.dir.display(),
            s.added,
            s.replaced,
            s.unchanged,
            s.skipped.len(),
            s.embedded,
            t0.elapsed().as_secs_f64()
        );
    }
    if let Some(ds) = &ds {
        engine
            .catalog
            .write()
            .expect("catalog lock")
            .add_dataset(ds);
    }
    if let Some(dir) = &o.reranker {
        let rr = rerank::ServeReranker::load(dir, &o.models, o.max_len, ds.as_ref())?;
        println!(
            "reranking the top {} with {} (selection: probability >= {} or >= {:.0}% of the best)",
            rr.rr.meta.k,
            dir.display(),
            rr.rr.meta.selection.threshold,
            (1.0 - rr.rr.meta.selection.margin) * 100.0
        );
        engine.reranker = Some(rr);
        let n = engine.load_accepted_links()?;
        if n > 0 {
            println!("the reranker's tree context includes {n} link(s) accepted by curators");
        }
    }
    let engine = Arc::new(engine);
    let batcher = batcher::Batcher::start(engine.clone(), o.max_batch);
    Ok((engine, batcher))
}

/// SIGTERM or Ctrl-C.
async fn terminate() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

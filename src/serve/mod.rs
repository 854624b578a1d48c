//! `lecr serve`: a recommendations backend that Kolibri Studio's curriculum-automation client
//! can call, as layers that only talk down: [`http`] (routes, guards, the one error mapping) →
//! [`engine`] (the façade: validation against the [`limits`], store and index in step,
//! ranking) → [`queue`] (the one bounded queue of model work) → [`index`] and
//! [`crate::store`], with the model behind the [`embedder::Embedder`] trait. Selection uses the
//! same threshold code as `eval` and `predict`.

pub mod cancel;
pub mod catalog;
pub mod cross_cache;
pub mod embedder;
pub mod engine;
pub mod error;
pub mod exact;
pub mod http;
pub mod index;
pub mod lexical;
pub mod lexical_saved;
pub mod limits;
pub mod meta;
pub mod metrics;
pub mod queue;
pub mod remote;
pub mod rerank;
pub mod schema;

use anyhow::{Context, Result};
use engine::{Engine, EngineSettings};
use http::guard::{AllowedHosts, ApiKey};
use http::{AppState, HttpOptions, Phase};
use limits::Limits;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything `lecr serve` is told.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub models: Vec<String>,
    pub int8: bool,
    /// Round float models' dense layers to bf16 as they load.
    pub bf16: bool,
    pub max_len: usize,
    pub batch_size: usize,
    /// `--topic-prompt` / `--content-prompt` over the model folders' own prompts.
    pub topic_prompt: Option<String>,
    pub content_prompt: Option<String>,
    /// Most topic texts the model worker embeds together.
    pub max_batch: usize,
    pub store: Option<crate::store::Location>,
    pub data: Option<PathBuf>,
    pub reembed: bool,
    /// A `lecr rerank train` folder: rerank the model's candidates (one model only).
    pub reranker: Option<PathBuf>,
    /// Cross-encoder logits kept by pair text (0: none kept).
    pub cross_cache: usize,
    pub addr: String,
    /// Path prefix of Studio's routes.
    pub prefix: String,
    pub margin: f32,
    pub top_k: usize,
    pub api_key: Option<String>,
    /// `--allow-host` names (empty: the bound address and the loopback names).
    pub allow_hosts: Vec<String>,
    /// A separate listener for Studio's routes (then not served on `addr`).
    pub studio_addr: Option<String>,
    /// The key Studio's listener needs (none by default: Studio's client sends none).
    pub studio_key: Option<String>,
    /// `--studio-allow-host` names for Studio's listener.
    pub studio_allow_hosts: Vec<String>,
    /// A separate listener for `/metrics` (with `--studio-addr`; default: Studio's listener).
    pub metrics_addr: Option<String>,
    pub limits: Limits,
    /// Where the vectors and their search live (`--index`, `--ef-search`).
    pub index: engine::IndexMode,
}

/// A bound listener and what it serves.
struct Bound {
    listener: tokio::net::TcpListener,
    site: Arc<http::Site>,
}

async fn bind(addr: &str, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} ({what})"))
}

/// Binds, loads the model and index in the background (503 until ready), serves until SIGTERM
/// or Ctrl-C, lets in-flight requests finish (for at most the shutdown deadline), then closes
/// the store.
pub fn run(o: ServeOptions) -> Result<()> {
    let api_key = o.api_key.as_deref().map(ApiKey::new).transpose()?;
    let studio_key = o.studio_key.as_deref().map(ApiKey::new).transpose()?;
    anyhow::ensure!(
        o.studio_addr.is_some() || (o.studio_key.is_none() && o.metrics_addr.is_none()),
        "--studio-key and --metrics-addr need --studio-addr (one listener uses --api-key for all)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let metrics = Arc::new(metrics::Metrics::new());
        let app = Arc::new(AppState::new(
            HttpOptions {
                prefix: o.prefix.trim_matches('/').to_string(),
                limits: o.limits.clone(),
            },
            metrics.clone(),
        )?);
        let prefix = app.opts.prefix.clone();
        // Every port first: one that cannot be bound stops the process, naming the address.
        let main = bind(&o.addr, "--addr").await?;
        let studio = match &o.studio_addr {
            Some(a) => Some(bind(a, "--studio-addr").await?),
            None => None,
        };
        let metrics_l = match &o.metrics_addr {
            Some(a) => Some(bind(a, "--metrics-addr").await?),
            None => None,
        };
        let site = |listener: &tokio::net::TcpListener,
                    serves: http::Serves,
                    key: &Option<ApiKey>,
                    hosts: &[String]|
         -> Result<Arc<http::Site>> {
            let local = listener.local_addr()?;
            if key.is_none() && !local.ip().is_loopback() && (serves.studio || serves.page) {
                tracing::warn!(
                    "listening on {local}, beyond loopback, without a key: anyone who reaches \
                     the port can {}",
                    if serves.page {
                        "read and change the curators' decisions"
                    } else {
                        "change the index"
                    }
                );
            }
            Ok(Arc::new(http::Site {
                app: app.clone(),
                serves,
                api_key: key.clone(),
                hosts: AllowedHosts::new(hosts, local),
            }))
        };
        let main_serves = if studio.is_some() {
            http::Serves {
                studio: false,
                page: true,
                metrics: false,
            }
        } else {
            http::Serves::ALL
        };
        let mut bound = vec![Bound {
            site: site(&main, main_serves, &api_key, &o.allow_hosts)?,
            listener: main,
        }];
        if let Some(l) = studio {
            let serves = http::Serves {
                studio: true,
                page: false,
                metrics: metrics_l.is_none(),
            };
            bound.push(Bound {
                site: site(&l, serves, &studio_key, &o.studio_allow_hosts)?,
                listener: l,
            });
        }
        if let Some(l) = metrics_l {
            let serves = http::Serves {
                studio: false,
                page: false,
                metrics: true,
            };
            bound.push(Bound {
                site: site(&l, serves, &None, &["*".to_string()])?,
                listener: l,
            });
        }
        for (k, b) in bound.iter().enumerate() {
            let local = b.listener.local_addr()?;
            let what = match (b.site.serves.studio, b.site.serves.page) {
                (true, true) => format!(
                    "Studio's routes at /{prefix}/, the curator page at / (loading; \
                     /{prefix}/connect answers 503 until ready)"
                ),
                (false, true) => "the curator page at / and its /api".to_string(),
                (true, false) => format!("Studio's routes at /{prefix}/"),
                (false, false) => "/metrics".to_string(),
            };
            let first = if k == 0 { "listening on" } else { "also listening on" };
            println!(
                "{first} http://{local}/ ({what}; Host names served: {})",
                b.site.hosts
            );
        }
        let _ = std::io::stdout().flush();
        let state = app;
        let failed = Arc::new(tokio::sync::Notify::new());
        let (st, fail, opts) = (state.clone(), failed.clone(), o.clone());
        tokio::task::spawn_blocking(move || match load(&opts, metrics) {
            Ok(engine) => {
                if let Ok(s) = engine.sizes() {
                    let langs: Vec<String> =
                        s.by_language.iter().map(|(l, n)| format!("{l} {n}")).collect();
                    println!(
                        "ready: {} contents ({}; {} without a language), model {}; {}",
                        s.all,
                        langs.join(", "),
                        s.without_language,
                        engine.model_id(),
                        crate::kernels::isa::describe()
                    );
                }
                let _ = std::io::stdout().flush();
                st.set_phase(Phase::Ready(engine));
            }
            Err(e) => {
                tracing::error!("could not start: {e:#}");
                st.set_phase(Phase::Failed(format!("{e:#}")));
                fail.notify_one();
            }
        });
        let stop = {
            let failed = failed.clone();
            async move {
                tokio::select! {
                    _ = terminate() => tracing::info!("shutting down: finishing in-flight requests"),
                    _ = failed.notified() => {}
                }
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let servers: Vec<_> = bound
            .into_iter()
            .map(|b| {
                let mut rx = stop_rx.clone();
                tokio::spawn(http::listen::serve(
                    b.listener,
                    http::router(b.site),
                    o.limits.header_timeout,
                    o.limits.shutdown_timeout,
                    async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    },
                ))
            })
            .collect();
        stop.await;
        let _ = stop_tx.send(true);
        for s in servers {
            let _ = s.await;
        }
        // Closing: the engine (its store connection, its model worker) goes with the last
        // reference; a request task still holding one is given a moment.
        let phase = std::mem::replace(
            &mut *state.phase.write().unwrap_or_else(|e| e.into_inner()),
            Phase::Loading("stopped".into()),
        );
        let engine = match phase {
            Phase::Failed(why) => anyhow::bail!("{why}"),
            Phase::Ready(engine) => Some(Arc::downgrade(&engine)),
            Phase::Loading(_) => None,
        };
        let t0 = std::time::Instant::now();
        while engine.as_ref().is_some_and(|w| w.strong_count() > 0) {
            if t0.elapsed() > o.limits.shutdown_timeout {
                tracing::warn!("the engine was still in use after the shutdown deadline; exiting");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        println!("stopped; store closed");
        Ok(())
    })
}

fn load(o: &ServeOptions, metrics: Arc<metrics::Metrics>) -> Result<Arc<Engine>> {
    if o.store.is_none() {
        tracing::warn!("no --store: the index lives in memory and is lost when the server stops");
    }
    let neural: Vec<String> = o
        .models
        .iter()
        .filter(|m| m.as_str() != "lexical")
        .cloned()
        .collect();
    let lexical = o.models.len() - neural.len();
    anyhow::ensure!(
        lexical <= 1,
        "--model lexical is given {lexical} times; give it once"
    );
    anyhow::ensure!(
        !neural.is_empty(),
        "the service embeds topics and contents with a model: give a model folder as --model \
         (the lexical retriever serves next to one: --model DIR --model lexical)"
    );
    let t0 = std::time::Instant::now();
    let embedder = embedder::ModelEmbedder::load(
        &neural,
        o.int8,
        o.bf16,
        o.max_len,
        o.batch_size,
        (o.topic_prompt.clone(), o.content_prompt.clone()),
    )?;
    tracing::info!("model loaded in {:.1}s", t0.elapsed().as_secs_f64());
    let settings = EngineSettings {
        limits: o.limits.clone(),
        max_len: o.max_len,
        margin: o.margin,
        top_k: o.top_k,
        max_batch: o.max_batch,
        lexical: lexical == 1,
        index: o.index,
    };
    let mut engine = Engine::open(
        Box::new(embedder),
        o.store.as_ref(),
        o.reembed,
        metrics,
        settings,
    )?;
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
        engine.add_dataset(ds)?;
    }
    if let Some(l) = engine.settle_lexical()? {
        println!(
            "lexical index: {} language(s) ({} read back from saved fits, {} fitted), {} contents, \
             in {:.1}s ({:.1} MiB)",
            l.languages,
            l.read_back,
            l.languages - l.read_back,
            l.contents,
            l.seconds,
            l.bytes as f64 / (1 << 20) as f64
        );
    }
    if let Some(dir) = &o.reranker {
        let mut rr = rerank::ServeReranker::load(dir, &o.models, o.max_len, ds.as_ref())?;
        if rr.cross_top().is_some() {
            rr.cache = cross_cache::CrossCache::new(o.cross_cache);
        }
        println!(
            "reranking the top {} with {} (selection: {})",
            rr.rr.meta.k,
            dir.display(),
            rr.rr.meta.selection
        );
        if let Some(c) = &rr.rr.meta.cross {
            println!(
                "its cross-encoder {} ({}) reads each topic's best {} candidates",
                c.dir, c.precision, c.top
            );
        }
        let n = engine.set_reranker(rr)?;
        if n > 0 {
            println!("the reranker's tree context includes {n} link(s) accepted by curators");
        }
    }
    release_free_memory();
    let engine = Arc::new(engine);
    if let Some(loc) = &o.store {
        engine.follow(loc)?;
    }
    Ok(engine)
}

/// Hands the heap's free pages back to the system once start-up is done: loading the store
/// and fitting the lexical index leave freed rows and fit buffers that glibc's allocator would
/// otherwise keep as resident memory (at LECR scale, about a quarter of the RSS).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
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

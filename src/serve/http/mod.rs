//! HTTP, and only HTTP: routes (Studio's, the page's), the guards every request passes
//! ([`guard`]), and the one mapping from [`ServeError`] to a status ([`error`]). Handlers parse,
//! call one engine method and serialise; they take no locks.

pub mod error;
pub mod guard;
pub mod listen;
pub mod page;
pub mod studio;

use crate::serve::engine::Engine;
use crate::serve::error::ServeError;
use crate::serve::limits::Limits;
use crate::serve::metrics::Metrics;
use crate::serve::schema::Schemas;
use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use guard::{AllowedHosts, ApiKey};
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};

/// Settings of the HTTP layer that every listener shares.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Path prefix of Studio's routes (`stable`).
    pub prefix: String,
    pub limits: Limits,
}

/// What one listener serves. One listener serves everything (`lecr serve` without
/// `--studio-addr`); with `--studio-addr` the curators' listener serves the page and `/api`,
/// Studio's serves its routes and `/metrics` (or `--metrics-addr` does). Every listener
/// answers `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serves {
    pub studio: bool,
    pub page: bool,
    pub metrics: bool,
}

impl Serves {
    pub const ALL: Serves = Serves {
        studio: true,
        page: true,
        metrics: true,
    };
}

/// One listener: what it serves, the key its API routes need, the Host names it answers, and
/// the state all listeners share.
pub struct Site {
    pub app: Arc<AppState>,
    pub serves: Serves,
    pub api_key: Option<ApiKey>,
    pub hosts: AllowedHosts,
}

impl std::ops::Deref for Site {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

/// The model and index load in the background; until then Studio gets 503s.
pub enum Phase {
    Loading(String),
    Ready(Arc<Engine>),
    Failed(String),
}

pub struct AppState {
    pub phase: RwLock<Phase>,
    pub schemas: Schemas,
    pub opts: HttpOptions,
    pub metrics: Arc<Metrics>,
    /// Requests being handled (`--max-inflight` permits).
    pub inflight: Arc<tokio::sync::Semaphore>,
}

pub type Shared = Arc<Site>;

impl AppState {
    pub fn new(opts: HttpOptions, metrics: Arc<Metrics>) -> anyhow::Result<AppState> {
        Ok(AppState {
            phase: RwLock::new(Phase::Loading("loading the model and the index".into())),
            schemas: Schemas::load()?,
            inflight: Arc::new(tokio::sync::Semaphore::new(opts.limits.max_inflight.max(1))),
            opts,
            metrics,
        })
    }

    pub fn set_phase(&self, p: Phase) {
        *self.phase.write().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// The engine, or why there is none (loading, failed to start, broken since).
    pub fn engine(&self) -> Result<Arc<Engine>, ServeError> {
        match &*self.phase.read().unwrap_or_else(|e| e.into_inner()) {
            Phase::Ready(e) => match e.failure() {
                None => Ok(e.clone()),
                Some(why) => Err(ServeError::Failed(why)),
            },
            Phase::Loading(why) => Err(ServeError::NotReady(why.clone())),
            Phase::Failed(why) => Err(ServeError::Failed(format!("failed to start: {why}"))),
        }
    }
}

/// A listener's routes with their guards.
pub fn router(state: Shared) -> Router {
    use axum::middleware::{from_fn, from_fn_with_state};
    let mut api = Router::new();
    if state.serves.studio {
        api = api.merge(studio::routes(&state.opts.prefix));
    }
    if state.serves.page {
        api = api.merge(page::api_routes());
    }
    let api = api.route_layer(from_fn_with_state(state.clone(), guard::require_key));
    let mut r = Router::new().route("/health", get(health)).merge(api);
    if state.serves.metrics {
        r = r.route("/metrics", get(metrics));
    }
    if state.serves.page {
        r = r.merge(page::assets());
    }
    r.layer(from_fn(guard::check_write))
        .layer(from_fn_with_state(state.clone(), guard::check_host))
        .layer(from_fn_with_state(state.clone(), guard::deadline))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.opts.limits.max_body_bytes,
        ))
        .layer(from_fn_with_state(state.clone(), guard::admit))
        .layer(from_fn(guard::security_headers))
        .layer(from_fn_with_state(state.clone(), guard::observe))
        .with_state(state)
}

/// `{"status": "ok" | "degraded" | "failed", "phase", "reason"?, "queued"?}`: 200 while
/// loading or ready (degraded too: reads are served), 503 once failed (a load balancer takes
/// the replica out).
async fn health(axum::extract::State(s): axum::extract::State<Shared>) -> impl IntoResponse {
    let (phase, reason, queued, degraded, stale) =
        match &*s.phase.read().unwrap_or_else(|e| e.into_inner()) {
            Phase::Loading(_) => ("loading", None, None, None, None),
            Phase::Ready(e) => match e.failure() {
                None => (
                    "ready",
                    None,
                    Some(e.queued()),
                    e.degraded(),
                    e.lexical_stale(),
                ),
                Some(why) => ("failed", Some(why), None, None, None),
            },
            Phase::Failed(why) => ("failed", Some(why.clone()), None, None, None),
        };
    // Degraded: the store is unreachable; reads are served, writes get 503.
    let status = match (phase, &degraded) {
        ("failed", _) => "failed",
        (_, Some(_)) => "degraded",
        _ => "ok",
    };
    let reason = reason.or(degraded);
    let mut body = json!({"status": status, "phase": phase});
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    if let Some(q) = queued {
        body["queued"] = json!(q);
    }
    // Languages whose lexical index misses recent writes (refitted once writes pause).
    if let Some(n) = stale {
        body["lexical_stale_languages"] = json!(n);
    }
    let code = if phase == "failed" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body))
}

async fn metrics(axum::extract::State(s): axum::extract::State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// Parses a JSON body; a syntax error names its line and column.
pub(crate) fn parse_body(body: &Bytes) -> Result<Value, ServeError> {
    serde_json::from_slice(body)
        .map_err(|e| ServeError::bad_request("/", format!("the body is not valid JSON: {e}")))
}

/// A parsed body as a typed request, or 422 naming why.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ServeError> {
    serde_json::from_value(v).map_err(|e| ServeError::validation("/", e.to_string()))
}

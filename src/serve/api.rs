//! HTTP routes: Kolibri Studio's curriculum-automation contract (`/{prefix}/connect`,
//! `recommend`, `embed-topics`, `embed-content`), content removal, `/health` and `/metrics`.
//! Bodies are parsed and validated here (errors as JSON naming the field); the work goes to
//! the engine off the async threads (the batcher thread, or `spawn_blocking`).

use super::batcher::Batcher;
use super::engine::{Engine, Resource};
use super::metrics::Metrics;
use super::request::{topics_as_records, TopicIn, TopicsRequest};
use super::schema::{FieldError, Schemas};
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub prefix: String,
    pub margin: f32,
    pub top_k: usize,
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    pub timeout: Duration,
}

/// The model and index are loaded in the background; until then Studio gets 503s.
pub enum Phase {
    Loading(String),
    Ready {
        engine: Arc<Engine>,
        batcher: Batcher,
    },
    Failed(String),
}

pub struct AppState {
    pub phase: RwLock<Phase>,
    pub schemas: Schemas,
    pub opts: ApiOptions,
    pub metrics: Arc<Metrics>,
}

pub(super) type Shared = Arc<AppState>;

/// An error answered as `{"error": ..., "field": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }
    pub(super) fn field(
        status: StatusCode,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub(super) fn internal(e: anyhow::Error) -> Self {
        tracing::error!("{e:#}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, e.field, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message});
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        (self.status, Json(body)).into_response()
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Shared) -> Router {
    let p = format!("/{}", state.opts.prefix.trim_matches('/'));
    // Studio's endpoints and the page's data, both behind --api-key.
    let studio = Router::new()
        .route(&format!("{p}/connect"), get(connect))
        .route(&format!("{p}/recommend"), post(recommend))
        .route(&format!("{p}/embed-topics"), post(embed_topics))
        .route(&format!("{p}/embed-content"), post(embed_content))
        .route(&format!("{p}/remove-content"), post(remove_content))
        .route(&format!("{p}/content/{{id}}"), delete(delete_content))
        .merge(super::page::api_routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_key,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(studio)
        .merge(super::page::assets())
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.opts.timeout,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.opts.max_body_bytes,
        ))
        .with_state(state)
}

/// Counts requests and their latency per route and status.
async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let t0 = Instant::now();
    let resp = json_errors(next.run(req).await).await;
    s.metrics
        .latency
        .with_label_values(&[&route])
        .observe(t0.elapsed().as_secs_f64());
    s.metrics
        .requests
        .with_label_values(&[&route, resp.status().as_str()])
        .inc();
    resp
}

/// Errors raised below our handlers (body too large, timeout, unknown route, wrong method)
/// come as plain text or empty: answer them as JSON too, so every error a client sees has the
/// same shape.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let message = match (status, text.trim()) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => "the body is larger than --max-body-mib".into(),
        (StatusCode::REQUEST_TIMEOUT, _) => "the request took longer than --timeout-s".into(),
        (_, "") => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
        (_, t) => t.to_string(),
    };
    ApiError::new(status, message).into_response()
}

/// With `--api-key`, Studio's routes and the page's `/api` need `Authorization: Bearer <key>`
/// (the page asks the curator for the key and keeps it for the browser tab).
async fn require_key(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.opts.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer <api key>)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

pub(super) fn ready(s: &AppState) -> ApiResult<(Arc<Engine>, Batcher)> {
    match &*s.phase.read().expect("phase lock") {
        Phase::Ready { engine, batcher } => Ok((engine.clone(), batcher.clone())),
        Phase::Loading(why) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}"),
        )),
        Phase::Failed(why) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed to start: {why}"),
        )),
    }
}

async fn health(State(s): State<Shared>) -> Json<Value> {
    let phase = match &*s.phase.read().expect("phase lock") {
        Phase::Loading(_) => "loading",
        Phase::Ready { .. } => "ready",
        Phase::Failed(_) => "failed",
    };
    Json(json!({"status": "ok", "phase": phase}))
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn connect(State(s): State<Shared>) -> ApiResult<Json<Value>> {
    ready(&s)?;
    Ok(Json(json!({"status": "OK"})))
}

/// Parses a JSON body; a syntax error names its line and column.
pub(super) fn parse_body(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "/",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Validates a topics body (schema, then languages) and returns the topics.
fn topics_body(s: &AppState, engine: &Engine, body: &Bytes) -> ApiResult<Vec<TopicIn>> {
    let v = parse_body(body)?;
    s.schemas.check_topics(&v)?;
    let req: TopicsRequest = serde_json::from_value(v)
        .map_err(|e| ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "/", e.to_string()))?;
    let index = engine.index.read().expect("index lock");
    for (i, t) in req.topics.iter().enumerate() {
        if !s.schemas.is_known_language(&t.language) && !index.has_language(&t.language) {
            return Err(ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("/topics/{i}/language"),
                format!(
                    "unknown language `{}` (not an le-utils language code, and no content has it)",
                    t.language
                ),
            ));
        }
    }
    Ok(req.topics)
}

/// `override_threshold` as Python `requests` sends a bool (`True`/`False`), or
/// `true`/`false`/`1`/`0`; optional `top_k` and `margin` override the server's settings.
#[derive(Debug)]
struct RecommendQuery {
    override_threshold: bool,
    top_k: Option<usize>,
    margin: Option<f32>,
}

fn parse_query(q: Option<&str>) -> ApiResult<RecommendQuery> {
    let mut out = RecommendQuery {
        override_threshold: false,
        top_k: None,
        margin: None,
    };
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                format!("?{k}"),
                format!("`{v}` is not {what}"),
            )
        };
        match k {
            "override_threshold" => {
                out.override_threshold = match v {
                    "True" | "true" | "1" => true,
                    "False" | "false" | "0" => false,
                    _ => return Err(bad("True, False, true, false, 1 or 0")),
                }
            }
            "top_k" => {
                out.top_k = Some(
                    v.parse()
                        .ok()
                        .filter(|k| (1..=1000).contains(k))
                        .ok_or_else(|| bad("a count from 1 to 1000"))?,
                )
            }
            "margin" => {
                out.margin = Some(
                    v.parse()
                        .ok()
                        .filter(|m: &f32| (0.0..=1.0).contains(m))
                        .ok_or_else(|| bad("a margin from 0 to 1"))?,
                )
            }
            _ => {} // other parameters are not ours to judge
        }
    }
    Ok(out)
}

/// One recommendation as Studio reads it (borrowed from the index while serialising).
#[derive(Serialize)]
struct Recommendation<'a> {
    id: &'a str,
    channel_id: &'a str,
    title: &'a str,
    description: &'a str,
    kind: &'a str,
    similarity: f32,
    /// The reranker's probability (only with `--reranker`; the order follows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    probability: Option<f32>,
    rank: usize,
}

#[derive(Serialize)]
struct TopicRecommendations<'a> {
    id: &'a str,
    recommendations: Vec<Recommendation<'a>>,
}

#[derive(Serialize)]
struct RecommendResponse<'a> {
    topics: Vec<TopicRecommendations<'a>>,
}

async fn recommend(
    State(s): State<Shared>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let (engine, batcher) = ready(&s)?;
    let q = parse_query(q.as_deref())?;
    let topics = topics_body(&s, &engine, &body)?;
    let top_k = q.top_k.unwrap_or(s.opts.top_k);
    let margin = q.margin.unwrap_or(s.opts.margin);
    tracing::debug!(
        topics = topics.len(),
        override_threshold = q.override_threshold,
        "recommend"
    );
    engine.remember_topics(&topics_as_records(&topics));
    let items = topics.iter().map(TopicIn::rank_item).collect();
    let settings = super::recommend::Settings {
        top_k,
        margin,
        rerank_margin: q.margin,
        override_threshold: q.override_threshold,
    };
    let ranked = super::recommend::rank_select(&engine, &batcher, items, settings)
        .await
        .map_err(ApiError::internal)?;
    let index = engine.index.read().expect("index lock");
    let out: Vec<TopicRecommendations> = topics
        .iter()
        .zip(&ranked)
        .map(|(t, r)| {
            let recommendations = r.order[..r.selected]
                .iter()
                .map(|&(i, p)| (&r.hits[i], p))
                // A content removed since ranking is left out.
                .filter_map(|(h, p)| index.get(&h.content).map(|m| (h, p, m)))
                .enumerate()
                .map(|(i, (h, p, m))| Recommendation {
                    id: &m.id,
                    channel_id: &m.channel_id,
                    title: &m.title,
                    description: &m.description,
                    kind: &m.kind,
                    similarity: h.similarity,
                    probability: p,
                    rank: i + 1,
                })
                .collect();
            TopicRecommendations {
                id: &t.id,
                recommendations,
            }
        })
        .collect();
    let body = serde_json::to_vec(&RecommendResponse { topics: out })
        .map_err(|e| ApiError::internal(e.into()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn embed_topics(State(s): State<Shared>, body: Bytes) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let topics = topics_body(&s, &engine, &body)?;
    let texts: Vec<String> = topics.iter().map(TopicIn::text).collect();
    let e = engine.clone();
    let vectors = tokio::task::spawn_blocking(move || e.embed(&texts))
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(ApiError::internal)?;
    let d = engine.embedder.dim();
    let out: Vec<Value> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": t.id, "embedding": &vectors[i * d..(i + 1) * d]}))
        .collect();
    Ok(Json(
        json!({"model": engine.embedder.id(), "dim": d, "topics": out}),
    ))
}

#[derive(Deserialize)]
struct ContentRequest {
    resources: Vec<ResourceIn>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
struct ResourceIn {
    id: String,
    channel_id: Option<String>,
    title: Option<String>,
    description: Option<String>,
    text: Option<String>,
    language: Option<String>,
    files: Option<Vec<Value>>,
}

/// A content kind from its files' le-utils presets (the requests carry no kind).
fn kind_from_files(files: &[Value]) -> String {
    let presets = files.iter().filter_map(|f| f["preset"].as_str());
    for p in presets {
        let kind = match p {
            "high_res_video" | "low_res_video" => "video",
            "audio" => "audio",
            "document" | "epub" => "document",
            "exercise" | "qti" => "exercise",
            "html5_zip" | "h5p" | "zim" | "imscp_zip" => "html5",
            "slideshow_manifest" | "slideshow_image" => "slideshow",
            "bloompub" => "bloompub",
            _ => continue,
        };
        return kind.to_string();
    }
    String::new()
}

async fn embed_content(State(s): State<Shared>, body: Bytes) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let v = parse_body(&body)?;
    s.schemas.check_content(&v)?;
    let req: ContentRequest = serde_json::from_value(v)
        .map_err(|e| ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "/", e.to_string()))?;
    let channel = req
        .metadata
        .as_ref()
        .and_then(|m| m["channel_id"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut resources = Vec::with_capacity(req.resources.len());
    {
        let index = engine.index.read().expect("index lock");
        for (i, r) in req.resources.into_iter().enumerate() {
            if let Some(l) = &r.language {
                if !s.schemas.is_known_language(l) && !index.has_language(l) {
                    return Err(ApiError::field(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("/resources/{i}/language"),
                        format!("unknown language `{l}` (not an le-utils language code)"),
                    ));
                }
            }
            resources.push(Resource {
                kind: kind_from_files(r.files.as_deref().unwrap_or_default()),
                channel_id: r.channel_id.unwrap_or_else(|| channel.clone()),
                id: r.id,
                title: r.title.unwrap_or_default(),
                description: r.description.unwrap_or_default(),
                text: r.text.unwrap_or_default(),
                language: r.language,
            });
        }
    }
    let e = engine.clone();
    let summary = tokio::task::spawn_blocking(move || e.upsert(resources))
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(ApiError::internal)?;
    Ok(Json(
        serde_json::to_value(summary).expect("summary serialises"),
    ))
}

#[derive(Deserialize)]
struct RemoveRequest {
    ids: Vec<String>,
}

/// `POST /{prefix}/remove-content` with `{"ids": [...]}`: stops recommending those contents
/// and deletes them from the store. Unknown ids are listed, not an error (the goal holds).
async fn remove_content(State(s): State<Shared>, body: Bytes) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let v = parse_body(&body)?;
    let req: RemoveRequest = serde_json::from_value(v).map_err(|e| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/ids",
            format!("expected {{\"ids\": [\"<content id>\", ...]}}: {e}"),
        )
    })?;
    let e = engine.clone();
    let n = req.ids.len();
    let unknown = tokio::task::spawn_blocking(move || e.remove(&req.ids))
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(ApiError::internal)?;
    tracing::info!(
        removed = n - unknown.len(),
        unknown = unknown.len(),
        "remove-content"
    );
    Ok(Json(
        json!({"removed": n - unknown.len(), "unknown": unknown}),
    ))
}

/// `DELETE /{prefix}/content/{id}`: one content; 404 when it is not stored.
async fn delete_content(State(s): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let e = engine.clone();
    let ids = vec![id.clone()];
    let unknown = tokio::task::spawn_blocking(move || e.remove(&ids))
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(ApiError::internal)?;
    if !unknown.is_empty() {
        return Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "id",
            format!("no content with id `{id}`"),
        ));
    }
    Ok(Json(json!({"removed": 1})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_flags_as_python_sends_them() {
        for (q, want) in [
            ("override_threshold=False", false),
            ("override_threshold=True", true),
            ("override_threshold=true", true),
            ("override_threshold=0", false),
            ("override_threshold=1&x=y", true),
        ] {
            assert_eq!(
                parse_query(Some(q)).unwrap().override_threshold,
                want,
                "{q}"
            );
        }
        assert!(!parse_query(None).unwrap().override_threshold);
        let e = parse_query(Some("override_threshold=yes")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("?override_threshold"));
        assert!(parse_query(Some("top_k=0")).is_err());
        assert_eq!(parse_query(Some("top_k=5")).unwrap().top_k, Some(5));
    }

    #[test]
    fn kinds_come_from_presets() {
        assert_eq!(
            kind_from_files(&[
                json!({"preset": "video_thumbnail"}),
                json!({"preset": "low_res_video"})
            ]),
            "video"
        );
        assert_eq!(kind_from_files(&[]), "");
    }
}

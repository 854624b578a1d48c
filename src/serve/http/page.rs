//! The curator page at `/` and the JSON endpoints it reads (`/api/...`): channels, a channel's
//! tree, a topic, its recommendations, free-text recommendations, and decisions. The page's
//! files are compiled into the binary.

use super::{parse_body, typed, Shared};
use crate::serve::cancel::Cancel;
use crate::serve::error::ServeError;
use crate::store::DecisionKind;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

const INDEX_HTML: &str = include_str!("../page/index.html");
const APP_JS: &str = include_str!("../page/app.js");
const APP_CSS: &str = include_str!("../page/app.css");

type Answer = Result<Json<Value>, ServeError>;

/// The page's files: public, they hold no data.
pub fn assets() -> Router<Shared> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/page/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/page/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

/// The page's JSON endpoints (behind `--api-key` with Studio's).
pub fn api_routes() -> Router<Shared> {
    Router::new()
        .route("/api/channels", get(channels))
        .route("/api/channels/{id}/tree", get(tree))
        .route("/api/topics/{id}", get(topic))
        .route(
            "/api/topics/{id}/recommendations",
            get(topic_recommendations),
        )
        .route("/api/recommend-text", axum::routing::post(recommend_text))
        .route("/api/feedback", get(feedback_of).post(feedback))
}

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn channels(State(s): State<Shared>) -> Answer {
    Ok(Json(s.engine()?.channels()?))
}

async fn tree(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    Ok(Json(s.engine()?.tree(&id)?))
}

async fn topic(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    Ok(Json(s.engine()?.topic_view(id).await?))
}

/// `top_k` and `margin`, read as Studio's query is read (400 naming the field when malformed).
#[derive(Deserialize)]
struct RecQuery {
    top_k: Option<String>,
    margin: Option<String>,
}

impl RecQuery {
    fn parse(&self) -> Result<(Option<usize>, Option<f32>), ServeError> {
        let top_k = match &self.top_k {
            Some(v) => Some(v.parse().map_err(|_| {
                ServeError::bad_request("?top_k", format!("`{v}` is not a count from 1 to 1000"))
            })?),
            None => None,
        };
        let margin = match &self.margin {
            Some(v) => Some(v.parse().map_err(|_| {
                ServeError::bad_request("?margin", format!("`{v}` is not a margin from 0 to 1"))
            })?),
            None => None,
        };
        Ok((top_k, margin))
    }
}

async fn topic_recommendations(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<RecQuery>,
) -> Answer {
    let engine = s.engine()?;
    let (top_k, margin) = q.parse()?;
    Ok(Json(engine.topic_recommendations(id, top_k, margin).await?))
}

#[derive(Deserialize)]
struct TextRequest {
    text: String,
    language: String,
    top_k: Option<usize>,
    margin: Option<f32>,
}

async fn recommend_text(State(s): State<Shared>, body: Bytes) -> Answer {
    let engine = s.engine()?;
    let req: TextRequest = typed(parse_body(&body)?)?;
    Ok(Json(
        engine
            .recommend_text(&req.text, req.language, req.top_k, req.margin)
            .await?,
    ))
}

#[derive(Deserialize)]
struct FeedbackRequest {
    topic_id: String,
    content_id: String,
    decision: String,
    margin: Option<f32>,
}

async fn feedback(
    State(s): State<Shared>,
    Extension(cancel): Extension<Cancel>,
    body: Bytes,
) -> Answer {
    let engine = s.engine()?;
    let req: FeedbackRequest = typed(parse_body(&body)?)?;
    let kind = DecisionKind::parse(&req.decision).ok_or_else(|| {
        ServeError::validation(
            "/decision",
            format!(
                "`{}` is not a decision: accept, reject or undo",
                req.decision
            ),
        )
    })?;
    let seq = engine
        .record_decision(
            req.topic_id.clone(),
            req.content_id.clone(),
            kind,
            req.margin,
            cancel,
        )
        .await?;
    Ok(Json(json!({
        "seq": seq, "topic_id": req.topic_id, "content_id": req.content_id,
        "decision": kind,
    })))
}

#[derive(Deserialize)]
struct FeedbackQuery {
    topic_id: String,
}

async fn feedback_of(State(s): State<Shared>, Query(q): Query<FeedbackQuery>) -> Answer {
    let d = s.engine()?.decisions(q.topic_id.clone()).await?;
    Ok(Json(json!({"topic_id": q.topic_id, "decisions": d})))
}

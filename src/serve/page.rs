//! The curator page at `/` and the JSON endpoints it reads (`/api/...`): channels, a channel's
//! tree, a topic, its recommendations, free-text recommendations, and decisions. The page's
//! files are compiled into the binary.

use super::api::{parse_body, ready, ApiError, ApiResult, Shared};
use super::recommend::{rank_select, OwnedQuery, RankItem, Settings};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

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

async fn channels(State(s): State<Shared>) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let cat = engine.catalog.read().expect("catalog lock");
    let index = engine.index.read().expect("index lock");
    // Languages the free-text box can use: those with recommendable contents.
    let languages: Vec<String> = index.sizes().into_iter().map(|(l, _)| l).collect();
    Ok(Json(
        json!({"channels": cat.channels(), "languages": languages}),
    ))
}

async fn tree(State(s): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let cat = engine.catalog.read().expect("catalog lock");
    let nodes = cat.tree(&id).ok_or_else(|| {
        ApiError::field(
            StatusCode::NOT_FOUND,
            "channel",
            format!("no channel `{id}`"),
        )
    })?;
    Ok(Json(json!({"channel": id, "topics": nodes})))
}

fn unknown_topic(id: &str) -> ApiError {
    ApiError::field(
        StatusCode::NOT_FOUND,
        "topic_id",
        format!("no topic `{id}` (topics come from --data and from recommend requests)"),
    )
}

/// A content as the page shows it (`None` when the index no longer has it).
fn content_json(engine: &super::engine::Engine, id: &str) -> Option<Value> {
    let index = engine.index.read().expect("index lock");
    index.get(id).map(|m| {
        json!({"id": m.id, "title": m.title, "kind": m.kind, "description": m.description,
               "language": m.language})
    })
}

async fn topic(State(s): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let (t, crumbs, links) = {
        let cat = engine.catalog.read().expect("catalog lock");
        let t = cat.get(&id).cloned().ok_or_else(|| unknown_topic(&id))?;
        let crumbs: Vec<Value> = cat
            .breadcrumb(&id)
            .iter()
            .map(|b| json!({"id": b.id, "title": b.title}))
            .collect();
        (t, crumbs, cat.links(&id).to_vec())
    };
    let linked: Vec<Value> = links
        .iter()
        .filter_map(|c| content_json(&engine, c))
        .collect();
    let decisions: serde_json::Map<String, Value> = engine
        .decisions(&id)
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|d| (d.content_id, Value::String(d.decision)))
        .collect();
    Ok(Json(json!({
        "id": t.id, "title": t.title, "description": t.description, "language": t.language,
        "channel": t.channel, "origin": t.origin, "breadcrumb": crumbs, "linked": linked,
        "decisions": decisions,
    })))
}

#[derive(Deserialize)]
struct RecQuery {
    top_k: Option<usize>,
    margin: Option<f32>,
}

fn check_settings(top_k: Option<usize>, margin: Option<f32>) -> ApiResult<()> {
    if top_k.is_some_and(|k| !(1..=1000).contains(&k)) {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "top_k",
            "top_k must be from 1 to 1000",
        ));
    }
    if margin.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "margin",
            "margin must be from 0 to 1",
        ));
    }
    Ok(())
}

/// Ranks one item and answers in the page's shape, leaving out `exclude` (already linked).
async fn recommendations_json(
    s: &Shared,
    item: RankItem,
    top_k: Option<usize>,
    margin: Option<f32>,
    exclude: &HashSet<String>,
    topic: Option<&str>,
) -> ApiResult<Value> {
    let (engine, batcher) = ready(s)?;
    check_settings(top_k, margin)?;
    let top_k = top_k.unwrap_or(30);
    let settings = Settings {
        top_k,
        margin: margin.unwrap_or(s.opts.margin),
        rerank_margin: margin,
        override_threshold: false,
    };
    let mut r = rank_select(&engine, &batcher, vec![item], settings)
        .await
        .map_err(ApiError::internal)?;
    let r = r.pop().expect("one item in, one out");
    let index = engine.index.read().expect("index lock");
    let mut out = Vec::new();
    let mut selected = 0;
    for (pos, &(i, p)) in r.order.iter().enumerate() {
        let h = &r.hits[i];
        if exclude.contains(&h.content) {
            continue;
        }
        let Some(m) = index.get(&h.content) else {
            continue;
        };
        if pos < r.selected {
            selected += 1;
        } else if out.len() >= top_k {
            break;
        }
        let mut v = json!({"id": m.id, "title": m.title, "kind": m.kind,
            "description": m.description, "language": m.language,
            "similarity": h.similarity, "rank": out.len() + 1});
        if let Some(p) = p {
            v["probability"] = json!(p);
        }
        out.push(v);
    }
    let (rule, shown_margin) = match &engine.reranker {
        Some(rr) => {
            let sel = rr.rr.meta.selection;
            let m = margin.unwrap_or(sel.margin);
            (
                format!(
                    "reranker: probability ≥ {} or ≥ {:.0}% of the best",
                    sel.threshold,
                    (1.0 - m) * 100.0
                ),
                m,
            )
        }
        None => {
            let m = margin.unwrap_or(s.opts.margin);
            (format!("similarity ≥ (1 − {m}) × the best"), m)
        }
    };
    Ok(json!({
        "topic": topic, "model": engine.embedder.id(), "rule": rule,
        // As typed (0.18), not as f32 widens it (0.18000000715).
        "margin": (shown_margin as f64 * 1e6).round() / 1e6,
        "selected": selected, "recommendations": out,
    }))
}

async fn topic_recommendations(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<RecQuery>,
) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let (item, linked) = {
        let cat = engine.catalog.read().expect("catalog lock");
        let t = cat.get(&id).ok_or_else(|| unknown_topic(&id))?;
        let parent = t.parent.as_deref().and_then(|p| cat.get(p));
        let item = RankItem {
            text: t.text.clone(),
            language: t.language.clone(),
            query: Some(OwnedQuery {
                id: t.id.clone(),
                title: t.title.clone(),
                description: t.description.clone(),
                channel: Some(t.channel.clone()),
                parent: t.parent.clone(),
                level: t.level,
            }),
            parent_text: parent.map(|p| p.text.clone()),
        };
        let linked: HashSet<String> = cat.links(&id).iter().cloned().collect();
        (item, linked)
    };
    recommendations_json(&s, item, q.top_k, q.margin, &linked, Some(&id))
        .await
        .map(Json)
}

#[derive(Deserialize)]
struct TextRequest {
    text: String,
    language: String,
    top_k: Option<usize>,
    margin: Option<f32>,
}

async fn recommend_text(State(s): State<Shared>, body: Bytes) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let req: TextRequest = serde_json::from_value(parse_body(&body)?)
        .map_err(|e| ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "/", e.to_string()))?;
    if req.text.trim().is_empty() {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/text",
            "write the topic's title or a sentence about it",
        ));
    }
    if !engine
        .index
        .read()
        .expect("index lock")
        .has_language(&req.language)
    {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/language",
            format!("no content in language `{}`", req.language),
        ));
    }
    let text = crate::text::breadcrumb_text(&[req.text.trim()], "");
    let item = RankItem {
        text,
        language: req.language,
        query: None,
        parent_text: None,
    };
    recommendations_json(&s, item, req.top_k, req.margin, &HashSet::new(), None)
        .await
        .map(Json)
}

#[derive(Deserialize)]
struct FeedbackRequest {
    topic_id: String,
    content_id: String,
    decision: String,
    margin: Option<f32>,
}

async fn feedback(State(s): State<Shared>, body: Bytes) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let req: FeedbackRequest = serde_json::from_value(parse_body(&body)?)
        .map_err(|e| ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "/", e.to_string()))?;
    if !super::feedback::DECISIONS.contains(&req.decision.as_str()) {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/decision",
            format!(
                "`{}` is not a decision: accept, reject or undo",
                req.decision
            ),
        ));
    }
    if engine
        .catalog
        .read()
        .expect("catalog lock")
        .get(&req.topic_id)
        .is_none()
    {
        return Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "/topic_id",
            format!("no topic `{}`", req.topic_id),
        ));
    }
    if engine
        .index
        .read()
        .expect("index lock")
        .get(&req.content_id)
        .is_none()
    {
        return Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "/content_id",
            format!("no content `{}`", req.content_id),
        ));
    }
    let eng = engine.clone();
    let seq = tokio::task::spawn_blocking(move || {
        eng.record_decision(&req.topic_id, &req.content_id, &req.decision, req.margin)
            .map(|seq| (seq, req))
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .map_err(ApiError::internal)?;
    let (seq, req) = seq;
    Ok(Json(json!({
        "seq": seq, "topic_id": req.topic_id, "content_id": req.content_id,
        "decision": req.decision,
    })))
}

#[derive(Deserialize)]
struct FeedbackQuery {
    topic_id: String,
}

async fn feedback_of(
    State(s): State<Shared>,
    Query(q): Query<FeedbackQuery>,
) -> ApiResult<Json<Value>> {
    let (engine, _) = ready(&s)?;
    let d = engine.decisions(&q.topic_id).map_err(ApiError::internal)?;
    Ok(Json(json!({"topic_id": q.topic_id, "decisions": d})))
}

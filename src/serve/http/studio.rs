//! Kolibri Studio's curriculum-automation routes (`/{prefix}/connect`, `recommend`,
//! `embed-topics`, `embed-content`, `remove-content`, `DELETE content/{id}`): bodies are
//! parsed and checked against le-utils' schemas here, the work is the engine's.

use super::{parse_body, typed, Shared};
use crate::serve::cancel::Cancel;
use crate::serve::engine::check_count;
use crate::serve::engine::recommend::RecommendQuery;
use crate::serve::engine::{Resource, TopicRecommendations};
use crate::serve::error::ServeError;
use crate::studio::request::TopicsRequest;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

type Answer = Result<Json<Value>, ServeError>;

pub fn routes(prefix: &str) -> Router<Shared> {
    let p = format!("/{}", prefix.trim_matches('/'));
    Router::new()
        .route(&format!("{p}/connect"), get(connect))
        .route(&format!("{p}/recommend"), post(recommend))
        .route(&format!("{p}/embed-topics"), post(embed_topics))
        .route(&format!("{p}/embed-content"), post(embed_content))
        .route(&format!("{p}/remove-content"), post(remove_content))
        .route(&format!("{p}/content/{{id}}"), delete(delete_content))
}

async fn connect(State(s): State<Shared>) -> Answer {
    s.engine()?;
    Ok(Json(json!({"status": "OK"})))
}

/// `override_threshold` as Python `requests` sends a bool (`True`/`False`), or
/// `true`/`false`/`1`/`0`; optional `top_k` and `margin` override the server's settings.
fn parse_query(q: Option<&str>) -> Result<RecommendQuery, ServeError> {
    let mut out = RecommendQuery::default();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad =
            |what: &str| ServeError::bad_request(format!("?{k}"), format!("`{v}` is not {what}"));
        match k {
            "override_threshold" => {
                out.override_threshold = match v {
                    "True" | "true" | "1" => true,
                    "False" | "false" | "0" => false,
                    _ => return Err(bad("True, False, true, false, 1 or 0")),
                }
            }
            "top_k" => out.top_k = Some(v.parse().map_err(|_| bad("a count from 1 to 1000"))?),
            "margin" => out.margin = Some(v.parse().map_err(|_| bad("a margin from 0 to 1"))?),
            _ => {} // other parameters are not ours to judge
        }
    }
    crate::serve::engine::recommend::check_overrides(out.top_k, out.margin)?;
    Ok(out)
}

/// A topics body, checked against le-utils' schema.
fn topics_body(s: &Shared, body: &Bytes) -> Result<TopicsRequest, ServeError> {
    let v = parse_body(body)?;
    // The count first: a schema check of 10,000 topics is work the limit refuses anyway.
    let n = v["topics"].as_array().map_or(0, Vec::len);
    check_count("/topics", n, s.opts.limits.max_topics, "--max-topics")?;
    s.schemas.check_topics(&v)?;
    typed(v)
}

#[derive(Serialize)]
struct RecommendResponse {
    topics: Vec<TopicRecommendations>,
}

async fn recommend(
    State(s): State<Shared>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Json<RecommendResponse>, ServeError> {
    let engine = s.engine()?;
    let q = parse_query(q.as_deref())?;
    let req = topics_body(&s, &body)?;
    tracing::debug!(topics = req.topics.len(), "recommend");
    let topics = engine.recommend(req.topics, q).await?;
    Ok(Json(RecommendResponse { topics }))
}

async fn embed_topics(State(s): State<Shared>, body: Bytes) -> Answer {
    let engine = s.engine()?;
    let req = topics_body(&s, &body)?;
    let vectors = engine.embed_topics(req.topics).await?;
    let out: Vec<Value> = vectors
        .into_iter()
        .map(|(id, v)| json!({"id": id, "embedding": v}))
        .collect();
    Ok(Json(
        json!({"model": engine.model_id(), "dim": engine.dim(), "topics": out}),
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

async fn embed_content(
    State(s): State<Shared>,
    Extension(cancel): Extension<Cancel>,
    body: Bytes,
) -> Answer {
    let engine = s.engine()?;
    let v = parse_body(&body)?;
    let n = v["resources"].as_array().map_or(0, Vec::len);
    check_count(
        "/resources",
        n,
        s.opts.limits.max_resources,
        "--max-resources",
    )?;
    s.schemas.check_content(&v)?;
    let req: ContentRequest = typed(v)?;
    let channel = req
        .metadata
        .as_ref()
        .and_then(|m| m["channel_id"].as_str())
        .unwrap_or_default()
        .to_string();
    let resources = req
        .resources
        .into_iter()
        .map(|r| Resource {
            kind: kind_from_files(r.files.as_deref().unwrap_or_default()),
            channel_id: r.channel_id.unwrap_or_else(|| channel.clone()),
            id: r.id,
            title: r.title.unwrap_or_default(),
            description: r.description.unwrap_or_default(),
            text: r.text.unwrap_or_default(),
            language: r.language,
        })
        .collect();
    let summary = engine.upsert(resources, cancel).await?;
    Ok(Json(json!(summary)))
}

#[derive(Deserialize)]
struct RemoveRequest {
    ids: Vec<String>,
}

/// `POST /{prefix}/remove-content` with `{"ids": [...]}`: stops recommending those contents
/// and deletes them from the store. Unknown ids are listed, not an error (the goal holds).
async fn remove_content(
    State(s): State<Shared>,
    Extension(cancel): Extension<Cancel>,
    body: Bytes,
) -> Answer {
    let engine = s.engine()?;
    let req: RemoveRequest = serde_json::from_value(parse_body(&body)?).map_err(|e| {
        ServeError::validation(
            "/ids",
            format!("expected {{\"ids\": [\"<content id>\", ...]}}: {e}"),
        )
    })?;
    let r = engine.remove(req.ids, cancel).await?;
    tracing::info!(
        removed = r.removed,
        unknown = r.unknown.len(),
        "remove-content"
    );
    Ok(Json(json!(r)))
}

/// `DELETE /{prefix}/content/{id}`: one content; 404 when it is not stored.
async fn delete_content(
    State(s): State<Shared>,
    Extension(cancel): Extension<Cancel>,
    Path(id): Path<String>,
) -> Answer {
    let engine = s.engine()?;
    let r = engine.remove(vec![id.clone()], cancel).await?;
    if r.removed == 0 {
        return Err(ServeError::not_found(
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
        assert_eq!(e.field(), Some("?override_threshold"));
        assert_eq!(
            parse_query(Some("top_k=0")).unwrap_err().field(),
            Some("?top_k")
        );
        assert_eq!(
            parse_query(Some("margin=2")).unwrap_err().field(),
            Some("?margin")
        );
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

//! The one place where a [`ServeError`] becomes an HTTP status and the JSON error body
//! `{"error": ..., "field": ...}` (plus `Retry-After` when it is worth retrying), for Studio's
//! routes and the page's alike; and the same shape for errors raised below the handlers.

use crate::serve::error::ServeError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

impl ServeError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ServeError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ServeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::NotFound { .. } => StatusCode::NOT_FOUND,
            ServeError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServeError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServeError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServeError::Overloaded { .. }
            | ServeError::StoreUnavailable(_)
            | ServeError::NotReady(_)
            | ServeError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds a client should wait before trying again, when trying again may help.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ServeError::Overloaded { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            ServeError::NotReady(_) | ServeError::StoreUnavailable(_) => Some(5),
            _ => None,
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        if let ServeError::Internal(e) = &self {
            // The chain (paths, SQL errors) goes to the log only.
            tracing::error!("internal error: {e:#}");
        }
        let mut body = json!({"error": self.to_string()});
        if let Some(f) = self.field() {
            body["field"] = json!(f);
        }
        let retry = self.retry_after();
        let mut resp = (self.status(), Json(body)).into_response();
        if let Some(s) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Errors raised below our handlers (body too large, unknown route, wrong method, a body that
/// is not UTF-8) come as plain text or empty: answer them in the JSON shape too.
pub async fn json_errors(resp: Response) -> Response {
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
        (_, "") => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
        (_, t) => t.to_string(),
    };
    let mut resp = (status, Json(json!({"error": message}))).into_response();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

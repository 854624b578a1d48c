//! What can go wrong when the service is asked for something, as one typed error. The engine
//! and the HTTP layer return it; `http::error` turns it into a status and the JSON error body,
//! in one place, for Studio's routes and the page's alike.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The body or query could not be read (not JSON, a malformed query value): 400.
    #[error("{message}")]
    BadRequest { field: String, message: String },
    /// Read, but not acceptable (schema, unknown language, a value out of range): 422.
    #[error("{message}")]
    Validation { field: String, message: String },
    /// More than a limit allows (topics per request, resources, ancestors): 413.
    #[error("{message}")]
    TooLarge { field: String, message: String },
    /// An id the service does not know: 404.
    #[error("{message}")]
    NotFound { field: String, message: String },
    /// Missing or wrong bearer token: 401.
    #[error("missing or wrong bearer token (Authorization: Bearer <api key>)")]
    Unauthorized,
    /// A write from another site, or a request for a Host name this server does not serve: 403.
    #[error("{0}")]
    Forbidden(String),
    /// A write whose body is not declared `application/json`: 415.
    #[error("send the body as Content-Type: application/json")]
    UnsupportedMediaType,
    /// Too much work waiting: 503 with `Retry-After`.
    #[error("overloaded: {what}; retry in {} s", retry_after.as_secs().max(1))]
    Overloaded { what: String, retry_after: Duration },
    /// The store cannot be reached (a PostgreSQL server down): 503 with `Retry-After`; reads
    /// go on from memory, and the store reconnects by itself.
    #[error("the store is unavailable ({0}); nothing was changed, retry later")]
    StoreUnavailable(String),
    /// Still loading the model and the index: 503.
    #[error("not ready: {0}")]
    NotReady(String),
    /// Broken beyond this request (a panicked model worker, a poisoned lock): 503, and
    /// `/health` says `failed` with the reason.
    #[error("unavailable: {0}")]
    Failed(String),
    /// The request ran past `--timeout-s`; nothing it would have written was written: 408.
    #[error("the request took longer than --timeout-s; nothing was changed")]
    TimedOut,
    /// A bug or an I/O failure: 500. The chain goes to the log, not to the client.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type ServeResult<T> = Result<T, ServeError>;

impl ServeError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServeError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServeError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn too_large(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServeError::TooLarge {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServeError::NotFound {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ServeError::Internal(e.into())
    }
    /// The JSON field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ServeError::BadRequest { field, .. }
            | ServeError::Validation { field, .. }
            | ServeError::TooLarge { field, .. }
            | ServeError::NotFound { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<super::schema::FieldError> for ServeError {
    fn from(e: super::schema::FieldError) -> Self {
        ServeError::validation(e.field, e.message)
    }
}

impl From<crate::store::StoreError> for ServeError {
    fn from(e: crate::store::StoreError) -> Self {
        ServeError::Internal(e.into())
    }
}

impl From<tokio::task::JoinError> for ServeError {
    fn from(e: tokio::task::JoinError) -> Self {
        ServeError::Internal(anyhow::anyhow!("a blocking task failed: {e}"))
    }
}

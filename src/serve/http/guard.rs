//! What every request passes before a handler sees it (outermost first): metrics, security
//! headers, the in-flight limit, the deadline, the allowed Host names, and for writes the
//! Content-Type and Origin checks; the bearer key guards the API routes.

use super::Shared;
use crate::serve::cancel::Cancel;
use crate::serve::error::ServeError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};

/// Counts requests and their latency per route and status (errors from every layer below
/// included, in the JSON shape).
pub async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let t0 = Instant::now();
    let resp = super::error::json_errors(next.run(req).await).await;
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

/// `nosniff` on every answer; the page (and everything else) may not be framed, and loads
/// nothing but its own files.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; \
             object-src 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// At most `--max-inflight` requests at once: the next one is refused at once (503).
pub async fn admit(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let Ok(_permit) = s.inflight.clone().try_acquire_owned() else {
        return ServeError::Overloaded {
            what: format!(
                "{} requests are being handled (--max-inflight)",
                s.opts.limits.max_inflight
            ),
            retry_after: Duration::from_secs(1),
        }
        .into_response();
    };
    next.run(req).await
}

/// `--timeout-s`: a request still running then is cancelled and answered 408, unless its write
/// has begun to commit (then it finishes, and its answer is the real one). Handlers that write
/// take the [`Cancel`] token from the request's extensions.
pub async fn deadline(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let cancel = Cancel::default();
    req.extensions_mut().insert(cancel.clone());
    let work = next.run(req);
    tokio::pin!(work);
    tokio::select! {
        resp = &mut work => resp,
        _ = tokio::time::sleep(s.opts.limits.timeout) => {
            if cancel.cancel() {
                ServeError::TimedOut.into_response()
            } else {
                work.await
            }
        }
    }
}

/// The Host names a listener answers (DNS rebinding: a foreign page whose name resolves to
/// this machine sends its own name as Host).
#[derive(Debug, Clone)]
pub enum AllowedHosts {
    Any,
    Names(Vec<String>),
}

impl AllowedHosts {
    /// `--allow-host` names (`*`: any), else the bound address and the loopback names.
    pub fn new(given: &[String], bound: std::net::SocketAddr) -> AllowedHosts {
        if given.iter().any(|h| h == "*") {
            return AllowedHosts::Any;
        }
        let mut names: Vec<String> = given.iter().map(|h| host_name(h).to_string()).collect();
        if given.is_empty() {
            names.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
            let ip = bound.ip();
            if !ip.is_unspecified() {
                names.push(match ip {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                });
            }
        }
        names.iter_mut().for_each(|n| n.make_ascii_lowercase());
        names.sort();
        names.dedup();
        AllowedHosts::Names(names)
    }

    pub fn allows(&self, host: &str) -> bool {
        match self {
            AllowedHosts::Any => true,
            AllowedHosts::Names(n) => n.iter().any(|x| x.eq_ignore_ascii_case(host_name(host))),
        }
    }
}

impl std::fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowedHosts::Any => f.write_str("any"),
            AllowedHosts::Names(n) => f.write_str(&n.join(", ")),
        }
    }
}

/// The name part of a Host value or an origin's authority (`[::1]:8000` → `[::1]`).
fn host_name(h: &str) -> &str {
    let h = h.trim();
    if h.starts_with('[') {
        return h.find(']').map_or(h, |e| &h[..=e]);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => h,
    }
}

fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// Requests naming a Host this listener does not serve are refused (403); `/health` and
/// `/metrics` answer any Host (probes use the pod's address).
pub async fn check_host(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || path == "/metrics" {
        return next.run(req).await;
    }
    let host = request_host(&req).unwrap_or_default();
    if !s.hosts.allows(&host) {
        return ServeError::Forbidden(format!(
            "Host `{}` is not served here (allowed: {}); start lecr serve with --allow-host \
             NAME to serve it",
            host_name(&host),
            s.hosts
        ))
        .into_response();
    }
    next.run(req).await
}

/// Writes need a JSON body (a cross-site form or `text/plain` fetch cannot send one without a
/// preflight, which this server never approves) and, from a browser, the page's own origin.
pub async fn check_write(req: Request, next: Next) -> Response {
    if let Err(e) = write_allowed(req.method(), req.headers(), request_host(&req)) {
        return e.into_response();
    }
    next.run(req).await
}

fn write_allowed(method: &Method, h: &HeaderMap, host: Option<String>) -> Result<(), ServeError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if h.get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(ServeError::Forbidden(
            "a write from another site is refused".into(),
        ));
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let same = match (authority, &host) {
            (Some(a), Some(host)) => a.eq_ignore_ascii_case(host),
            _ => false,
        };
        if !same {
            return Err(ServeError::Forbidden(format!(
                "a write from another origin (`{origin}`) is refused"
            )));
        }
    }
    if *method != Method::DELETE {
        let json = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ServeError::UnsupportedMediaType);
        }
    }
    Ok(())
}

/// The API key as its SHA-256 digest: compared in constant time, its length never compared.
#[derive(Clone)]
pub struct ApiKey([u8; 32]);

impl ApiKey {
    /// An empty key is an error, not "no key".
    pub fn new(key: &str) -> anyhow::Result<ApiKey> {
        anyhow::ensure!(
            !key.is_empty(),
            "the API key (--api-key or LECR_API_KEY) is empty; give a key, or unset it to run \
             without one"
        );
        Ok(ApiKey(digest(key.as_bytes())))
    }

    pub fn matches(&self, given: &str) -> bool {
        constant_time_eq::constant_time_eq_32(&self.0, &digest(given.as_bytes()))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)") // never logged
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// With `--api-key`, Studio's routes and the page's `/api` need `Authorization: Bearer <key>`.
pub async fn require_key(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| key.matches(g)) {
            return ServeError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_the_default_list() {
        assert_eq!(host_name("[::1]:8000"), "[::1]");
        assert_eq!(host_name("Example.org:80"), "Example.org");
        assert_eq!(host_name("localhost"), "localhost");
        let a = AllowedHosts::new(&[], "127.0.0.1:8000".parse().unwrap());
        assert!(a.allows("localhost:8000") && a.allows("127.0.0.1") && a.allows("[::1]:9"));
        assert!(!a.allows("evil.example:8000") && !a.allows(""));
        let any = AllowedHosts::new(&[], "0.0.0.0:8000".parse().unwrap());
        assert!(
            !any.allows("0.0.0.0:8000"),
            "an unspecified address is not a Host name"
        );
        let named = AllowedHosts::new(&["lecr.internal".into()], "0.0.0.0:1".parse().unwrap());
        assert!(named.allows("LECR.internal:8000") && !named.allows("localhost"));
        assert!(AllowedHosts::new(&["*".into()], "0.0.0.0:1".parse().unwrap()).allows("x"));
    }

    #[test]
    fn writes_need_json_and_the_same_origin() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m
        };
        let host = Some("127.0.0.1:8000".to_string());
        let json = ("content-type", "application/json; charset=utf-8");
        assert!(write_allowed(&Method::POST, &h(&[json]), host.clone()).is_ok());
        assert!(matches!(
            write_allowed(
                &Method::POST,
                &h(&[("content-type", "text/plain")]),
                host.clone()
            ),
            Err(ServeError::UnsupportedMediaType)
        ));
        let same = ("origin", "http://127.0.0.1:8000");
        assert!(write_allowed(&Method::POST, &h(&[json, same]), host.clone()).is_ok());
        for evil in ["http://evil.example", "null", "http://127.0.0.1:9999"] {
            let r = write_allowed(&Method::POST, &h(&[json, ("origin", evil)]), host.clone());
            assert!(matches!(r, Err(ServeError::Forbidden(_))), "{evil}");
        }
        let cross = ("sec-fetch-site", "cross-site");
        assert!(write_allowed(&Method::DELETE, &h(&[cross]), host.clone()).is_err());
        assert!(write_allowed(&Method::DELETE, &h(&[]), host.clone()).is_ok());
        assert!(write_allowed(&Method::GET, &h(&[cross]), host).is_ok());
    }

    #[test]
    fn the_key_matches_only_itself_and_is_never_empty() {
        let k = ApiKey::new("sekrit").unwrap();
        assert!(k.matches("sekrit"));
        assert!(!k.matches("sekri") && !k.matches("sekrit ") && !k.matches(""));
        assert!(ApiKey::new("").is_err());
        assert_eq!(format!("{k:?}"), "ApiKey(..)");
    }
}

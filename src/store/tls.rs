//! Connections to PostgreSQL, in TLS when the URL asks for it (`sslmode=require`): the server's
//! certificate is verified against the Mozilla roots (`webpki-roots`) and the PEM certificates
//! of `LECR_STORE_CA` (a private CA, or a self-signed server certificate), host name included.
//! Without `sslmode=require` the connection is plain (PostgreSQL's `prefer` would try TLS
//! first; lecr does not, so a server with an unverifiable certificate still connects as
//! before).

use super::{Result, StoreError};
use std::sync::Arc;

/// The environment variable naming extra trusted certificates (PEM).
pub const CA_ENV: &str = "LECR_STORE_CA";

/// Connects to `url`; `place` names it in errors (no password).
pub(crate) fn connect(url: &str, place: &str) -> Result<postgres::Client> {
    let config: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Unavailable(format!("{place}: bad connection URL: {e}")))?;
    let cannot = |e: postgres::Error| {
        // postgres::Error's own message leaves out the cause (e.g. why a TLS handshake failed).
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !msg.contains(&text) {
                msg = format!("{msg}: {text}");
            }
            source = s.source();
        }
        StoreError::Unavailable(format!("{place}: cannot connect: {msg}"))
    };
    if matches!(config.get_ssl_mode(), postgres::config::SslMode::Require) {
        config.connect(connector(place)?).map_err(cannot)
    } else {
        config.connect(postgres::NoTls).map_err(cannot)
    }
}

fn connector(place: &str) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os(CA_ENV) {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let shown = std::path::Path::new(&path).display().to_string();
        let bad = |e: String| StoreError::Unavailable(format!("{place}: {CA_ENV}={shown}: {e}"));
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("{place}: TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

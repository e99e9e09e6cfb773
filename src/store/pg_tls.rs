//! TLS to PostgreSQL (rustls), asked for in the URL with libpq's own
//! parameters, so a URL that works with `psql` works here:
//!
//! - `sslmode=require`, `verify-ca` or `verify-full`: the session is
//!   encrypted and the server's certificate is checked against
//!   `sslrootcert=FILE` (PEM) when given, else the public web roots
//!   (webpki-roots), and must name the host of the URL. This is stricter
//!   than libpq's `require`, which encrypts without checking: a connection
//!   that could be intercepted is not one a support desk's data should use.
//! - no `sslmode`, `disable`, `allow` or `prefer`: no TLS (for a database on
//!   loopback or a private network).
//!
//! The two parameters are taken out of the URL before tokio-postgres reads
//! it (it knows neither `sslrootcert` nor the `verify-*` modes).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// Where and how to connect: the URL as tokio-postgres takes it, and the
/// TLS settings when TLS was asked for.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// Reads `sslmode` and `sslrootcert` out of `url` (see the module docs).
    pub fn parse(url: &str) -> Result<Target, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut mode, mut root, mut rest) = (None, None, Vec::new());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.to_string()),
                Some(("sslrootcert", v)) => root = Some(v.to_string()),
                _ => rest.push(pair),
            }
        }
        let tls = match mode.as_deref() {
            None | Some("disable" | "allow" | "prefer") => None,
            Some("require" | "verify-ca" | "verify-full") => {
                Some(Arc::new(client_config(root.as_deref())?))
            }
            Some(other) => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        };
        rest.push(if tls.is_some() {
            "sslmode=require"
        } else {
            "sslmode=disable"
        });
        Ok(Target {
            url: format!("{base}?{}", rest.join("&")),
            tls,
        })
    }
}

/// Certificates checked against `root` (a PEM file) or the web roots.
fn client_config(root: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let path = percent_decode(path);
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("sslrootcert {path} holds no certificate"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `%2F` and the like in a path given in a URL.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// tokio-postgres' TLS hook, on rustls.
#[derive(Clone)]
pub struct Rustls(pub Arc<rustls::ClientConfig>);

/// The connector for one host.
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    host: ServerName<'static>,
}

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let host = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            host,
        })
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let tls = connector.connect(self.host, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// An encrypted session's stream.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_read_and_taken_out() {
        let t = Target::parse("postgres://u@h:5432/db").expect("plain");
        assert!(t.tls.is_none());
        assert_eq!(t.url, "postgres://u@h:5432/db?sslmode=disable");
        let t =
            Target::parse("postgres://u@h/db?application_name=x&sslmode=prefer").expect("prefer");
        assert!(t.tls.is_none());
        assert_eq!(
            t.url,
            "postgres://u@h/db?application_name=x&sslmode=disable"
        );
        let t = Target::parse("postgres://u@h/db?sslmode=verify-full").expect("tls");
        assert!(t.tls.is_some());
        assert_eq!(t.url, "postgres://u@h/db?sslmode=require");
        let err = Target::parse("postgres://u@h/db?sslmode=sometimes")
            .err()
            .expect("refused");
        assert!(err.contains("sslmode=sometimes"), "{err}");
        let err =
            Target::parse("postgres://u@h/db?sslmode=require&sslrootcert=%2Fnowhere%2Fca.pem")
                .err()
                .expect("refused");
        assert!(err.contains("sslrootcert /nowhere/ca.pem"), "{err}");
    }
}

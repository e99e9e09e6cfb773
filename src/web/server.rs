//! The HTTP server loop, ours rather than `axum::serve`, because the service
//! must bound what each connection may cost: a complete request head within
//! `--header-timeout-secs` (hyper's header timer also runs while a keep-alive
//! connection sits idle, so it closes silent and trickling connections
//! alike), at most `--max-connections` open at once (past it a connection
//! gets a short 503 and is closed, before it can use up the process's file
//! descriptors), and a graceful shutdown: stop accepting, let requests in
//! flight finish (live streams end themselves on the shutdown signal), then
//! return. Rejections are logged (at most every 10 s) and counted in
//! `/metrics` as `http_connections_rejected_total{reason}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::guard::LogEvery;
use crate::shutdown::Shutdown;

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// How long a shutdown waits for open connections.
    pub drain: Duration,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

fn rejected(reason: &'static str, log: &LogEvery) {
    metrics::counter!("http_connections_rejected_total", "reason" => reason).increment(1);
    if let Some(n) = log.due(LOG_EVERY) {
        tracing::warn!(reason, connections = n, "connections rejected");
    }
}

/// A short answer for a connection over the cap, written without waiting long.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":{"code":"too_many_connections","message":"the server has too many open connections; try again shortly"}}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: application/json\r\n\
         Cache-Control: no-store\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves `router` on `listener` until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let over_cap = Arc::new(LogEvery::new());
    let timeouts = Arc::new(LogEvery::new());
    let accept_errors = LogEvery::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, typically: back off, never spin.
                    metrics::counter!("http_connections_rejected_total", "reason" => "accept_error").increment(1);
                    if let Some(n) = accept_errors.due(LOG_EVERY) {
                        tracing::error!(error = %e, errors = n, "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            rejected("max_connections", &over_cap);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = router
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        let timeouts = timeouts.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await
                && e.is_timeout()
            {
                rejected("header_timeout", &timeouts);
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

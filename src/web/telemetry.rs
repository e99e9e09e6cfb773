//! Operations: Prometheus metrics (`GET /metrics`) and request ids.
//!
//! Counters and histograms go through the `metrics` facade into one
//! process-wide Prometheus recorder; model queue figures are read from the
//! queues when `/metrics` is scraped.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::request_id::{MakeRequestId, RequestId};

use super::SharedState;

const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide recorder (installed once; every app in a test process shares it).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Counts and times every request by route pattern (never by raw path, which
/// may hold a tracking token).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics` (admin: bearer token or session): Prometheus text format.
pub async fn metrics_page(_: super::auth::AdminApi, State(state): State<SharedState>) -> Response {
    let Some(h) = handle() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response();
    };
    let mut queues = Vec::new();
    if let Some(n) = &state.nli {
        queues.push(n.queue());
    }
    if let Some(g) = &state.generator {
        let s = g.snapshot();
        metrics::gauge!("generator_decode_tokens_per_second", "model" => s.model.clone())
            .set(s.decode_tokens_per_sec);
        metrics::gauge!("generator_prefill_tokens_per_second", "model" => s.model.clone())
            .set(s.prefill_tokens_per_sec);
        metrics::gauge!("generator_time_to_first_token_seconds_avg", "model" => s.model.clone())
            .set(s.avg_ttft_ms / 1e3);
        metrics::gauge!("generator_active_sequences", "model" => s.model.clone())
            .set(s.active_sequences as f64);
        metrics::gauge!("generator_max_sequences", "model" => s.model.clone())
            .set(s.max_sequences as f64);
        metrics::gauge!("generator_kv_cache_bytes", "model" => s.model.clone())
            .set(s.kv_cache_bytes as f64);
        metrics::gauge!("generator_batch_sequences_last", "model" => s.model.clone())
            .set(s.last_batch_sequences as f64);
        queues.push(s.queue);
    }
    for q in queues {
        let name = q.name;
        metrics::gauge!("model_queue_depth", "queue" => name).set(q.depth as f64);
        metrics::gauge!("model_queue_capacity", "queue" => name).set(q.capacity as f64);
        metrics::gauge!("model_queue_jobs", "queue" => name).set(q.jobs as f64);
        metrics::gauge!("model_queue_batches", "queue" => name).set(q.batches as f64);
        metrics::gauge!("model_queue_batch_items_avg", "queue" => name).set(q.avg_batch_items);
        metrics::gauge!("model_queue_batch_items_max", "queue" => name)
            .set(q.max_batch_items as f64);
        metrics::gauge!("model_queue_latency_seconds_avg", "queue" => name)
            .set(q.avg_latency_ms / 1e3);
        metrics::gauge!("model_queue_errors", "queue" => name).set(q.errors as f64);
    }
    if let Ok(backlog) = state.db(|s| s.backlog()).await {
        metrics::gauge!("tickets_backlog").set(backlog as f64);
    }
    let (trackers, _) = state.worker.ticket_subscribers();
    metrics::gauge!("sse_subscribers")
        .set((state.worker.updates.receiver_count() + trackers) as f64);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        h.render(),
    )
        .into_response()
}

/// Request ids: a per-process random prefix and a counter (`x-request-id`).
#[derive(Clone)]
pub struct RequestIds {
    prefix: String,
    next: std::sync::Arc<AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        use rand::RngExt;
        let n: u32 = rand::rng().random();
        RequestIds {
            prefix: format!("{n:08x}"),
            next: std::sync::Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// Puts the request id into JSON error bodies too, so a user can quote it.
pub async fn id_in_errors(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let Some(id) = id.filter(|_| resp.status().as_u16() >= 400 && is_json) else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "error body too large").into_response();
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("request_id".into(), serde_json::Value::String(id));
            parts.headers.remove(header::CONTENT_LENGTH);
            Body::from(serde_json::Value::Object(m).to_string())
        }
        _ => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// Longest client-chosen request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's `x-request-id` may be echoed and logged: short, and
/// only letters, digits, `-`, `_`, `.` and `:` (nothing that could forge a
/// log line or break out of a quoted field).
pub fn request_id_is_safe(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Removes an unsafe `x-request-id` so a fresh one is made for the request.
pub async fn drop_unsafe_request_id(mut req: Request, next: Next) -> Response {
    let unsafe_id = req
        .headers()
        .get_all("x-request-id")
        .iter()
        .enumerate()
        .any(|(i, v)| i > 0 || !request_id_is_safe(v.as_bytes()));
    if unsafe_id {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

//! `/health`: for everyone, `ok` / `degraded` / `error` and what is degraded,
//! in words (no paths, no error texts, no engine names); for staff (bearer
//! token or session) the full detail: engines, notes, queues, database.
//!
//! "The database works" means it can be *written*: a small committed write,
//! at most every few seconds (a public endpoint must not be a write
//! amplifier), together with the outcome of the last real write and the
//! integrity check made at start.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SharedState;
use super::auth;
use crate::guard::ClientIp;

const PROBE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct DbHealth {
    pub writable: bool,
    pub error: Option<String>,
    pub integrity: Option<String>,
    pub schema_version: Option<usize>,
    pub backlog: Option<i64>,
    /// Published knowledge-base articles.
    pub kb_articles: Option<i64>,
    /// The nodes on this database that said they were alive lately.
    pub nodes: Vec<crate::store::cluster::Node>,
}

impl DbHealth {
    /// Live nodes that process tickets.
    fn live_workers(&self) -> usize {
        self.nodes.iter().filter(|n| n.role != "web").count()
    }
}

pub struct HealthCache {
    integrity: Option<String>,
    last: Mutex<Option<(Instant, DbHealth)>>,
}

impl HealthCache {
    pub fn new(integrity: Option<String>) -> Self {
        HealthCache {
            integrity,
            last: Mutex::new(None),
        }
    }
}

async fn db_health(state: &SharedState) -> DbHealth {
    let cached = state
        .health
        .last
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .filter(|(at, _)| at.elapsed() < PROBE_EVERY);
    if let Some((_, h)) = cached {
        return h;
    }
    let probe = state
        .db(|s| {
            s.write_probe()?;
            let nodes = s.nodes_seen(crate::cluster::HEARTBEAT * 3)?;
            Ok((s.schema_version()?, s.backlog()?, s.kb_published()?, nodes))
        })
        .await;
    let failing = state.store.write_health().failing;
    let (writable, error, schema_version, backlog, kb_articles, nodes) = match probe {
        Ok((v, b, k, n)) => (failing.is_none(), failing, Some(v), Some(b), Some(k), n),
        Err(e) => (false, Some(e.message), None, None, None, Vec::new()),
    };
    let h = DbHealth {
        writable,
        error,
        integrity: state.health.integrity.clone(),
        schema_version,
        backlog,
        kb_articles,
        nodes,
    };
    if let Ok(mut g) = state.health.last.lock() {
        *g = Some((Instant::now(), h.clone()));
    }
    h
}

/// What is degraded, in words a customer may read.
fn degraded_words(state: &SharedState, db: &DbHealth) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !db.writable {
        out.push("the database cannot be written: new tickets and changes are refused");
    }
    if db.integrity.is_some() {
        out.push("the database failed its integrity check at start");
    }
    if state.node.role == crate::cluster::Role::Web && db.writable && db.live_workers() == 0 {
        out.push("no worker node is running: new tickets wait to be processed");
    }
    if state.engines.classifier == "rules" {
        out.push("tickets are classified by keyword rules (no classification model)");
    }
    if state.engines.classifier == crate::agents::classifier::LEARNED_ENGINE {
        out.push(
            "tickets are classified by keyword rules and a small learned classifier (no zero-shot model)",
        );
    }
    if db.kb_articles == Some(0) {
        out.push("no published knowledge-base articles: answers come from standard playbooks and are drafts");
    }
    if state.engines.troubleshooter == "rules" {
        out.push(
            "suggested solutions are knowledge-base articles and standard playbooks (no text-generation model)",
        );
    }
    out
}

/// Each configured endpoint's deliveries and whether it is disabled.
async fn webhooks(state: &SharedState) -> serde_json::Value {
    match super::webhooks::endpoint_states(state).await {
        Ok(list) => json!(
            list.into_iter()
                .map(|(url, st)| json!({"url": url, "state": st}))
                .collect::<Vec<_>>()
        ),
        Err(e) => json!({"error": e.message}),
    }
}

pub async fn health(
    State(state): State<SharedState>,
    client: ClientIp,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, super::error::ApiError> {
    // Credentials, when given, must be right (and wrong ones are throttled).
    let staff = if auth::has_credentials(&headers) {
        auth::check_admin(&state, &headers, &method, client).await?;
        true
    } else {
        false
    };
    let db = db_health(&state).await;
    let words = degraded_words(&state, &db);
    let status = if !db.writable {
        "error"
    } else if !words.is_empty() {
        "degraded"
    } else {
        "ok"
    };
    let mut body = json!({
        "status": status,
        "degraded": words,
        "role": state.node.role.as_str(),
        "db": {"backend": state.store.backend().as_str()},
    });
    if staff {
        let e = &state.engines;
        body["banner"] = json!(e.banner());
        body["db"] = json!({
            "backend": state.store.backend().as_str(),
            "location": state.store.path(),
            "ok": db.writable,
            "writable": db.writable,
            "error": db.error,
            "integrity": db.integrity.as_deref().unwrap_or("ok"),
            "schema_version": db.schema_version,
        });
        body["engines"] = json!(e);
        body["worker"] = json!({
            "backlog": db.backlog,
            "concurrency": state.config.workers,
            "live_workers": db.live_workers(),
        });
        body["node"] = json!({"name": &*state.node.name, "started_at": state.node.started_at});
        body["nodes"] = json!(db.nodes);
        body["queues"] = json!(
            state
                .nli
                .iter()
                .map(|n| n.queue())
                .chain(state.generator.iter().map(|g| g.snapshot().queue))
                .collect::<Vec<_>>()
        );
        body["generator"] = json!(state.generator.as_ref().map(|g| g.snapshot()));
        body["streams"] = json!(state.streams.snapshot());
        body["knowledge_base"] = json!({"published_articles": db.kb_articles});
        body["delivery_policy"] = json!(*state.policy.read().unwrap_or_else(|p| p.into_inner()));
        body["webhooks"] = webhooks(&state).await;
        body["mail"] = if state.mail {
            match state.db(|s| s.mail_counts()).await {
                Ok(c) => json!(c),
                Err(e) => json!({"error": e.message}),
            }
        } else {
            json!(null)
        };
        body["config_file"] = json!({ "path": state.config.config_file });
    }
    let code = if db.writable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((code, axum::Json(body)).into_response())
}

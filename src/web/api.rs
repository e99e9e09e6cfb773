//! The JSON API: intake, the customer's token-scoped endpoints, the admin
//! endpoints and `/health`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::auth::AdminApi;
use super::error::ApiError;
use super::view::{status_json, ticket_json, tracking_url};
use super::{ApiJson, SharedState};
use crate::config::ServeConfig;
use crate::store::{ListQuery, Sort};
use crate::ticket::{EventKind, TicketInput};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    pub subject: String,
    pub description: String,
}

/// Trims and checks a submission against the configured limits.
pub fn validate(
    cfg: &ServeConfig,
    subject: &str,
    description: &str,
) -> Result<TicketInput, ApiError> {
    let subject = subject.trim();
    let description = description.trim();
    let check = |name: &str, value: &str, max: usize| {
        let n = value.chars().count();
        if n == 0 {
            Err(ApiError::invalid(format!("{name} must not be empty")))
        } else if n > max {
            Err(ApiError::invalid(format!(
                "{name} is {n} characters long; the limit is {max}"
            )))
        } else if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            Err(ApiError::invalid(format!(
                "{name} contains control characters"
            )))
        } else {
            Ok(())
        }
    };
    check("subject", subject, cfg.max_subject_chars)?;
    check("description", description, cfg.max_description_chars)?;
    Ok(TicketInput {
        subject: subject.to_string(),
        description: description.to_string(),
    })
}

/// Stores the ticket, wakes the worker, and answers with its id and token.
pub async fn intake(state: &SharedState, input: TicketInput) -> Result<(i64, String), ApiError> {
    let (id, token) = state.db(move |s| s.create_ticket(&input)).await?;
    tracing::info!(ticket = id, "ticket accepted");
    crate::observe::record_intake();
    state.worker.publish(crate::worker::TicketUpdate {
        id,
        kind: EventKind::Submitted,
        status: crate::ticket::Status::Open,
    });
    state.worker.notify_new_ticket();
    Ok((id, token))
}

pub async fn create_ticket(
    State(state): State<SharedState>,
    Query(params): Query<HashMap<String, String>>,
    ApiJson(body): ApiJson<NewTicket>,
) -> Result<Response, ApiError> {
    let wait = match params.get("wait").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "wait must be true or false, not '{other}'"
            )));
        }
    };
    let input = validate(&state.config, &body.subject, &body.description)?;
    // Listen before storing, so the completion cannot slip past.
    let mut updates = state.worker.updates.subscribe();
    let (id, token) = intake(&state, input).await?;
    let url = tracking_url(&state.config.public_url(), &token);
    if !wait {
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"id": id, "token": token, "tracking_url": url, "status": "Open"})),
        )
            .into_response());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(state.config.wait_secs);
    loop {
        match tokio::time::timeout_at(deadline, updates.recv()).await {
            Ok(Ok(u)) if u.id == id && u.kind == EventKind::AiCompleted => break,
            Ok(Ok(_)) => {}
            // Missed messages: the store has the truth, so look there.
            Ok(Err(RecvError::Lagged(_))) => {
                let rec = state.db(move |s| s.get(id)).await?;
                if rec.analysis.is_some() {
                    break;
                }
            }
            Ok(Err(RecvError::Closed)) | Err(_) => break,
        }
    }
    let rec = state.db(move |s| s.get(id)).await?;
    let done = rec.analysis.is_some();
    let mut v = ticket_json(&rec, &state.config.public_url(), false);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("token".into(), json!(token));
        obj.insert("tracking_url".into(), json!(url));
    }
    let code = if done {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, axum::Json(v)).into_response())
}

pub(crate) async fn id_for_token(state: &SharedState, token: String) -> Result<i64, ApiError> {
    state
        .db(move |s| s.id_for_token(&token))
        .await?
        .ok_or_else(|| ApiError::not_found("ticket"))
}

pub async fn customer_ticket(
    State(state): State<SharedState>,
    Path(token): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = id_for_token(&state, token).await?;
    let rec = state.db(move |s| s.get(id)).await?;
    Ok(axum::Json(ticket_json(
        &rec,
        &state.config.public_url(),
        false,
    )))
}

pub async fn customer_status(
    State(state): State<SharedState>,
    Path(token): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = id_for_token(&state, token).await?;
    let st = state.db(move |s| s.status(id)).await?;
    Ok(axum::Json(status_json(&st)))
}

/// Resolves a ticket and tells listeners.
pub async fn resolve(state: &SharedState, id: i64, by: &'static str) -> Result<(), ApiError> {
    state.db(move |s| s.resolve(id, by)).await?;
    state.worker.publish(crate::worker::TicketUpdate {
        id,
        kind: EventKind::Resolved,
        status: crate::ticket::Status::Resolved,
    });
    Ok(())
}

pub async fn customer_resolve(
    State(state): State<SharedState>,
    Path(token): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = id_for_token(&state, token).await?;
    resolve(&state, id, "by the customer").await?;
    let rec = state.db(move |s| s.get(id)).await?;
    Ok(axum::Json(ticket_json(
        &rec,
        &state.config.public_url(),
        false,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRating {
    pub stars: i64,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Checks a rating: 1–5 stars, an optional comment of at most 2000 characters.
pub fn validate_rating(
    stars: i64,
    comment: Option<String>,
) -> Result<(u8, Option<String>), ApiError> {
    if !(1..=5).contains(&stars) {
        return Err(ApiError::invalid(format!(
            "stars must be 1 to 5, not {stars}"
        )));
    }
    let comment = comment
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if comment.as_ref().is_some_and(|c| c.chars().count() > 2000) {
        return Err(ApiError::invalid("comment is longer than 2000 characters"));
    }
    Ok((stars as u8, comment))
}

pub async fn rate(
    state: &SharedState,
    id: i64,
    stars: u8,
    comment: Option<String>,
) -> Result<(), ApiError> {
    state
        .db(move |s| s.rate(id, stars, comment.as_deref()))
        .await?;
    state.worker.publish(crate::worker::TicketUpdate {
        id,
        kind: EventKind::Rated,
        status: crate::ticket::Status::Resolved,
    });
    Ok(())
}

pub async fn customer_rating(
    State(state): State<SharedState>,
    Path(token): Path<String>,
    ApiJson(body): ApiJson<NewRating>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = id_for_token(&state, token).await?;
    let (stars, comment) = validate_rating(body.stars, body.comment)?;
    rate(&state, id, stars, comment).await?;
    let rec = state.db(move |s| s.get(id)).await?;
    Ok(axum::Json(ticket_json(
        &rec,
        &state.config.public_url(),
        false,
    )))
}

/// Parses the admin list's query string, with a clear error for each bad value.
pub fn list_query(params: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    let get = |k: &str| params.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let parse_num = |k: &str, default: u32, max: u32| -> Result<u32, ApiError> {
        match get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{k} must be a number from 1 to {max}"))
                }),
        }
    };
    let bad = |e: crate::ticket::UnknownValue| ApiError::bad_request(e.to_string());
    Ok(ListQuery {
        q: get("q").map(String::from),
        category: get("category").map(str::parse).transpose().map_err(bad)?,
        priority: get("priority").map(str::parse).transpose().map_err(bad)?,
        status: get("status").map(str::parse).transpose().map_err(bad)?,
        sort: match get("sort") {
            None => Sort::default(),
            Some(s) => Sort::parse(s).ok_or_else(|| {
                ApiError::bad_request("sort must be newest, oldest, priority or updated")
            })?,
        },
        page: parse_num("page", 1, 1_000_000)?,
        per_page: parse_num("per_page", 20, 100)?,
    })
}

pub async fn list_tickets(
    _admin: AdminApi,
    State(state): State<SharedState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<axum::Json<Value>, ApiError> {
    let q = list_query(&params)?;
    let (page, per_page) = (q.page, q.per_page);
    let (tickets, total) = state.db(move |s| s.list(&q)).await?;
    Ok(axum::Json(
        json!({"tickets": tickets, "total": total, "page": page, "per_page": per_page}),
    ))
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| ApiError::not_found("ticket"))
}

pub async fn admin_ticket(
    _admin: AdminApi,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let rec = state.db(move |s| s.get(id)).await?;
    Ok(axum::Json(ticket_json(
        &rec,
        &state.config.public_url(),
        true,
    )))
}

pub async fn admin_resolve(
    _admin: AdminApi,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    resolve(&state, id, "by support staff").await?;
    let rec = state.db(move |s| s.get(id)).await?;
    Ok(axum::Json(ticket_json(
        &rec,
        &state.config.public_url(),
        true,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    pub text: String,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub multi_label: bool,
    #[serde(default)]
    pub template: Option<String>,
}

/// `POST /api/classify`: the zero-shot classifier for operators (admin only).
/// Fails fast with 503 + Retry-After when the model queue is full.
pub async fn classify(
    _admin: AdminApi,
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<ClassifyRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let Some(nli) = state.nli.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            "no zero-shot model is loaded (start the service with --nli-model)",
        ));
    };
    let text = body.text.trim();
    let n = text.chars().count();
    if n == 0 || n > state.config.max_description_chars {
        return Err(ApiError::invalid(format!(
            "text must have 1 to {} characters",
            state.config.max_description_chars
        )));
    }
    let labels = body.labels.unwrap_or_else(|| {
        crate::ticket::Category::ALL
            .iter()
            .map(|c| c.to_string())
            .collect()
    });
    let template = body
        .template
        .unwrap_or_else(|| crate::inference::nli::DEFAULT_TEMPLATE.to_string());
    use crate::inference::InferenceError as E;
    match nli
        .classify_now(text, &labels, body.multi_label, &template)
        .await
    {
        Ok(out) => Ok(axum::Json(json!(out))),
        Err(E::InvalidInput(m)) => Err(ApiError::invalid(m)),
        Err(e @ E::QueueFull(_)) => Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", e.to_string())
        }),
        Err(e) => {
            tracing::error!(error = %e, "classification failed");
            Err(ApiError::internal(format!("the model failed: {e}")))
        }
    }
}

pub async fn health(State(state): State<SharedState>) -> Response {
    let db = state
        .db(|s| Ok((s.ping()?, s.schema_version()?, s.backlog()?)))
        .await;
    let (db_ok, version, backlog, db_error) = match db {
        Ok(((), v, b)) => (true, Some(v), Some(b), None),
        Err(e) => (false, None, None, Some(e.message)),
    };
    let e = &state.engines;
    let status = if !db_ok {
        "error"
    } else if e.banner().is_some() {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({
        "status": status,
        "banner": e.banner(),
        "db": {"ok": db_ok, "schema_version": version, "error": db_error},
        "engines": e,
        "worker": {"backlog": backlog, "concurrency": state.config.workers},
        "queues": state.nli.iter().map(|n| n.queue()).chain(state.generator.iter().map(|g| g.snapshot().queue)).collect::<Vec<_>>(),
        "generator": state.generator.as_ref().map(|g| g.snapshot()),
    });
    let code = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

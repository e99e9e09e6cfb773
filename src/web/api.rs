//! The JSON API: intake, the customer's token-scoped endpoints, the admin
//! endpoints and `/health`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::auth::AdminApi;
use super::error::ApiError;
use super::view::{status_json, tracking_url};
use super::{ApiJson, SharedState};
use crate::config::ServeConfig;
use crate::guard::{ClientIp, LogEvery};
use crate::store::{Created, ListQuery, Sort};
use crate::text::{self, Lines};
use crate::ticket::{EventKind, TicketInput};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    pub subject: String,
    pub description: String,
    /// Where to send the customer's notifications (optional).
    #[serde(default)]
    pub email: Option<String>,
}

/// The optional e-mail address of a submission: empty means none.
pub fn validate_email(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(a) => crate::notify::mail::check_address(a)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("email: {e}"))),
    }
}

/// Trims and checks a submission against the configured limits and the
/// text rules every free-text field follows ([`crate::text`]).
pub fn validate(
    cfg: &ServeConfig,
    subject: &str,
    description: &str,
) -> Result<TicketInput, ApiError> {
    Ok(TicketInput {
        subject: text::clean("subject", subject, cfg.max_subject_chars, Lines::One)?,
        description: text::clean(
            "description",
            description,
            cfg.max_description_chars,
            Lines::Many,
        )?,
    })
}

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// The `Idempotency-Key` header: 1–200 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let ok = !v.is_empty()
        && v.len() <= MAX_IDEMPOTENCY_KEY
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
    match v.to_str() {
        Ok(k) if ok => Ok(Some(k.to_string())),
        _ => Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ))),
    }
}

/// Intake limits: per client address and for everyone together.
pub fn check_intake_limits(state: &SharedState, client: ClientIp) -> Result<(), ApiError> {
    let refuse = |what: &'static str, secs: u64| {
        static LOG: LogEvery = LogEvery::new();
        metrics::counter!("rate_limited_total", "what" => what).increment(1);
        if let Some(n) = LOG.due(Duration::from_secs(10)) {
            tracing::warn!(limit = what, refused = n, "ticket intake rate-limited");
        }
        ApiError::rate_limited(
            secs,
            format!(
                "too many tickets were submitted in a short time; please try again in {secs} seconds"
            ),
        )
    };
    state
        .intake_by_addr
        .check(&client.key())
        .map_err(|s| refuse("intake_per_address", s))?;
    state
        .intake_all
        .check("all")
        .map_err(|s| refuse("intake_total", s))
}

/// Customers' other writes (resolve, rating), per address.
pub fn check_write_limit(state: &SharedState, client: ClientIp) -> Result<(), ApiError> {
    state.writes_by_addr.check(&client.key()).map_err(|secs| {
        metrics::counter!("rate_limited_total", "what" => "customer_writes").increment(1);
        ApiError::rate_limited(
            secs,
            format!("too many changes in a short time; please try again in {secs} seconds"),
        )
    })
}

/// Stores the ticket (or finds the one this idempotency key made), wakes
/// the worker, and answers with its id and token.
pub async fn intake(
    state: &SharedState,
    input: TicketInput,
    key: Option<String>,
    email: Option<String>,
) -> Result<Created, ApiError> {
    let created = state
        .db(move |s| s.create_ticket_with(&input, key.as_deref(), email.as_deref()))
        .await?;
    if created.replayed {
        tracing::info!(
            ticket = created.id,
            "repeated submission answered with its ticket"
        );
        return Ok(created);
    }
    tracing::info!(ticket = created.id, "ticket accepted");
    crate::observe::record_intake();
    if state.config.auto_assign {
        let id = created.id;
        // The ticket is stored either way; a failed assignment is only logged.
        if let Err(e) = state.db(move |s| s.assign_round_robin(id)).await {
            tracing::warn!(ticket = id, error = %e.message, "automatic assignment failed");
        }
    }
    state.worker.notify_new_ticket();
    Ok(created)
}

pub async fn create_ticket(
    State(state): State<SharedState>,
    client: ClientIp,
    headers: HeaderMap,
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
    let email = validate_email(body.email.as_deref())?;
    let key = idempotency_key(&headers)?;
    check_intake_limits(&state, client)?;
    // Listen before storing, so the completion cannot slip past.
    let mut updates = state.worker.updates.subscribe();
    let Created {
        id,
        token,
        replayed,
    } = intake(&state, input, key, email).await?;
    let url = tracking_url(&state.config.public_url(), &token);
    if !wait {
        // A repeated submission reports the ticket's status now.
        let status = if replayed {
            state.db(move |s| s.status(id)).await?.status
        } else {
            crate::ticket::Status::Open
        };
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"id": id, "token": token, "tracking_url": url, "status": status})),
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
    let mut v = state.customer_view(&rec);
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
    Ok(axum::Json(state.customer_view(&rec)))
}

pub async fn customer_status(
    State(state): State<SharedState>,
    Path(token): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = id_for_token(&state, token).await?;
    let st = state.db(move |s| s.status(id)).await?;
    Ok(axum::Json(status_json(&st)))
}

/// Resolves a ticket and tells listeners; `by` is who (`customer`, a staff
/// user's name, `api`).
pub async fn resolve(state: &SharedState, id: i64, by: &str) -> Result<(), ApiError> {
    let by = by.to_string();
    state.db(move |s| s.resolve(id, &by)).await?;
    state.worker.changed();
    Ok(())
}

pub async fn customer_resolve(
    State(state): State<SharedState>,
    client: ClientIp,
    Path(token): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = id_for_token(&state, token).await?;
    check_write_limit(&state, client)?;
    resolve(&state, id, "customer").await?;
    let rec = state.db(move |s| s.get(id)).await?;
    Ok(axum::Json(state.customer_view(&rec)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRating {
    pub stars: i64,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Longest rating comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// Checks a rating: 1–5 stars, an optional comment (the text rules, at most
/// 2000 characters; blank means none).
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
        .filter(|c| !c.trim().is_empty())
        .map(|c| text::clean("comment", &c, MAX_COMMENT_CHARS, Lines::Many))
        .transpose()?;
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
    state.worker.changed();
    Ok(())
}

pub async fn customer_rating(
    State(state): State<SharedState>,
    client: ClientIp,
    Path(token): Path<String>,
    ApiJson(body): ApiJson<NewRating>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = id_for_token(&state, token).await?;
    let (stars, comment) = validate_rating(body.stars, body.comment)?;
    check_write_limit(&state, client)?;
    rate(&state, id, stars, comment).await?;
    let rec = state.db(move |s| s.get(id)).await?;
    Ok(axum::Json(state.customer_view(&rec)))
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
        sla: get("sla")
            .map(|v| {
                crate::store::sla::SlaFilter::parse(v).ok_or_else(|| {
                    ApiError::bad_request(format!("sla must be breached or at_risk, not '{v}'"))
                })
            })
            .transpose()?,
        // `assignee=NAME`; `assignee=-` lists unassigned tickets.
        assignee: get("assignee").map(|a| {
            if a == "-" {
                String::new()
            } else {
                a.to_string()
            }
        }),
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
    Ok(axum::Json(state.staff_view(&rec)))
}

pub async fn admin_resolve(
    AdminApi(staff): AdminApi,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    resolve(&state, id, &staff.name).await?;
    let rec = state.db(move |s| s.get(id)).await?;
    Ok(axum::Json(state.staff_view(&rec)))
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
    let text = text::clean(
        "text",
        &body.text,
        state.config.max_description_chars,
        Lines::Many,
    )?;
    let text = text.as_str();
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

/// 405 with the JSON error body every other API error has.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed here",
    )
}

/// Anything but `/health` and `/metrics` on a worker node.
pub async fn not_on_worker() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "worker_node",
        "this is a worker node (--role worker): it serves /health and /metrics only; \
         the pages and the API are on the web nodes",
    )
}

//! `/admin/webhooks` (admins): the configured endpoints with their state,
//! the delivery log, replaying a delivery and enabling a disabled endpoint.
//! Endpoints come from the configuration file only; secrets are never shown.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::SharedState;
use super::auth::{AdminSession, MaybeAdmin};
use super::error::ApiError;
use super::pages::{StaffForm, api_error_page, render};
use super::users::{admin_form, admin_only};
use crate::notify::webhook::Subscription;
use crate::store::StoreError;
use crate::store::outbox::{DeliveryLog, EndpointState};

/// Deliveries shown in the log.
const LOG_ROWS: usize = 100;

/// Each configured endpoint's URL and standing, in configuration order.
pub(super) async fn endpoint_states(
    state: &SharedState,
) -> Result<Vec<(String, EndpointState)>, ApiError> {
    let urls: Vec<String> = state
        .hooks
        .endpoints
        .iter()
        .map(|e| e.url.clone())
        .collect();
    state
        .db(move |s| {
            urls.into_iter()
                .map(|u| {
                    let st = s.webhook_endpoint_state(&u)?;
                    Ok((u, st))
                })
                .collect()
        })
        .await
}

async fn recent(state: &SharedState) -> Result<Vec<DeliveryLog>, ApiError> {
    state.db(|s| s.webhook_log(LOG_ROWS)).await
}

async fn page(
    state: &SharedState,
    admin: &AdminSession,
    status: StatusCode,
    error: Option<String>,
    notice: Option<String>,
) -> Response {
    let (states, log) = match tokio::try_join!(endpoint_states(state), recent(state)) {
        Ok(x) => x,
        Err(e) => return api_error_page(state, e),
    };
    let endpoints: Vec<_> = state
        .hooks
        .endpoints
        .iter()
        .zip(states)
        .map(|(e, (_, st))| {
            let events = match &e.events {
                Subscription::All => "all events".to_string(),
                Subscription::Only(list) => list
                    .iter()
                    .map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            serde_json::json!({ "url": e.url, "events": events, "state": st })
        })
        .collect();
    render(
        state,
        status,
        "admin_webhooks.html",
        context! {
            endpoints => minijinja::Value::from(minijinja::value::Serde(&endpoints)),
            log => minijinja::Value::from(minijinja::value::Serde(&log)),
            csrf => admin.csrf.clone(),
            error => error,
            notice => notice,
        },
    )
}

/// `GET /admin/webhooks`.
pub async fn index(State(state): State<SharedState>, MaybeAdmin(admin): MaybeAdmin) -> Response {
    match admin_only(admin, &state) {
        Ok(a) => page(&state, &a, StatusCode::OK, None, None).await,
        Err(r) => *r,
    }
}

/// `POST /admin/webhooks/replay`: `csrf`, `id` (a delivery).
#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

impl StaffForm for ReplayForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn replay(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    form: Result<Form<ReplayForm>, FormRejection>,
) -> Response {
    let (admin, f) = match admin_form(admin, &state, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result = match f.id.trim().parse::<i64>() {
        Err(_) => Err(ApiError::invalid(format!(
            "'{}' is not a delivery number",
            f.id
        ))),
        Ok(id) => state
            .db(move |s| match s.replay_webhook(id) {
                Err(StoreError::NotFound) => Ok(None),
                other => other.map(|()| Some(id)),
            })
            .await
            .and_then(|found| found.ok_or_else(|| ApiError::not_found("delivery"))),
    };
    match result {
        Ok(id) => {
            tracing::info!(by = %admin.staff.name, delivery = id, "webhook delivery replayed");
            let notice = format!("Delivery {id} is queued again (same webhook-id).");
            page(&state, &admin, StatusCode::OK, None, Some(notice)).await
        }
        Err(e) => page(&state, &admin, e.status, Some(e.message), None).await,
    }
}

/// `POST /admin/webhooks/enable`: `csrf`, `url` (a configured endpoint).
#[derive(Debug, Deserialize)]
pub struct EnableForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
}

impl StaffForm for EnableForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn enable(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    form: Result<Form<EnableForm>, FormRejection>,
) -> Response {
    let (admin, f) = match admin_form(admin, &state, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if !state.hooks.endpoints.iter().any(|e| e.url == f.url) {
        let e = ApiError::not_found("endpoint");
        return page(&state, &admin, e.status, Some(e.message), None).await;
    }
    let url = f.url.clone();
    match state.db(move |s| s.enable_webhook_endpoint(&url)).await {
        Ok(()) => {
            tracing::info!(by = %admin.staff.name, endpoint = %f.url, "webhook endpoint enabled");
            let notice = format!("{} is enabled; its waiting deliveries go out now.", f.url);
            page(&state, &admin, StatusCode::OK, None, Some(notice)).await
        }
        Err(e) => page(&state, &admin, e.status, Some(e.message), None).await,
    }
}

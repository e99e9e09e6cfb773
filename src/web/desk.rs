//! The support desk's API: the conversation (staff replies and internal
//! notes, customer replies), assignment and staff changes to a ticket. The
//! rules live in the store (`store::desk`); here are only the checks of the
//! input and who is asking.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{check_write_limit, id_for_token};
use super::auth::{AdminApi, Staff};
use super::error::ApiError;
use super::{ApiJson, SharedState};
use crate::guard::ClientIp;
use crate::store::{Author, Message, NewMessage, TicketChanges};
use crate::text::{self, Lines};

/// Longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 5000;

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| ApiError::not_found("ticket"))
}

/// The change is stored: live pages hear of it through the feed.
fn publish(state: &SharedState) {
    state.worker.changed();
}

/// Stores a message and tells both sides' live pages.
pub async fn post_message(
    state: &SharedState,
    id: i64,
    author: Author,
    body: &str,
    internal: bool,
    ai_assisted: bool,
) -> Result<Message, ApiError> {
    let m = NewMessage {
        author,
        internal,
        ai_assisted,
        body: text::clean("body", body, MAX_MESSAGE_CHARS, Lines::Many)?,
    };
    let reopen_days = state.config.reopen_days;
    let (msg, _) = state
        .db(move |s| s.add_message(id, &m, reopen_days))
        .await?;
    publish(state);
    Ok(msg)
}

fn created(msg: &Message) -> Response {
    (StatusCode::CREATED, axum::Json(json!(msg))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffMessage {
    pub body: String,
    #[serde(default)]
    pub internal: bool,
    /// The reply started from the AI's draft.
    #[serde(default)]
    pub ai_assisted: bool,
}

/// `POST /api/tickets/{id}/messages` (staff): a public reply or an internal note.
pub async fn staff_message(
    AdminApi(staff): AdminApi,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(m): ApiJson<StaffMessage>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let msg = post_message(
        &state,
        id,
        Author::Staff(staff.name),
        &m.body,
        m.internal,
        m.ai_assisted,
    )
    .await?;
    Ok(created(&msg))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerMessage {
    pub body: String,
}

/// `POST /api/t/{token}/messages` (the customer): a reply, always public.
pub async fn customer_message(
    State(state): State<SharedState>,
    client: ClientIp,
    Path(token): Path<String>,
    ApiJson(m): ApiJson<CustomerMessage>,
) -> Result<Response, ApiError> {
    let id = id_for_token(&state, token).await?;
    check_write_limit(&state, client)?;
    let msg = post_message(&state, id, Author::Customer, &m.body, false, false).await?;
    Ok(created(&msg))
}

async fn staff_view(state: &SharedState, id: i64) -> Result<axum::Json<Value>, ApiError> {
    let rec = state.db(move |s| s.get(id)).await?;
    Ok(axum::Json(state.staff_view(&rec)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// A user's name, or null to unassign.
    #[serde(default)]
    pub user: Option<String>,
}

/// Assigns a ticket (or unassigns it, `user: None`).
pub async fn assign_ticket(
    state: &SharedState,
    id: i64,
    user: Option<String>,
    by: &Staff,
) -> Result<(), ApiError> {
    let by = by.name.clone();
    // An unknown or disabled user is a 404 naming the user.
    state
        .db(move |s| s.assign(id, user.as_deref(), &by))
        .await?;
    publish(state);
    Ok(())
}

/// `POST /api/tickets/{id}/assign` with `{"user": "NAME"}` or `{"user": null}`.
pub async fn assign(
    AdminApi(staff): AdminApi,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(a): ApiJson<Assign>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    assign_ticket(&state, id, a.user, &staff).await?;
    staff_view(&state, id).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

impl Patch {
    /// The changes, each value checked (422 names the bad one).
    pub fn changes(&self) -> Result<TicketChanges, ApiError> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let bad = |e: crate::ticket::UnknownValue| ApiError::invalid(e.to_string());
        let parse = given;
        Ok(TicketChanges {
            category: parse(&self.category)
                .map(str::parse)
                .transpose()
                .map_err(bad)?,
            priority: parse(&self.priority)
                .map(str::parse)
                .transpose()
                .map_err(bad)?,
            status: parse(&self.status)
                .map(str::parse)
                .transpose()
                .map_err(bad)?,
        })
    }
}

/// Applies staff changes and tells the live pages.
pub async fn change_ticket(
    state: &SharedState,
    id: i64,
    changes: TicketChanges,
    by: &Staff,
) -> Result<(), ApiError> {
    let by = by.name.clone();
    state
        .db(move |s| s.change_ticket(id, &changes, &by))
        .await?;
    publish(state);
    Ok(())
}

/// `PATCH /api/tickets/{id}` with any of `category`, `priority`, `status`.
pub async fn patch(
    AdminApi(staff): AdminApi,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(p): ApiJson<Patch>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    change_ticket(&state, id, p.changes()?, &staff).await?;
    staff_view(&state, id).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceBeat {
    /// The staff member is typing a reply.
    #[serde(default)]
    pub typing: bool,
    /// The page is being closed.
    #[serde(default)]
    pub leave: bool,
}

/// `POST /api/tickets/{id}/presence` (staff): the ticket page's heartbeat;
/// answers with everyone who has the ticket open, and tells the other
/// staff pages through `presence` events on `/api/admin/events`.
pub async fn presence(
    AdminApi(staff): AdminApi,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(beat): ApiJson<PresenceBeat>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    // Only for tickets that exist.
    state.db(move |s| s.status(id)).await?;
    if beat.leave {
        state.presence.leave(id, &staff.name);
        return Ok(axum::Json(json!({"viewers": []})));
    }
    let viewers = state.presence.heartbeat(id, &staff.name, beat.typing);
    Ok(axum::Json(json!({"viewers": viewers, "me": staff.name})))
}

// The pages' forms: the same operations, answered with a redirect back to
// the page (or the page again with the error).

use axum::extract::Form;
use axum::extract::rejection::FormRejection;

use super::auth::MaybeAdmin;
use super::pages::{
    StaffForm, admin_ticket_page, api_error_page, error_page, see_other, staff_form, tracked,
};

#[derive(Debug, Deserialize)]
pub struct DeskForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    internal: Option<String>,
    #[serde(default)]
    ai_assisted: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

impl StaffForm for DeskForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn checked(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| !v.is_empty() && v != "0")
}

/// `POST /admin/tickets/{id}/{action}`: `messages`, `assign` or `update`.
pub async fn staff_form_post(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    Path((id, action)): Path<(String, String)>,
    form: Result<Form<DeskForm>, FormRejection>,
) -> Response {
    let (admin, f) = match staff_form(admin, &state, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Ok(id) = id.parse::<i64>() else {
        return error_page(&state, StatusCode::NOT_FOUND, "ticket not found");
    };
    let staff = admin.staff.clone();
    let result = match action.as_str() {
        "messages" => post_message(
            &state,
            id,
            Author::Staff(staff.name.clone()),
            &f.body,
            checked(&f.internal),
            checked(&f.ai_assisted),
        )
        .await
        .map(|_| "#conversation"),
        "assign" => {
            let user = f.user.clone().filter(|u| !u.trim().is_empty());
            assign_ticket(&state, id, user, &staff)
                .await
                .map(|_| "#work")
        }
        "update" => {
            let patch = Patch {
                category: f.category.clone(),
                priority: f.priority.clone(),
                status: f.status.clone(),
            };
            match patch.changes() {
                Ok(c) => change_ticket(&state, id, c, &staff).await.map(|_| "#work"),
                Err(e) => Err(e),
            }
        }
        _ => return error_page(&state, StatusCode::NOT_FOUND, "This page does not exist."),
    };
    match result {
        Ok(anchor) => see_other(&format!("/admin/tickets/{id}{anchor}")),
        Err(e) if e.status == StatusCode::NOT_FOUND && e.message.starts_with("ticket") => {
            api_error_page(&state, e)
        }
        Err(e) => admin_ticket_page(&state, &admin, id, e.status, Some(e.message)).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct ReplyForm {
    #[serde(default)]
    body: String,
}

/// `POST /t/{token}/messages`: the customer's reply from the tracker.
pub async fn tracker_reply(
    State(state): State<SharedState>,
    client: ClientIp,
    Path(token): Path<String>,
    form: Result<Form<ReplyForm>, FormRejection>,
) -> Response {
    let Form(f) = match form {
        Ok(f) => f,
        Err(e) => return error_page(&state, e.status(), &e.body_text()),
    };
    let id = match tracked(&state, &token).await {
        Ok(id) => id,
        Err(page) => return page,
    };
    let result = match check_write_limit(&state, client) {
        Ok(()) => post_message(&state, id, Author::Customer, &f.body, false, false).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see_other(&format!("/t/{token}#conversation")),
        Err(e) => super::pages::tracker_error(&state, token, e).await,
    }
}

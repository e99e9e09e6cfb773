//! `/admin/replies`: admins keep canned replies per category; agents insert
//! them into a reply from the ticket page.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::SharedState;
use super::auth::{AdminSession, MaybeAdmin};
use super::error::ApiError;
use super::pages::{StaffForm, api_error_page, error_page, render, see_other};
use super::users::{admin_form, admin_only};
use crate::text::{self, Lines};
use crate::ticket::Category;

async fn replies_page(
    state: &SharedState,
    admin: &AdminSession,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let replies = match state.db(|s| s.canned_replies(None)).await {
        Ok(r) => r,
        Err(e) => return api_error_page(state, e),
    };
    render(
        state,
        status,
        "admin_replies.html",
        context! {
            replies => minijinja::Value::from(minijinja::value::Serde(&replies)),
            categories => Category::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            csrf => admin.csrf.clone(),
            error => error,
        },
    )
}

pub async fn page(State(state): State<SharedState>, MaybeAdmin(admin): MaybeAdmin) -> Response {
    match admin_only(admin, &state) {
        Ok(a) => replies_page(&state, &a, StatusCode::OK, None).await,
        Err(r) => *r,
    }
}

#[derive(Debug, Deserialize)]
pub struct ReplyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    body: String,
}

impl StaffForm for ReplyForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /admin/replies`: a new canned reply.
pub async fn create(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    form: Result<Form<ReplyForm>, FormRejection>,
) -> Response {
    let (admin, f) = match admin_form(admin, &state, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result = async {
        let title = text::clean("title", &f.title, 120, Lines::One)?;
        let body = text::clean(
            "text",
            &f.body,
            crate::web::desk::MAX_MESSAGE_CHARS,
            Lines::Many,
        )?;
        let category = match f.category.trim() {
            "" => None,
            c => Some(
                c.parse::<Category>()
                    .map_err(|e| ApiError::invalid(e.to_string()))?,
            ),
        };
        state
            .db(move |s| s.add_canned_reply(category, &title, &body))
            .await
    }
    .await;
    match result {
        Ok(_) => see_other("/admin/replies"),
        Err(e) => replies_page(&state, &admin, e.status, Some(e.message)).await,
    }
}

/// `POST /admin/replies/{id}/delete`.
pub async fn delete(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    Path(id): Path<String>,
    form: Result<Form<ReplyForm>, FormRejection>,
) -> Response {
    let (admin, _) = match admin_form(admin, &state, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Ok(id) = id.parse::<i64>() else {
        return error_page(&state, StatusCode::NOT_FOUND, "no such canned reply");
    };
    match state.db(move |s| s.delete_canned_reply(id)).await {
        Ok(()) => see_other("/admin/replies"),
        Err(e) => replies_page(&state, &admin, e.status, Some(e.message)).await,
    }
}

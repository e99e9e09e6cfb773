//! `/admin/replies`: admins keep canned replies per category; agents insert
//! them into a reply from the ticket page.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::SharedState;
use super::auth::{self, AdminSession, MaybeAdmin};
use super::error::ApiError;
use super::pages::{api_error_page, error_page, render, see_other};
use super::users::admin_only;
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

fn checked(
    admin: Option<AdminSession>,
    state: &SharedState,
    form: Result<Form<ReplyForm>, FormRejection>,
) -> Result<(AdminSession, ReplyForm), Box<Response>> {
    let admin = admin_only(admin, state)?;
    match form {
        Ok(Form(f)) if auth::ct_eq(&f.csrf, &admin.csrf) => Ok((admin, f)),
        Ok(_) => Err(Box::new(error_page(
            state,
            StatusCode::FORBIDDEN,
            "The form expired. Reload the page and try again.",
        ))),
        Err(e) => Err(Box::new(error_page(state, e.status(), &e.body_text()))),
    }
}

/// `POST /admin/replies`: a new canned reply.
pub async fn create(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    form: Result<Form<ReplyForm>, FormRejection>,
) -> Response {
    let (admin, f) = match checked(admin, &state, form) {
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
    let (admin, _) = match checked(admin, &state, form) {
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

//! `/admin/users`: admins add users, change roles, disable and enable them,
//! and reset passwords. Agents get 403. Every form carries the session's
//! CSRF token; disabling a user ends their sessions at once.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::SharedState;
use super::auth::{self, AdminSession, MaybeAdmin};
use super::error::ApiError;
use super::pages::{StaffForm, api_error_page, error_page, render, see_other, staff_form};
use crate::store::UserChange;
use crate::ticket::Role;

/// The signed-in admin, or the page to answer instead (sign-in, 403).
pub(super) fn admin_only(
    admin: Option<AdminSession>,
    state: &SharedState,
) -> Result<AdminSession, Box<Response>> {
    match admin {
        None => Err(Box::new(see_other("/admin/login"))),
        Some(a) if !a.staff.is_admin() => Err(Box::new(error_page(
            state,
            StatusCode::FORBIDDEN,
            "Only admins manage users.",
        ))),
        Some(a) => Ok(a),
    }
}

async fn users_page(
    state: &SharedState,
    admin: &AdminSession,
    status: StatusCode,
    error: Option<String>,
    notice: Option<String>,
) -> Response {
    let users = match state.db(|s| s.users()).await {
        Ok(u) => u,
        Err(e) => return api_error_page(state, e),
    };
    render(
        state,
        status,
        "admin_users.html",
        context! {
            users => minijinja::Value::from(minijinja::value::Serde(&users)),
            roles => Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            csrf => admin.csrf.clone(),
            me => admin.staff.name.clone(),
            error => error,
            notice => notice,
        },
    )
}

pub async fn page(State(state): State<SharedState>, MaybeAdmin(admin): MaybeAdmin) -> Response {
    match admin_only(admin, &state) {
        Ok(a) => users_page(&state, &a, StatusCode::OK, None, None).await,
        Err(r) => *r,
    }
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    email: String,
}

impl StaffForm for UserForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// An admin's form with their CSRF token, or the page to answer.
pub(super) fn admin_form<F: StaffForm>(
    admin: Option<AdminSession>,
    state: &SharedState,
    form: Result<Form<F>, FormRejection>,
) -> Result<(AdminSession, F), Box<Response>> {
    let (admin, f) = staff_form(admin, state, form)?;
    Ok((admin_only(Some(admin), state)?, f))
}

fn role(raw: &str) -> Result<Role, ApiError> {
    raw.parse::<Role>()
        .map_err(|e| ApiError::invalid(e.to_string()))
}

async fn answer(
    state: &SharedState,
    admin: &AdminSession,
    result: Result<String, ApiError>,
) -> Response {
    match result {
        Ok(notice) => users_page(state, admin, StatusCode::OK, None, Some(notice)).await,
        Err(e) => users_page(state, admin, e.status, Some(e.message), None).await,
    }
}

/// `POST /admin/users`: a new user.
pub async fn create(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    form: Result<Form<UserForm>, FormRejection>,
) -> Response {
    let (admin, f) = match admin_form(admin, &state, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result = async {
        let name = crate::desk::user_name(&f.name).map_err(|e| ApiError::invalid(e.to_string()))?;
        let role = role(&f.role)?;
        let hash =
            auth::hash_password(&f.password).map_err(|e| ApiError::invalid(e.to_string()))?;
        let by = admin.staff.name.clone();
        let user = state.db(move |s| s.create_user(&name, role, &hash)).await?;
        tracing::info!(user = %user.name, role = %user.role, by = %by, "user added");
        Ok(format!("Added {} ({}).", user.name, user.role))
    }
    .await;
    answer(&state, &admin, result).await
}

/// `POST /admin/users/{name}/{action}`: `disable`, `enable`, `role` (field
/// `role`), `password` (field `password`) or `email` (field `email`, empty
/// for none).
pub async fn change(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    Path((name, action)): Path<(String, String)>,
    form: Result<Form<UserForm>, FormRejection>,
) -> Response {
    let (admin, f) = match admin_form(admin, &state, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result = async {
        let change = match action.as_str() {
            "disable" => UserChange::Active(false),
            "enable" => UserChange::Active(true),
            "role" => UserChange::Role(role(&f.role)?),
            "email" => UserChange::Email(super::api::validate_email(Some(&f.email))?),
            "password" => UserChange::Password(
                auth::hash_password(&f.password).map_err(|e| ApiError::invalid(e.to_string()))?,
            ),
            _ => return Err(ApiError::not_found("action")),
        };
        let user = state.db(move |s| s.update_user(&name, change)).await?;
        if !user.active {
            state.sessions.remove_user(user.id);
        }
        tracing::info!(user = %user.name, action = %action, by = %admin.staff.name, "user changed");
        Ok(match action.as_str() {
            "disable" => format!("Disabled {}; their sessions have ended.", user.name),
            "enable" => format!("Enabled {}.", user.name),
            "role" => format!("{} is now {}.", user.name, user.role),
            "email" => match &user.email {
                Some(a) => format!("{} gets notifications at {a}.", user.name),
                None => format!("{} gets no e-mail notifications.", user.name),
            },
            _ => format!("Password of {} reset.", user.name),
        })
    }
    .await;
    answer(&state, &admin, result).await
}

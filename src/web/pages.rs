//! Server-rendered pages. Everything works with JavaScript off; the tracker's
//! script only adds live refresh.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

use super::SharedState;
use super::api::{self, list_query, validate, validate_rating};
use super::auth::{self, AdminSession, LOGIN_CSRF_COOKIE, MaybeAdmin, SESSION_COOKIE};
use super::error::ApiError;
use super::view::tracking_url;
use crate::guard::{ClientIp, Refusal};
use crate::ticket::{Category, Priority, Status};

/// Staff pages show the operator's banner (which engines run, what is
/// degraded); customers' pages never do.
fn is_staff_page(name: &str) -> bool {
    name.starts_with("admin") || name == "login.html"
}

pub(super) fn render(
    state: &SharedState,
    status: StatusCode,
    name: &str,
    ctx: minijinja::Value,
) -> Response {
    let banner = is_staff_page(name)
        .then(|| state.engines.banner())
        .flatten();
    let ctx = context! { banner => banner, ..ctx };
    match state.templates.render(name, ctx) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: a page template failed",
            )
                .into_response()
        }
    }
}

pub(super) fn error_page(state: &SharedState, status: StatusCode, message: &str) -> Response {
    render(
        state,
        status,
        "error.html",
        context! { code => status.as_u16(), message => message },
    )
}

pub(super) fn api_error_page(state: &SharedState, e: ApiError) -> Response {
    let retry_after = e.retry_after;
    let resp = error_page(state, e.status, &e.message);
    with_retry_after(resp, retry_after)
}

fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(v) = secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

pub(super) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

pub async fn not_found(
    State(state): State<SharedState>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    if uri.path().starts_with("/api/") {
        ApiError::not_found("endpoint").into_response()
    } else {
        error_page(&state, StatusCode::NOT_FOUND, "This page does not exist.")
    }
}

fn limits(state: &SharedState) -> minijinja::Value {
    context! {
        subject => state.config.max_subject_chars,
        description => state.config.max_description_chars,
    }
}

pub async fn index(State(state): State<SharedState>) -> Response {
    render(
        &state,
        StatusCode::OK,
        "index.html",
        context! { limits => limits(&state), idem => auth::random_hex(16) },
    )
}

#[derive(Debug, Deserialize)]
pub struct SubmitForm {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    description: String,
    /// Optional: where the customer's notifications go.
    #[serde(default)]
    email: String,
    /// A random key per form: a resubmitted form finds its first ticket.
    #[serde(default)]
    idem: String,
}

pub async fn submit(
    State(state): State<SharedState>,
    client: ClientIp,
    form: Result<Form<SubmitForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(f) => f,
        Err(e) => return error_page(&state, e.status(), &e.body_text()),
    };
    let key = Some(format!("form:{}", form.idem.trim()))
        .filter(|_| (16..=64).contains(&form.idem.trim().len()))
        .filter(|_| form.idem.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    let checked = validate(&state.config, &form.subject, &form.description)
        .and_then(|input| Ok((input, api::validate_email(Some(&form.email))?)));
    let result = match checked {
        Ok((input, email)) => match api::check_intake_limits(&state, client) {
            Ok(()) => match api::intake(&state, input.clone(), key, email.clone()).await {
                // The same form sent again with other words (back, edit,
                // send): a new ticket, as the customer means it.
                Err(e) if e.code == "idempotency_key_reused" => {
                    api::intake(&state, input, None, email).await
                }
                other => other,
            },
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(created) => see_other(&format!("/t/{}", created.token)),
        // Show the form again with what was typed, so nothing is lost.
        Err(e) => {
            let retry_after = e.retry_after;
            let resp = render(
                &state,
                e.status,
                "index.html",
                context! {
                    limits => limits(&state),
                    error => e.message,
                    subject => form.subject,
                    description => form.description,
                    email => form.email,
                    idem => form.idem,
                },
            );
            with_retry_after(resp, retry_after)
        }
    }
}

/// The ticket behind a tracking link, or the page to answer instead.
pub(super) async fn tracked(state: &SharedState, token: &str) -> Result<i64, Response> {
    let t = token.to_string();
    match state.db(move |s| s.id_for_token(&t)).await {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(error_page(
            state,
            StatusCode::NOT_FOUND,
            "No ticket has this tracking link.",
        )),
        Err(e) => Err(api_error_page(state, e)),
    }
}

async fn tracker_page(state: &SharedState, token: String, error: Option<String>) -> Response {
    let id = match tracked(state, &token).await {
        Ok(id) => id,
        Err(page) => return page,
    };
    let rec = match state.db(move |s| s.get(id)).await {
        Ok(r) => r,
        Err(e) => return api_error_page(state, e),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let ticket = state.customer_view(&rec);
    render(
        state,
        status,
        "tracker.html",
        context! {
            ticket => minijinja::Value::from(minijinja::value::Serde(&ticket)),
            token => token,
            tracking_url => tracking_url(&state.config.public_url(), &rec.token),
            error => error,
        },
    )
}

/// The tracker again, showing why a customer's action failed.
pub(super) async fn tracker_error(state: &SharedState, token: String, e: ApiError) -> Response {
    let retry_after = e.retry_after;
    let status = e.status;
    let mut resp = tracker_page(state, token, Some(e.message)).await;
    if resp.status() == StatusCode::UNPROCESSABLE_ENTITY {
        *resp.status_mut() = status;
    }
    with_retry_after(resp, retry_after)
}

pub async fn tracker(State(state): State<SharedState>, Path(token): Path<String>) -> Response {
    tracker_page(&state, token, None).await
}

pub async fn tracker_resolve(
    State(state): State<SharedState>,
    client: ClientIp,
    Path(token): Path<String>,
) -> Response {
    let id = match tracked(&state, &token).await {
        Ok(id) => id,
        Err(page) => return page,
    };
    if let Err(e) = api::check_write_limit(&state, client) {
        return api_error_page(&state, e);
    }
    match api::resolve(&state, id, "customer").await {
        Ok(()) => see_other(&format!("/t/{token}")),
        Err(e) => api_error_page(&state, e),
    }
}

#[derive(Debug, Deserialize)]
pub struct RatingForm {
    #[serde(default)]
    stars: String,
    #[serde(default)]
    comment: Option<String>,
}

pub async fn tracker_rating(
    State(state): State<SharedState>,
    client: ClientIp,
    Path(token): Path<String>,
    form: Result<Form<RatingForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(f) => f,
        Err(e) => return error_page(&state, e.status(), &e.body_text()),
    };
    let id = match tracked(&state, &token).await {
        Ok(id) => id,
        Err(page) => return page,
    };
    let stars = form.stars.trim().parse::<i64>().unwrap_or(0);
    let result = match validate_rating(stars, form.comment) {
        Ok((stars, comment)) => match api::check_write_limit(&state, client) {
            Ok(()) => api::rate(&state, id, stars, comment).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => see_other(&format!("/t/{token}#rating")),
        Err(e) => tracker_page(&state, token, Some(e.message)).await,
    }
}

fn with_cookie(mut resp: Response, cookie: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn password_is_set(state: &SharedState) -> Result<bool, ApiError> {
    state.db(|s| s.has_users()).await
}

fn login_page(
    state: &SharedState,
    status: StatusCode,
    error: Option<&str>,
    no_password: bool,
) -> Response {
    let csrf = auth::random_hex(16);
    let resp = render(
        state,
        status,
        "login.html",
        context! { csrf => csrf.clone(), error => error, no_password => no_password },
    );
    with_cookie(
        resp,
        auth::set_cookie(
            LOGIN_CSRF_COOKIE,
            &csrf,
            Some(3600),
            state.config.secure_cookies,
        ),
    )
}

pub async fn login_form(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
) -> Response {
    if admin.is_some() {
        return see_other("/admin/tickets");
    }
    match password_is_set(&state).await {
        Ok(set) => login_page(&state, StatusCode::OK, None, !set),
        Err(e) => api_error_page(&state, e),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    State(state): State<SharedState>,
    client: ClientIp,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(f) => f,
        Err(e) => return error_page(&state, e.status(), &e.body_text()),
    };
    let expected_csrf = auth::cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected_csrf.is_empty() || !auth::ct_eq(&form.csrf, &expected_csrf) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("The form expired. Please try again."),
            false,
        );
    }
    let name = form.name.trim().to_string();
    let lookup = name.clone();
    let found = match state.db(move |s| s.user_for_login(&lookup)).await {
        Ok(f) => f,
        Err(e) => return api_error_page(&state, e),
    };
    if found.is_none() && !matches!(password_is_set(&state).await, Ok(true)) {
        return login_page(&state, StatusCode::FORBIDDEN, None, true);
    }
    // A wrong name costs a password check too (no user enumeration by
    // timing), and says the same as a wrong password.
    let (user, hash) = match found {
        Some((u, h)) if u.active => (Some(u), h),
        _ => (None, auth::dummy_hash().to_string()),
    };
    let addr = client.key();
    let refused = |r: Refusal| {
        let e = auth::refusal_error(r);
        metrics::counter!("auth_refused_total", "reason" => e.code).increment(1);
        let resp = login_page(&state, e.status, Some(&e.message), false);
        with_retry_after(resp, e.retry_after)
    };
    // Counted as a failure before the check runs, so parallel guesses
    // cannot slip past the throttle.
    let attempt = match state.login.begin(&addr, &name.to_lowercase()) {
        Ok(a) => a,
        Err(r) => return refused(r),
    };
    let password = form.password;
    // Argon2 is deliberately slow (and holds ~19 MiB): it runs on the
    // guard's few password-check threads, never more at once.
    let ok = match state
        .login
        .run_check(move || auth::verify_password(&password, &hash))
        .await
    {
        Ok(ok) => ok,
        Err(r) => {
            state.login.cancel(attempt);
            return refused(r);
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        state.login.failed(attempt);
        metrics::counter!("auth_failures_total", "kind" => "password").increment(1);
        static LOG: crate::guard::LogEvery = crate::guard::LogEvery::new();
        if let Some(n) = LOG.due(std::time::Duration::from_secs(10)) {
            tracing::warn!(client = %addr, failures = n, "failed staff sign-ins");
        }
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password."),
            false,
        );
    };
    state.login.succeeded(attempt);
    let (session, _) = state.sessions.create(user.id);
    tracing::info!(user = %user.name, "staff user signed in");
    let resp = see_other("/admin/tickets");
    let resp = with_cookie(
        resp,
        auth::set_cookie(SESSION_COOKIE, &session, None, state.config.secure_cookies),
    );
    with_cookie(
        resp,
        auth::set_cookie(LOGIN_CSRF_COOKIE, "", Some(0), state.config.secure_cookies),
    )
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: String,
}

/// A staff form: it carries the session's CSRF token.
pub(super) trait StaffForm {
    fn csrf(&self) -> &str;
}

/// The signed-in staff member and their form, when it carries their CSRF
/// token; otherwise the page to answer (sign-in, 403, the form's error).
pub(super) fn staff_form<F: StaffForm>(
    admin: Option<AdminSession>,
    state: &SharedState,
    form: Result<Form<F>, FormRejection>,
) -> Result<(AdminSession, F), Box<Response>> {
    let Some(admin) = admin else {
        return Err(Box::new(see_other("/admin/login")));
    };
    match form {
        Ok(Form(f)) if auth::ct_eq(f.csrf(), &admin.csrf) => Ok((admin, f)),
        Ok(_) => Err(Box::new(error_page(
            state,
            StatusCode::FORBIDDEN,
            "The form expired. Reload the page and try again.",
        ))),
        Err(e) => Err(Box::new(error_page(state, e.status(), &e.body_text()))),
    }
}

/// A signed-in admin whose form carries the session's CSRF token.
pub(super) fn check_csrf(
    admin: &Option<AdminSession>,
    form: &Result<Form<CsrfForm>, FormRejection>,
) -> Result<(), StatusCode> {
    let admin = admin.as_ref().ok_or(StatusCode::UNAUTHORIZED)?;
    match form {
        Ok(Form(f)) if auth::ct_eq(&f.csrf, &admin.csrf) => Ok(()),
        _ => Err(StatusCode::FORBIDDEN),
    }
}

pub async fn logout(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    match check_csrf(&admin, &form) {
        Ok(()) => {}
        Err(StatusCode::UNAUTHORIZED) => return see_other("/admin/login"),
        Err(code) => {
            return error_page(
                &state,
                code,
                "The form expired. Reload the page and try again.",
            );
        }
    }
    if let Some(a) = admin {
        state.sessions.remove(&a.id);
    }
    let resp = see_other("/admin/login");
    with_cookie(
        resp,
        auth::set_cookie(SESSION_COOKIE, "", Some(0), state.config.secure_cookies),
    )
}

/// `path` with the list's filters (not its page), plus `page` when given.
fn list_link(path: &str, params: &HashMap<String, String>, page: Option<u32>) -> String {
    let mut keys: Vec<_> = params.keys().filter(|k| k.as_str() != "page").collect();
    keys.sort();
    let mut parts: Vec<String> = keys
        .into_iter()
        .filter(|k| !params[*k].is_empty())
        .map(|k| format!("{}={}", url_encode(k), url_encode(&params[k])))
        .collect();
    parts.extend(page.map(|p| format!("page={p}")));
    if parts.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", parts.join("&"))
    }
}

/// The link to another page of the same filtered list.
fn page_link(params: &HashMap<String, String>, page: u32) -> String {
    list_link("/admin/tickets", params, Some(page))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn admin_tickets(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(admin) = admin else {
        return see_other("/admin/login");
    };
    let q = match list_query(&params) {
        Ok(q) => q,
        Err(e) => return api_error_page(&state, e),
    };
    let (page, per_page) = (q.page, q.per_page);
    let q2 = q.clone();
    let days = crate::clock::last_days(14);
    let since = days.first().cloned().unwrap_or_default();
    let weeks = crate::clock::last_weeks(8);
    let first_week = weeks.first().cloned().unwrap_or_default();
    let sla_on = state.sla.is_some();
    let data = state
        .db(move |s| {
            Ok((
                s.list(&q2)?,
                s.status_counts()?,
                s.dashboard(&since)?,
                s.users()?,
                s.ai_agreement()?,
                if sla_on {
                    s.sla_compliance(&first_week)?
                } else {
                    Vec::new()
                },
            ))
        })
        .await;
    let ((tickets, total), counts, stats, users, agreement, compliance) = match data {
        Ok(d) => d,
        Err(e) => return api_error_page(&state, e),
    };
    let mut charts = super::charts::dashboard(&stats, &days);
    if let Some(sla) = &state.sla {
        let priorities: Vec<_> = Priority::ALL
            .iter()
            .copied()
            .filter(|p| sla.policies.contains_key(p))
            .collect();
        let title = "Service levels met per week";
        charts.push((
            title.into(),
            super::charts::compliance("chart-sla", title, &weeks, &priorities, &compliance),
        ));
    }
    // Our own SVG: every text in it is escaped by `charts`.
    let charts: Vec<_> = charts
        .into_iter()
        .map(|(title, svg)| context! { title => title, svg => minijinja::Value::from_safe_string(svg) })
        .collect();
    let csv_link = list_link("/admin/tickets.csv", &params, None);
    let pages = (total as u64).div_ceil(per_page as u64).max(1) as u32;
    let total_all: i64 = counts.iter().map(|(_, n)| n).sum();
    let counts: Vec<_> = counts
        .iter()
        .map(|(s, n)| context! { status => s.as_str(), count => n })
        .collect();
    render(
        &state,
        StatusCode::OK,
        "admin_tickets.html",
        context! {
            csrf => admin.csrf,
            is_admin => admin.staff.is_admin(),
            charts => charts,
            csv_link => csv_link,
            tickets => minijinja::Value::from(minijinja::value::Serde(&tickets)),
            total => total,
            total_all => total_all,
            counts => counts,
            page => page,
            pages => pages,
            prev_link => (page > 1).then(|| page_link(&params, page - 1)),
            next_link => (page < pages).then(|| page_link(&params, page + 1)),
            q => q.q.unwrap_or_default(),
            category => q.category.map(|c| c.as_str()),
            priority => q.priority.map(|p| p.as_str()),
            status => q.status.map(|s| s.as_str()),
            sort => q.sort.as_str(),
            agreement => minijinja::Value::from(minijinja::value::Serde(&agreement)),
            assignee => params.get("assignee").cloned().unwrap_or_default(),
            sla => q.sla.map(|f| f.as_str()),
            sla_on => state.sla.is_some(),
            me => admin.staff.user_id.map(|_| admin.staff.name.clone()),
            staff => users.iter().filter(|u| u.active).map(|u| u.name.clone()).collect::<Vec<_>>(),
            categories => Category::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            priorities => Priority::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            statuses => Status::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        },
    )
}

/// `GET /admin/tickets.csv`: the filtered list (all pages) as CSV.
pub async fn admin_tickets_csv(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if admin.is_none() {
        return see_other("/admin/login");
    }
    let mut q = match list_query(&params) {
        Ok(q) => q,
        Err(e) => return api_error_page(&state, e),
    };
    q.per_page = 500;
    let rows = state
        .db(move |s| {
            let mut all = Vec::new();
            for page in 1.. {
                q.page = page;
                let (rows, total) = s.list(&q)?;
                let n = rows.len();
                all.extend(rows);
                if n == 0 || all.len() as i64 >= total || all.len() >= CSV_MAX_ROWS {
                    break;
                }
            }
            Ok(all)
        })
        .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return api_error_page(&state, e),
    };
    match tickets_csv(&rows) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"tickets.csv\"",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => api_error_page(&state, ApiError::internal(format!("csv: {e}"))),
    }
}

const CSV_MAX_ROWS: usize = 100_000;

/// `GET /admin/overrides.csv`: every staff correction of the AI's category
/// or priority with the ticket's text (labelled data for tuning models).
pub async fn admin_overrides_csv(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
) -> Response {
    if admin.is_none() {
        return see_other("/admin/login");
    }
    let rows = match state.db(|s| s.overrides(CSV_MAX_ROWS)).await {
        Ok(r) => r,
        Err(e) => return api_error_page(&state, e),
    };
    let body = (|| -> Result<Vec<u8>, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "ticket_id",
            "field",
            "ai_value",
            "staff_value",
            "by",
            "at",
            "subject",
            "description",
        ])?;
        for o in &rows {
            w.write_record([
                o.ticket_id.to_string(),
                o.field.clone(),
                o.ai_value.clone().unwrap_or_default(),
                o.staff_value.clone().unwrap_or_default(),
                csv_cell(&o.by),
                o.at.clone(),
                csv_cell(&o.subject),
                csv_cell(&o.description),
            ])?;
        }
        w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
    })();
    match body {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"overrides.csv\"",
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => api_error_page(&state, ApiError::internal(format!("csv: {e}"))),
    }
}

/// Spreadsheet programs run cells that start with = + - @ as formulas:
/// such cells get a leading apostrophe.
fn csv_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

fn tickets_csv(rows: &[crate::store::TicketSummary]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "id",
        "created_at",
        "updated_at",
        "status",
        "category",
        "priority",
        "sentiment",
        "risk",
        "rating",
        "subject",
    ])?;
    for t in rows {
        w.write_record([
            t.id.to_string(),
            t.created_at.clone(),
            t.updated_at.clone(),
            t.status.as_str().to_string(),
            t.category
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            t.priority
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            t.sentiment.clone().unwrap_or_default(),
            t.risk.clone().unwrap_or_default(),
            t.rating.map(|r| r.to_string()).unwrap_or_default(),
            csv_cell(&t.subject),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

pub async fn admin_ticket(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    Path(id): Path<String>,
) -> Response {
    let Some(admin) = admin else {
        return see_other("/admin/login");
    };
    let Ok(id) = id.parse::<i64>() else {
        return error_page(&state, StatusCode::NOT_FOUND, "ticket not found");
    };
    admin_ticket_page(&state, &admin, id, StatusCode::OK, None).await
}

/// The staff ticket page (with an error shown above the forms, when given).
pub(super) async fn admin_ticket_page(
    state: &SharedState,
    admin: &AdminSession,
    id: i64,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let data = state
        .db(move |s| {
            let rec = s.get(id)?;
            let replies = s.canned_replies(rec.category)?;
            Ok((rec, s.users()?, replies))
        })
        .await;
    let (rec, users, replies) = match data {
        Ok(d) => d,
        Err(e) => return api_error_page(state, e),
    };
    let staff: Vec<String> = users
        .into_iter()
        .filter(|u| u.active)
        .map(|u| u.name)
        .collect();
    let ticket = state.staff_view(&rec);
    render(
        state,
        status,
        "admin_ticket.html",
        context! {
            ticket => minijinja::Value::from(minijinja::value::Serde(&ticket)),
            csrf => admin.csrf.clone(),
            is_admin => admin.staff.is_admin(),
            me => admin.staff.user_id.map(|_| admin.staff.name.clone()),
            staff => staff,
            replies => minijinja::Value::from(minijinja::value::Serde(&replies)),
            error => error,
            categories => Category::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            priorities => Priority::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            statuses => Status::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        },
    )
}

pub async fn admin_resolve(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    match check_csrf(&admin, &form) {
        Ok(()) => {}
        Err(StatusCode::UNAUTHORIZED) => return see_other("/admin/login"),
        Err(code) => {
            return error_page(
                &state,
                code,
                "The form expired. Reload the page and try again.",
            );
        }
    }
    let Ok(id) = id.parse::<i64>() else {
        return error_page(&state, StatusCode::NOT_FOUND, "ticket not found");
    };
    let by = admin
        .as_ref()
        .map_or("staff".to_string(), |a| a.staff.name.clone());
    match api::resolve(&state, id, &by).await {
        Ok(()) => see_other(&format!("/admin/tickets/{id}")),
        Err(e) => api_error_page(&state, e),
    }
}

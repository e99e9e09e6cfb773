//! The knowledge base on the web: the public help centre (`/kb`, published
//! articles only, rendered Markdown that cannot carry markup), the staff
//! editor (`/admin/kb`, admins and agents) and the delivery policy on the
//! settings page (`/admin/settings`, admins).

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::SharedState;
use super::auth::{AdminSession, MaybeAdmin};
use super::error::ApiError;
use super::pages::{StaffForm, api_error_page, error_page, render, see_other, staff_form};
use super::users::{admin_form, admin_only};
use crate::agents::keywords::query_terms;
use crate::agents::policy::DeliveryPolicy;
use crate::kb::{self, Article};
use crate::store::StoreError;
use crate::ticket::{Category, Delivery};

fn serde<T: serde::Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

fn article_missing(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("article"),
        other => other.into(),
    }
}

#[derive(Debug, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

/// `GET /kb`: published articles by category, or the matches of `?q=`.
pub async fn public_index(State(state): State<SharedState>, Query(s): Query<Search>) -> Response {
    let q: String = s.q.trim().chars().take(200).collect();
    let result = if q.is_empty() {
        state
            .db(|s| {
                Ok(s.kb_articles(true)?
                    .into_iter()
                    .map(|r| (r.article.slug, r.article.title, r.article.category))
                    .collect::<Vec<_>>())
            })
            .await
    } else {
        let terms = query_terms(&q, 16);
        state
            .db(move |s| {
                Ok(s.kb_search(&terms, 20)?
                    .into_iter()
                    .map(|h| (h.slug, h.title, h.category))
                    .collect::<Vec<_>>())
            })
            .await
    };
    let found = match result {
        Ok(f) => f,
        Err(e) => return api_error_page(&state, e),
    };
    let articles: Vec<_> = found
        .iter()
        .map(|(slug, title, c)| context! { slug => slug, title => title, category => c.map(|c| c.as_str()) })
        .collect();
    render(
        &state,
        StatusCode::OK,
        "kb_index.html",
        context! { articles => articles, q => q },
    )
}

/// `GET /kb/{slug}`: one published article.
pub async fn public_article(
    State(state): State<SharedState>,
    Path(slug): Path<String>,
) -> Response {
    let found = state.db(move |s| s.kb_article(&slug)).await;
    match found {
        Ok(Some(row)) if row.article.published => render(
            &state,
            StatusCode::OK,
            "kb_article.html",
            context! {
                article => serde(&row.article),
                html => minijinja::Value::from_safe_string(kb::markdown::render(&row.article.body)),
                updated_at => row.updated_at,
            },
        ),
        Ok(_) => error_page(&state, StatusCode::NOT_FOUND, "There is no such article."),
        Err(e) => api_error_page(&state, e),
    }
}

fn signed_in(admin: Option<AdminSession>) -> Result<AdminSession, Box<Response>> {
    admin.ok_or_else(|| Box::new(see_other("/admin/login")))
}

/// `GET /admin/kb`: every article, published or not.
pub async fn admin_index(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
) -> Response {
    let admin = match signed_in(admin) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match state.db(|s| s.kb_articles(false)).await {
        Ok(rows) => render(
            &state,
            StatusCode::OK,
            "admin_kb.html",
            context! {
                articles => serde(&rows),
                csrf => admin.csrf.clone(),
                is_admin => admin.staff.is_admin(),
            },
        ),
        Err(e) => api_error_page(&state, e),
    }
}

/// The editor, filled with `article` (and the slug it was saved under).
fn editor(
    state: &SharedState,
    admin: &AdminSession,
    status: StatusCode,
    article: &Article,
    previous_slug: Option<&str>,
    error: Option<String>,
) -> Response {
    render(
        state,
        status,
        "admin_kb_edit.html",
        context! {
            article => serde(article),
            previous_slug => previous_slug,
            categories => Category::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            preview => minijinja::Value::from_safe_string(kb::markdown::render(&article.body)),
            csrf => admin.csrf.clone(),
            is_admin => admin.staff.is_admin(),
            error => error,
        },
    )
}

fn blank() -> Article {
    Article {
        slug: String::new(),
        title: String::new(),
        body: String::new(),
        category: None,
        tags: Vec::new(),
        published: true,
    }
}

/// `GET /admin/kb/new`.
pub async fn admin_new(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
) -> Response {
    match signed_in(admin) {
        Ok(a) => editor(&state, &a, StatusCode::OK, &blank(), None, None),
        Err(r) => *r,
    }
}

/// `GET /admin/kb/{slug}`: the editor for one article.
pub async fn admin_edit(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    Path(slug): Path<String>,
) -> Response {
    let admin = match signed_in(admin) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match state.db(move |s| s.kb_article(&slug)).await {
        Ok(Some(row)) => {
            let slug = row.article.slug.clone();
            editor(
                &state,
                &admin,
                StatusCode::OK,
                &row.article,
                Some(&slug),
                None,
            )
        }
        Ok(None) => error_page(&state, StatusCode::NOT_FOUND, "There is no such article."),
        Err(e) => api_error_page(&state, e),
    }
}

#[derive(Debug, Deserialize)]
pub struct ArticleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    previous_slug: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    body: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    published: Option<String>,
}

impl StaffForm for ArticleForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /admin/kb`: creates or updates an article (a changed slug renames
/// it). A bad field answers the editor again with the text kept.
pub async fn admin_save(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    form: Result<Form<ArticleForm>, FormRejection>,
) -> Response {
    let (admin, f) = match staff_form(admin, &state, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let slug = match f.slug.trim() {
        "" => kb::slugify(&f.title),
        s => s.to_string(),
    };
    let previous = Some(f.previous_slug.trim().to_string()).filter(|p| !p.is_empty());
    let draft = Article {
        slug,
        title: f.title.clone(),
        body: f.body.clone(),
        category: None,
        tags: kb::parse_tags(&f.tags),
        published: f.published.is_some(),
    };
    let checked = kb::parse_category(&f.category).and_then(|category| {
        Article {
            category,
            ..draft.clone()
        }
        .checked()
    });
    let article = match checked {
        Ok(a) => a,
        Err(e) => {
            return editor(
                &state,
                &admin,
                StatusCode::UNPROCESSABLE_ENTITY,
                &draft,
                previous.as_deref(),
                Some(e.to_string()),
            );
        }
    };
    let by = admin.staff.name.clone();
    let (a, p) = (article.clone(), previous.clone());
    match state.db(move |s| s.kb_save(&a, p.as_deref(), &by)).await {
        Ok(()) => see_other(&format!("/admin/kb/{}", article.slug)),
        Err(e) => editor(
            &state,
            &admin,
            e.status,
            &article,
            previous.as_deref(),
            Some(e.message),
        ),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

impl StaffForm for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /admin/kb/{slug}/delete`.
pub async fn admin_delete(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    Path(slug): Path<String>,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Response {
    if let Err(r) = staff_form(admin, &state, form) {
        return *r;
    }
    let store = state.store.clone();
    let done =
        tokio::task::spawn_blocking(move || store.kb_delete(&slug).map_err(article_missing)).await;
    match done {
        Ok(Ok(())) => see_other("/admin/kb"),
        Ok(Err(e)) => api_error_page(&state, e),
        Err(e) => api_error_page(&state, ApiError::internal(e.to_string())),
    }
}

fn settings_page(
    state: &SharedState,
    admin: &AdminSession,
    status: StatusCode,
    error: Option<String>,
    notice: Option<String>,
) -> Response {
    let policy = state
        .policy
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let rows: Vec<_> = Category::ALL
        .iter()
        .map(|c| context! { category => c.as_str(), mode => policy.mode(*c).as_str() })
        .collect();
    render(
        state,
        status,
        "admin_settings.html",
        context! {
            rows => rows,
            modes => Delivery::ALL.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            threshold => policy.threshold,
            force_draft => policy.force_draft,
            engines => serde(&state.engines),
            generator => state.generator.as_ref().map(|g| serde(&g.snapshot().facts)),
            csrf => admin.csrf.clone(),
            error => error,
            notice => notice,
        },
    )
}

/// `GET /admin/settings` (admins).
pub async fn settings(State(state): State<SharedState>, MaybeAdmin(admin): MaybeAdmin) -> Response {
    match admin_only(admin, &state) {
        Ok(a) => settings_page(&state, &a, StatusCode::OK, None, None),
        Err(r) => *r,
    }
}

/// The settings form: `csrf`, `threshold`, and one `mode_{Category}` each.
#[derive(Debug, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    fields: std::collections::HashMap<String, String>,
}

impl StaffForm for SettingsForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Reads the policy from the form: every category's mode and the threshold.
fn policy_from(form: &SettingsForm, current: &DeliveryPolicy) -> Result<DeliveryPolicy, ApiError> {
    let mut p = current.clone();
    for c in Category::ALL {
        let key = format!("mode_{}", c.as_str());
        let raw = form
            .fields
            .get(&key)
            .ok_or_else(|| ApiError::invalid(format!("missing the mode of {c}")))?;
        let mode = raw.parse::<Delivery>().map_err(|_| {
            ApiError::invalid(format!("{c}: the mode is auto, draft or off (got '{raw}')"))
        })?;
        p.modes.insert(*c, mode);
    }
    let raw = form.fields.get("threshold").map(|s| s.trim()).unwrap_or("");
    let t: f64 = raw.parse().map_err(|_| {
        ApiError::invalid(format!(
            "the threshold is a number from 0 to 1 (got '{raw}')"
        ))
    })?;
    p.set_threshold(t)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(p)
}

/// `POST /admin/settings`: saves the delivery policy; it applies to the
/// next ticket processed.
pub async fn save_settings(
    State(state): State<SharedState>,
    MaybeAdmin(admin): MaybeAdmin,
    form: Result<Form<SettingsForm>, FormRejection>,
) -> Response {
    let (admin, f) = match admin_form(admin, &state, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let current = state
        .policy
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let policy = match policy_from(&f, &current) {
        Ok(p) => p,
        Err(e) => return settings_page(&state, &admin, e.status, Some(e.message), None),
    };
    let saved = policy.clone();
    match state.db(move |s| crate::desk::save_policy(s, &saved)).await {
        Ok(()) => {
            tracing::info!(by = %admin.staff.name, "delivery policy changed");
            *state.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
            settings_page(
                &state,
                &admin,
                StatusCode::OK,
                None,
                Some("Saved. It applies to the next ticket processed.".into()),
            )
        }
        Err(e) => settings_page(&state, &admin, e.status, Some(e.message), None),
    }
}

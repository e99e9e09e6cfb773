//! Admin authentication: an argon2-hashed password (no default), server-side
//! sessions in HttpOnly SameSite=Strict cookies with a CSRF token each, an
//! optional bearer token for API clients (at least 32 characters). Guesses at
//! either are throttled by [`crate::guard::LoginGuard`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use rand::RngExt;
use subtle::ConstantTimeEq;

use super::SharedState;
use super::error::ApiError;
use crate::guard::{ClientIp, Refusal};
use crate::ticket::Role;

pub const SESSION_COOKIE: &str = "ss_session";
pub const LOGIN_CSRF_COOKIE: &str = "ss_login_csrf";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub const MIN_PASSWORD_CHARS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("could not hash the password: {0}")]
    Hash(String),
}

pub fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::TooShort);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// A valid hash of no password anyone knows: checked when the user does not
/// exist, so a wrong name costs as long as a wrong password (no user
/// enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_hex(16)).unwrap_or_default())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    /// The signed-in user (checked against the database on every request,
    /// so a disabled user's sessions end at once, from any process).
    pub user_id: i64,
    expires: Instant,
}

/// Server-side sessions; a restart signs every user out.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `user_id`: (cookie value, CSRF token).
    pub fn create(&self, user_id: i64) -> (String, String) {
        let id = random_hex(32);
        let csrf = random_hex(32);
        let mut map = self.map();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                user_id,
                expires: now + SESSION_TTL,
            },
        );
        (id, csrf)
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.map();
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }

    /// Ends every session of a user.
    pub fn remove_user(&self, user_id: i64) {
        self.map().retain(|_, s| s.user_id != user_id);
    }
}

/// Who acts: a signed-in staff user, or the API token (recorded as `api`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    pub name: String,
    pub role: Role,
    /// `None` for the API token.
    pub user_id: Option<i64>,
}

impl Staff {
    pub fn api() -> Staff {
        Staff {
            name: "api".into(),
            role: Role::Admin,
            user_id: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The active user behind a session, or `None` (unknown, expired, or the
/// user was disabled: then the session ends here).
async fn session_staff(state: &SharedState, id: &str) -> Option<(Session, Staff)> {
    let session = state.sessions.get(id)?;
    let user_id = session.user_id;
    let user = state.db(move |s| s.user(user_id)).await.ok().flatten();
    match user.filter(|u| u.active) {
        Some(u) => Some((
            session,
            Staff {
                name: u.name,
                role: u.role,
                user_id: Some(u.id),
            },
        )),
        None => {
            state.sessions.remove_user(user_id);
            None
        }
    }
}

pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// A signed-in staff user seen by a page handler.
pub struct AdminSession {
    pub id: String,
    pub csrf: String,
    pub staff: Staff,
}

/// Page extractor: `Ok(None)` means "not signed in" (the page redirects).
pub struct MaybeAdmin(pub Option<AdminSession>);

impl FromRequestParts<SharedState> for MaybeAdmin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Ok(MaybeAdmin(None));
        };
        Ok(MaybeAdmin(session_staff(state, &id).await.map(
            |(session, staff)| AdminSession {
                id,
                csrf: session.csrf,
                staff,
            },
        )))
    }
}

/// The account name guesses at the bearer token are counted under.
pub const TOKEN_ACCOUNT: &str = "api-token";
/// The user `admin set-password` and `SMART_SUPPORT_ADMIN_PASSWORD` set.
pub const ADMIN_USER: &str = "admin";
/// Shortest accepted `SMART_SUPPORT_ADMIN_TOKEN`.
pub const MIN_TOKEN_CHARS: usize = 32;

/// Whether the request carries staff credentials (a bearer token or a session cookie).
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || cookie(headers, SESSION_COOKIE).is_some()
}

/// Turns a throttle refusal into 429/503 with `Retry-After`.
pub fn refusal_error(r: Refusal) -> ApiError {
    match r {
        Refusal::Throttled { retry_after } => ApiError::rate_limited(
            retry_after,
            format!("too many failed sign-in attempts; try again in {retry_after} s"),
        ),
        Refusal::Busy { retry_after } => ApiError::unavailable(
            "busy",
            retry_after,
            "too many sign-ins at once; try again shortly",
        ),
    }
}

/// Staff authentication for the API: a bearer token equal to
/// `SMART_SUPPORT_ADMIN_TOKEN` (wrong ones are throttled like passwords), or
/// an admin session cookie (whose state-changing requests must also carry
/// the session's CSRF token in `X-CSRF-Token`).
pub async fn check_admin(
    state: &SharedState,
    headers: &HeaderMap,
    method: &Method,
    client: ClientIp,
) -> Result<Staff, ApiError> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let addr = client.key();
        state
            .login
            .check(&addr, TOKEN_ACCOUNT)
            .map_err(refusal_error)?;
        let expected = state
            .config
            .admin_token
            .as_deref()
            .filter(|t| !t.is_empty());
        let given = auth.to_str().ok().and_then(|a| a.strip_prefix("Bearer "));
        return match (given, expected) {
            (Some(given), Some(expected)) if ct_eq(given.trim(), expected) => {
                state.login.forgive(&addr);
                Ok(Staff::api())
            }
            _ => {
                state.login.record_failure(&addr, TOKEN_ACCOUNT);
                metrics::counter!("auth_failures_total", "kind" => "token").increment(1);
                Err(ApiError::unauthorized())
            }
        };
    }
    let id = cookie(headers, SESSION_COOKIE).ok_or_else(ApiError::unauthorized)?;
    let (session, staff) = session_staff(state, &id)
        .await
        .ok_or_else(ApiError::unauthorized)?;
    if method != Method::GET && method != Method::HEAD {
        let given = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct_eq(given, &session.csrf) {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong X-CSRF-Token header",
            ));
        }
    }
    Ok(staff)
}

/// API extractor for staff routes (admins and agents); see [`check_admin`].
pub struct AdminApi(pub Staff);

impl FromRequestParts<SharedState> for AdminApi {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(client) = ClientIp::from_request_parts(parts, state).await;
        Ok(AdminApi(
            check_admin(state, &parts.headers, &parts.method, client).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip() {
        assert!(matches!(hash_password("short"), Err(AuthError::TooShort)));
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}

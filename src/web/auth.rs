//! Admin authentication: an argon2-hashed password (no default), server-side
//! sessions in HttpOnly SameSite=Strict cookies with a CSRF token each, an
//! optional bearer token for API clients, and a login rate limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use rand::RngExt;
use subtle::ConstantTimeEq;

use super::SharedState;
use super::error::ApiError;

pub const SESSION_COOKIE: &str = "ss_session";
pub const LOGIN_CSRF_COOKIE: &str = "ss_login_csrf";
pub const PASSWORD_SETTING: &str = "admin_password_hash";
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

pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    expires: Instant,
}

/// Server-side sessions; a restart signs every admin out.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session: (cookie value, CSRF token).
    pub fn create(&self) -> (String, String) {
        let id = random_hex(32);
        let csrf = random_hex(32);
        let mut map = self.map();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
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
}

/// Failed logins per client address inside a sliding window.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    pub fn new(max_failures: usize, window: Duration) -> Self {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until the client may try again, when it is blocked now.
    pub fn blocked_for(&self, client: &str) -> Option<u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let list = map.entry(client.to_string()).or_default();
        list.retain(|t| now.duration_since(*t) < self.window);
        if list.len() >= self.max_failures {
            let oldest = list.first().copied().unwrap_or(now);
            Some(
                (self.window.saturating_sub(now.duration_since(oldest)))
                    .as_secs()
                    .max(1),
            )
        } else {
            None
        }
    }

    pub fn record_failure(&self, client: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(client.to_string())
            .or_default()
            .push(Instant::now());
    }

    pub fn clear(&self, client: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(client);
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

/// The client's address, for rate limiting ("local" when unknown, as in tests).
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "local".to_string(), |c| c.0.ip().to_string()),
        ))
    }
}

/// A signed-in admin seen by a page handler.
pub struct AdminSession {
    pub id: String,
    pub csrf: String,
}

/// Page extractor: `Ok(None)` means "not signed in" (the page redirects).
pub struct MaybeAdmin(pub Option<AdminSession>);

impl FromRequestParts<SharedState> for MaybeAdmin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeAdmin(cookie(&parts.headers, SESSION_COOKIE).and_then(
            |id| {
                state
                    .sessions
                    .get(&id)
                    .map(|s| AdminSession { id, csrf: s.csrf })
            },
        )))
    }
}

/// API extractor: a bearer token equal to `SMART_SUPPORT_ADMIN_TOKEN`, or an
/// admin session cookie (whose state-changing requests must also carry the
/// session's CSRF token in `X-CSRF-Token`).
pub struct AdminApi;

impl FromRequestParts<SharedState> for AdminApi {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let expected = state
                .config
                .admin_token
                .as_deref()
                .filter(|t| !t.is_empty());
            return match (auth.strip_prefix("Bearer "), expected) {
                (Some(given), Some(expected)) if ct_eq(given.trim(), expected) => Ok(AdminApi),
                _ => Err(ApiError::unauthorized()),
            };
        }
        let session = cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|id| state.sessions.get(&id))
            .ok_or_else(ApiError::unauthorized)?;
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let given = parts
                .headers
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
        Ok(AdminApi)
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

    #[test]
    fn limiter_blocks_after_max_failures() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        assert_eq!(l.blocked_for("a"), None);
        l.record_failure("a");
        l.record_failure("a");
        assert!(l.blocked_for("a").is_some_and(|s| s <= 60));
        assert_eq!(l.blocked_for("b"), None);
        l.clear("a");
        assert_eq!(l.blocked_for("a"), None);
    }
}

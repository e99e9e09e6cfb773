//! Templates and static files, embedded in the binary so one file can be
//! copied to an air-gapped host; a directory can override them file by file.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;

use super::SharedState;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("index.html", include_str!("../../templates/index.html")),
    ("tracker.html", include_str!("../../templates/tracker.html")),
    ("login.html", include_str!("../../templates/login.html")),
    (
        "admin_tickets.html",
        include_str!("../../templates/admin_tickets.html"),
    ),
    (
        "admin_ticket.html",
        include_str!("../../templates/admin_ticket.html"),
    ),
    (
        "admin_users.html",
        include_str!("../../templates/admin_users.html"),
    ),
    (
        "admin_replies.html",
        include_str!("../../templates/admin_replies.html"),
    ),
    (
        "kb_index.html",
        include_str!("../../templates/kb_index.html"),
    ),
    (
        "kb_article.html",
        include_str!("../../templates/kb_article.html"),
    ),
    (
        "admin_kb.html",
        include_str!("../../templates/admin_kb.html"),
    ),
    (
        "admin_kb_edit.html",
        include_str!("../../templates/admin_kb_edit.html"),
    ),
    (
        "admin_settings.html",
        include_str!("../../templates/admin_settings.html"),
    ),
    (
        "admin_webhooks.html",
        include_str!("../../templates/admin_webhooks.html"),
    ),
    ("error.html", include_str!("../../templates/error.html")),
    (
        "mail/received.txt",
        include_str!("../../templates/mail/received.txt"),
    ),
    (
        "mail/reply.txt",
        include_str!("../../templates/mail/reply.txt"),
    ),
    (
        "mail/resolved.txt",
        include_str!("../../templates/mail/resolved.txt"),
    ),
    (
        "mail/assigned.txt",
        include_str!("../../templates/mail/assigned.txt"),
    ),
    (
        "mail/breached.txt",
        include_str!("../../templates/mail/breached.txt"),
    ),
    ("macros.html", include_str!("../../templates/macros.html")),
];

const ASSETS: &[(&str, &str)] = &[
    ("app.css", include_str!("../../assets/app.css")),
    ("tracker.js", include_str!("../../assets/tracker.js")),
    ("dashboard.js", include_str!("../../assets/dashboard.js")),
    ("countdown.js", include_str!("../../assets/countdown.js")),
    (
        "admin_ticket.js",
        include_str!("../../assets/admin_ticket.js"),
    ),
];

/// Only plain file names: no separators, no dot-dot.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn read_override(dir: &Option<PathBuf>, name: &str) -> Option<String> {
    let dir = dir.as_ref()?;
    // One folder is allowed: mail templates live in `mail/`.
    let (path, file) = match name.split_once('/') {
        Some(("mail", file)) => (dir.join("mail").join(file), file),
        Some(_) => return None,
        None => (dir.join(name), name),
    };
    if !safe_name(file) {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new(dir: Option<PathBuf>) -> Self {
        let mut env = Environment::new();
        // Auto-escaping is on for the pages; mails (`.txt`) are plain text.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".txt") {
                minijinja::AutoEscape::None
            } else {
                minijinja::AutoEscape::Html
            }
        });
        // "2026-01-02T03:04:05.678Z" → "2026-01-02 03:04" for display.
        env.add_filter("when", |s: String| -> String {
            s.replacen('T', " ", 1).chars().take(16).collect()
        });
        env.add_filter("countdown", |s: String| -> String {
            s.parse::<jiff::Timestamp>()
                .map(|due| countdown(due, jiff::Timestamp::now()))
                .unwrap_or_default()
        });
        env.set_loader(move |name| {
            if let Some(text) = read_override(&dir, name) {
                return Ok(Some(text));
            }
            Ok(TEMPLATES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.to_string()))
        });
        Templates { env }
    }

    pub fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }
}

/// "in 1h 5m", "12m overdue": the time left to `due` at `now`, to the
/// minute, in its two largest units (`countdown.js` writes the same).
pub fn countdown(due: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let secs = due.as_second() - now.as_second();
    let mins = secs.unsigned_abs().div_ceil(60);
    let (d, h, m) = (mins / 1440, mins % 1440 / 60, mins % 60);
    let text = if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m")
    };
    if secs >= 0 {
        format!("in {text}")
    } else {
        format!("{text} overdue")
    }
}

pub struct Assets {
    dir: Option<PathBuf>,
}

impl Assets {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Assets { dir }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        read_override(&self.dir, name).or_else(|| {
            ASSETS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.to_string())
        })
    }
}

pub async fn serve(State(state): State<SharedState>, Path(file): Path<String>) -> Response {
    let state: Arc<_> = state;
    let Some(body) = state.assets.get(&file) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mime = match file.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_names_cannot_escape_the_directory() {
        assert!(safe_name("app.css"));
        assert!(!safe_name("../secret"));
        assert!(!safe_name("a/b.css"));
        assert!(!safe_name(".env"));
    }

    #[test]
    fn every_embedded_template_parses() {
        let t = Templates::new(None);
        for (name, _) in TEMPLATES {
            assert!(t.env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn countdowns_read_to_the_minute() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().expect("ts");
        let now = t("2026-12-07T10:00:00Z");
        assert_eq!(countdown(t("2026-12-07T10:00:00Z"), now), "in 0m");
        assert_eq!(countdown(t("2026-12-07T10:00:30Z"), now), "in 1m");
        assert_eq!(countdown(t("2026-12-07T11:05:00Z"), now), "in 1h 5m");
        assert_eq!(countdown(t("2026-12-09T13:00:00Z"), now), "in 2d 3h");
        assert_eq!(countdown(t("2026-12-07T09:48:00Z"), now), "12m overdue");
        assert_eq!(countdown(t("2026-12-06T09:00:00Z"), now), "1d 1h overdue");
    }
}

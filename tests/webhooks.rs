//! Webhooks end to end: a real HTTP receiver on loopback
//! (`tests/support/webhook_receiver.py`, which verifies the Standard
//! Webhooks signature with Python's own hmac), the service configured with
//! a configuration file, real tickets. Messages arrive signed, in order per
//! ticket, retried with the same `webhook-id` after a 503 with
//! `Retry-After`; an internal note sends nothing; redirects are not
//! followed; an endpoint that keeps failing is disabled, nothing is lost
//! across a restart while it is down, and enabling it (the admin page, with
//! CSRF) delivers what waited; a delivery can be replayed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::Value;
use smart_support::ticket::Role;
use tempfile::TempDir;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The webhook receiver (`tests/support/webhook_receiver.py`).
struct Receiver(LoopbackService);

impl Receiver {
    /// Starts the receiver; its first `fail` requests get `status`.
    fn start(dir: &Path, port: u16, fail: u32, status: u16) -> Receiver {
        let (fail, status) = (fail.to_string(), status.to_string());
        let args = ["--secret", SECRET, "--fail", &fail, "--status", &status];
        Receiver(LoopbackService::start(
            "webhook_receiver.py",
            dir,
            port,
            &args,
        ))
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.0.port)
    }

    fn records(&self) -> Vec<Value> {
        self.0.records()
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.0.wait_until(what, done).await
    }
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("smart-support.toml");
    std::fs::write(&path, body).expect("config file");
    path
}

fn app_with(dir: TempDir, config_file: &Path) -> TestApp {
    let mut cfg = config(&dir);
    cfg.config_file = Some(config_file.to_path_buf());
    start_with(dir, cfg)
}

fn delivered(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["status"] == 200 && r["path"] == "/hook")
        .map(|r| serde_json::from_str(r["body"].as_str().expect("body")).expect("json body"))
        .collect()
}

fn types_of(bodies: &[Value], ticket: i64) -> Vec<String> {
    bodies
        .iter()
        .filter(|b| b["data"]["ticket"]["id"] == ticket)
        .map(|b| b["type"].as_str().expect("type").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_signed_in_order_and_retries_keep_their_id() {
    let dir = TempDir::new().expect("tempdir");
    let rx = Receiver::start(dir.path(), 0, 2, 503);
    let file = write_config(
        dir.path(),
        &format!(
            r#"
[[webhooks]]
url = "{hook}"
secret = "{SECRET}"
events = ["*"]

[[webhooks]]
url = "{redirect}"
secret = "{SECRET}"
events = ["ticket.created"]

[webhook_delivery]
retry_delays = ["1s", "1s", "1s", "1s", "1s"]
"#,
            hook = rx.url("/hook"),
            redirect = rx.url("/redirect"),
        ),
    );
    let app = app_with(dir, &file);
    let (id, token) = submit(
        &app.router,
        "Cannot log in after password reset",
        "I reset my password yesterday and now the login page says my account is locked.",
    )
    .await;
    wait_processed(&app.state, id).await;
    let uri = format!("/api/tickets/{id}/messages");
    let note = r#"{"body": "Internal: checked the lock logs", "internal": true}"#;
    assert_eq!(
        send(&app.router, admin_json(&uri, note)).await.status,
        StatusCode::CREATED
    );
    let reply = r#"{"body": "We unlocked your account; please try again."}"#;
    assert_eq!(
        send(&app.router, admin_json(&uri, reply)).await.status,
        StatusCode::CREATED
    );
    add_user(&app, "carol", Role::Agent, "a long enough password");
    let assign = r#"{"user": "carol"}"#;
    let r = send(
        &app.router,
        admin_json(&format!("/api/tickets/{id}/assign"), assign),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = send(
        &app.router,
        admin_post(&format!("/api/tickets/{id}/resolve")),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.body);
    let (hacked, _) = submit(
        &app.router,
        "My account was hacked",
        "Someone logged into my account from another country and changed my email. Urgent!",
    )
    .await;

    // Until the first ticket's messages are all in, and every refused
    // message was delivered later (the refusals may have hit the second
    // ticket, whose messages go their own way).
    let records = rx
        .wait_for("created … resolved, and the retries", |r| {
            let refused_then_delivered = r
                .iter()
                .filter(|x| x["path"] == "/hook" && x["status"] == 503)
                .all(|x| {
                    r.iter()
                        .any(|y| y["webhook_id"] == x["webhook_id"] && y["status"] == 200)
                });
            refused_then_delivered
                && types_of(&delivered(r), id).contains(&"ticket.resolved".to_string())
        })
        .await;
    // Every request carried a signature Python verified.
    assert!(
        records.iter().all(|r| r["verified"] == true),
        "{records:#?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["content_type"] == "application/json")
    );
    // The first two tries were answered 503 with Retry-After: 1; each
    // message refused then came through later, with the same id.
    let first = &records[0]["webhook_id"];
    assert!(
        first.as_str().is_some_and(|s| s.starts_with("msg_")),
        "{first}"
    );
    let hook: Vec<&Value> = records.iter().filter(|r| r["path"] == "/hook").collect();
    assert_eq!(hook[0]["status"], 503);
    assert_eq!(hook[1]["status"], 503);
    for (i, refused) in hook.iter().enumerate().take(2) {
        let again = hook[i + 1..]
            .iter()
            .find(|r| r["webhook_id"] == refused["webhook_id"] && r["status"] == 200);
        assert!(
            again.is_some(),
            "{} was not retried: {hook:#?}",
            refused["webhook_id"]
        );
    }
    // Each message went through once.
    let mut ids: Vec<&str> = hook
        .iter()
        .filter(|r| r["status"] == 200)
        .map(|r| r["webhook_id"].as_str().expect("id"))
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "a message was delivered twice");
    // In order, and the internal note sent nothing.
    let bodies = delivered(&records);
    let types = types_of(&bodies, id);
    assert_eq!(
        types.first().map(String::as_str),
        Some("ticket.created"),
        "{types:?}"
    );
    assert_eq!(
        types.get(1).map(String::as_str),
        Some("ticket.classified"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("ticket.resolved"),
        "{types:?}"
    );
    let messages: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["type"] == "ticket.message")
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m["data"]["message"]["body"] == "We unlocked your account; please try again.")
    );
    assert!(
        !messages.iter().any(|m| m["data"]["message"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("Internal"))),
        "an internal note went out: {messages:#?}"
    );
    let assigned = bodies
        .iter()
        .find(|b| b["type"] == "ticket.assigned")
        .expect("ticket.assigned");
    assert_eq!(assigned["data"]["ticket"]["assignee"], "carol");
    let pos = |t: &str| types.iter().position(|x| x == t);
    assert!(pos("ticket.assigned") < pos("ticket.resolved"), "{types:?}");
    // The hacked account escalates, with the reason.
    let records = rx
        .wait_for("the escalation", |r| {
            types_of(&delivered(r), hacked).contains(&"ticket.escalated".to_string())
        })
        .await;
    let bodies = delivered(&records);
    let escalated = bodies
        .iter()
        .find(|b| b["type"] == "ticket.escalated")
        .expect("escalated");
    assert!(
        escalated["data"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{escalated}"
    );
    // The body's shape, and no tracking token anywhere.
    let created = &bodies[0];
    assert_eq!(
        created["data"]["ticket"]["subject"],
        "Cannot log in after password reset"
    );
    assert!(
        created["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
    );
    for r in &records {
        assert!(
            !r["body"].as_str().expect("body").contains(&token),
            "the tracking token leaked"
        );
    }
    // The redirecting endpoint got ticket.created only, and /hook was never
    // reached through its redirect.
    let redirected: Vec<&Value> = records
        .iter()
        .filter(|r| r["path"] == "/redirect")
        .collect();
    assert!(!redirected.is_empty());
    assert!(redirected.iter().all(|r| r["status"] == 307));
    let via_redirect = records.iter().filter(|r| r["path"] == "/hook").count();
    assert_eq!(via_redirect, hook.len());
    let log = app.state.store.webhook_log(100).expect("log");
    let r = log
        .iter()
        .find(|d| d.endpoint.ends_with("/redirect"))
        .expect("a delivery to /redirect");
    assert_eq!(r.last_status, Some(307));
    assert_ne!(r.state, "delivered");
    // Retention takes the outgoing copies (subject, messages) with the ticket.
    let cutoff = smart_support::clock::after(Duration::from_secs(60));
    let n = app
        .state
        .store
        .apply_retention(&cutoff, smart_support::config::RetentionMode::Delete)
        .expect("retention");
    assert_eq!(n, 1);
    let log = app.state.store.webhook_log(100).expect("log");
    assert!(log.iter().all(|d| d.ticket_id != id), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_endpoint_is_disabled_nothing_is_lost_across_a_restart_and_replay_resends() {
    let dir = TempDir::new().expect("tempdir");
    // A port with nobody listening, for now.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let file = write_config(
        dir.path(),
        &format!(
            r#"
[[webhooks]]
url = "{url}"
secret = "{SECRET}"
events = ["ticket.created", "ticket.classified"]

[webhook_delivery]
retry_delays = ["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
disable_after = 3
"#
        ),
    );
    let data = dir.path().to_path_buf();
    let app = app_with(dir, &file);
    let (id, _) = submit(
        &app.router,
        "Refund for a double charge",
        "I was charged twice in March.",
    )
    .await;
    wait_processed(&app.state, id).await;
    // Three refused connections in a row disable the endpoint.
    let mut disabled = false;
    for _ in 0..300 {
        let st = app.state.store.webhook_endpoint_state(&url).expect("state");
        if st.disabled_at.is_some() {
            assert!(
                st.disabled_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("3 failures"))
            );
            assert_eq!(st.delivered, 0);
            disabled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(disabled, "the endpoint was not disabled");
    let health = send(&app.router, admin_get("/health")).await.json();
    assert!(
        health["webhooks"][0]["state"]["disabled_at"].is_string(),
        "{health}"
    );

    // Stop the service; start the receiver; start the service again.
    app.state.shutdown.trigger();
    let TestApp { dir, lock, .. } = app;
    drop(lock);
    let rx = Receiver::start(&data, port, 0, 503);
    let app = app_with(dir, &file);
    // Still disabled: nothing goes out until an admin enables it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rx.records().is_empty(), "{:#?}", rx.records());
    add_user(&app, "alice", Role::Admin, "correct horse battery");
    let (session, csrf) = sign_in(&app, "alice", "correct horse battery")
        .await
        .expect("signed in");
    let page = send(&app.router, with_cookie("/admin/webhooks", &session)).await;
    assert_eq!(page.status, StatusCode::OK);
    let shown = format!("127.0.0.1:{port}");
    assert!(
        page.body.contains("disabled") && page.body.contains(&shown),
        "{}",
        page.body
    );
    assert!(!page.body.contains(SECRET), "the secret is on the page");
    // Without the CSRF token the form is refused.
    let body = format!("csrf=wrong&url={}", url_encode(&url));
    let r = send(
        &app.router,
        form_req("/admin/webhooks/enable", &body, Some(&session)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let body = format!("csrf={csrf}&url={}", url_encode("http://elsewhere.test/"));
    let r = send(
        &app.router,
        form_req("/admin/webhooks/enable", &body, Some(&session)),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let body = format!("csrf={csrf}&url={}", url_encode(&url));
    let r = send(
        &app.router,
        form_req("/admin/webhooks/enable", &body, Some(&session)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let records = rx
        .wait_for("what waited", |r| types_of(&delivered(r), id).len() == 2)
        .await;
    assert_eq!(
        types_of(&delivered(&records), id),
        ["ticket.created", "ticket.classified"]
    );
    assert!(records.iter().all(|r| r["verified"] == true));
    let log = app.state.store.webhook_log(10).expect("log");
    assert!(log.iter().all(|d| d.state == "delivered"), "{log:#?}");
    assert!(log.iter().any(|d| d.attempts >= 4), "{log:#?}");

    // Replay sends the same message again, with the same id.
    let first = log.iter().min_by_key(|d| d.id).expect("a delivery");
    let body = format!("csrf={csrf}&id={}", first.id);
    let r = send(
        &app.router,
        form_req("/admin/webhooks/replay", &body, Some(&session)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let records = rx.wait_for("the replay", |r| r.len() == 3).await;
    assert_eq!(
        records[2]["webhook_id"],
        Value::String(first.msg_id.clone())
    );
    let body = format!("csrf={csrf}&id=999999");
    let r = send(
        &app.router,
        form_req("/admin/webhooks/replay", &body, Some(&session)),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Agents cannot see the page.
    add_user(&app, "bob", Role::Agent, "another long password");
    let (bob, _) = sign_in(&app, "bob", "another long password")
        .await
        .expect("bob");
    let r = send(&app.router, with_cookie("/admin/webhooks", &bob)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[test]
fn a_bad_configuration_file_stops_the_service_with_the_key_named() {
    let dir = TempDir::new().expect("tempdir");
    let file = write_config(
        dir.path(),
        "[[webhooks]]\nurl = \"file:///etc/passwd\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
    );
    let mut cfg = config(&dir);
    cfg.config_file = Some(file.clone());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let err = rt
        .block_on(async {
            smart_support::app::build(cfg, smart_support::models::LoadedModels::rules_only())
        })
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("webhooks[0].url") && err.contains("smart-support.toml"),
        "{err}"
    );
    let mut cfg = config(&dir);
    cfg.config_file = Some(dir.path().join("missing.toml"));
    let err = rt
        .block_on(async {
            smart_support::app::build(cfg, smart_support::models::LoadedModels::rules_only())
        })
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("missing.toml"), "{err}");
}

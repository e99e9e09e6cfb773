//! E-mail notifications end to end, through a real SMTP conversation with a
//! sink on loopback (`tests/support/smtp_sink.py`, which decodes each
//! message with Python's email package): the customer's mails (received
//! with the tracking link, a public staff reply, resolved), the assignee's
//! mail, no mail for an internal note or a ticket without an address, a
//! bad address refused at intake, mails queued while the server is down
//! sent after a restart, a permanent refusal not retried.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::Value;
use smart_support::ticket::Role;
use tempfile::TempDir;

fn app_for(dir: TempDir, port: u16) -> TestApp {
    let file = dir.path().join("smart-support.toml");
    std::fs::write(
        &file,
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"Support <support@example.test>\"\n\
             retry_delays = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]\n"
        ),
    )
    .expect("config");
    let mut cfg = config(&dir);
    cfg.config_file = Some(file);
    cfg.public_url = Some("http://support.example.test".into());
    start_with(dir, cfg)
}

async fn submit_with(app: &TestApp, subject: &str, email: Option<&str>) -> (StatusCode, Value) {
    let mut body = serde_json::json!({
        "subject": subject,
        "description": "The export button does nothing since this morning.",
    });
    if let Some(e) = email {
        body["email"] = e.into();
    }
    let r = send(
        &app.router,
        json_req(Method::POST, "/api/tickets", &body.to_string()),
    )
    .await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_and_assignees_get_their_mails() {
    let dir = TempDir::new().expect("tempdir");
    let sink = SmtpSink::start(dir.path(), 0);
    let app = app_for(dir, sink.port());
    // A bad address is refused, naming the field; nothing is stored.
    let (status, v) = submit_with(&app, "Export broken", Some("not an address")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("email")),
        "{v}"
    );
    // Without an address: no mail.
    let (status, _) = submit_with(&app, "No address given", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, v) = submit_with(&app, "Export broken", Some("ana@customer.test")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_i64().expect("id");
    let token = v["token"].as_str().expect("token").to_string();

    let mails = sink.wait_for(1).await;
    let received = &mails[0];
    assert_eq!(received["to"], serde_json::json!(["<ana@customer.test>"]));
    assert!(
        received["header_from"]
            .as_str()
            .is_some_and(|f| f.contains("support@example.test"))
    );
    assert!(
        received["subject"]
            .as_str()
            .is_some_and(|s| s.contains("Export broken")),
        "{received}"
    );
    let tracking = format!("http://support.example.test/t/{token}");
    assert!(
        received["body"]
            .as_str()
            .is_some_and(|b| b.contains(&tracking)),
        "{received}"
    );

    // An internal note sends nothing; a public reply does.
    wait_processed(&app.state, id).await;
    let uri = format!("/api/tickets/{id}/messages");
    let note = r#"{"body": "Internal: customer is on the old plan", "internal": true}"#;
    assert_eq!(
        send(&app.router, admin_json(&uri, note)).await.status,
        StatusCode::CREATED
    );
    let reply = r#"{"body": "Please clear the cache & try again <today>."}"#;
    assert_eq!(
        send(&app.router, admin_json(&uri, reply)).await.status,
        StatusCode::CREATED
    );
    let mails = sink.wait_for(2).await;
    let body = mails[1]["body"].as_str().expect("body");
    assert!(
        body.contains("Please clear the cache & try again <today>."),
        "{body}"
    );
    assert!(body.contains(&tracking));
    assert!(
        mails
            .iter()
            .all(|m| !m["data"].as_str().unwrap_or("").contains("old plan"))
    );

    // Assigned: to the staff user's address, without the tracking link.
    add_user(&app, "carol", Role::Agent, "a long enough password");
    // Set on the users page (an admin, with the CSRF token); checked.
    add_user(&app, "alice", Role::Admin, "correct horse battery");
    let (session, csrf) = sign_in(&app, "alice", "correct horse battery")
        .await
        .expect("in");
    let post = |addr: &str| {
        let body = format!("csrf={csrf}&email={}", url_encode(addr));
        form_req("/admin/users/carol/email", &body, Some(&session))
    };
    let r = send(&app.router, post("carol at staff")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = send(&app.router, post("carol@staff.test")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("carol@staff.test"));
    let r = send(
        &app.router,
        admin_json(&format!("/api/tickets/{id}/assign"), r#"{"user": "carol"}"#),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.body);
    let mails = sink.wait_for(3).await;
    assert_eq!(mails[2]["to"], serde_json::json!(["<carol@staff.test>"]));
    let body = mails[2]["body"].as_str().expect("body");
    assert!(
        body.contains(&format!("/admin/tickets/{id}")) && !body.contains(&token),
        "{body}"
    );

    // Resolved.
    let r = send(
        &app.router,
        admin_post(&format!("/api/tickets/{id}/resolve")),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.body);
    let mails = sink.wait_for(4).await;
    assert!(
        mails[3]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("resolved")),
        "{}",
        mails[3]
    );
    assert!(mails.iter().all(|m| m["to"] != serde_json::json!([])));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sink.mails().len(), 4, "{:#?}", sink.mails());
    let counts = app.state.store.mail_counts().expect("counts");
    assert_eq!((counts.sent, counts.pending, counts.failed), (4, 0, 0));
    // The staff health report shows the queue.
    let health = send(&app.router, admin_get("/health")).await.json();
    assert_eq!(health["mail"]["sent"], 4, "{health}");
    // Retention takes the mails (address and words) with the ticket.
    let cutoff = smart_support::clock::after(Duration::from_secs(60));
    let n = app
        .state
        .store
        .apply_retention(&cutoff, smart_support::config::RetentionMode::Anonymise)
        .expect("retention");
    assert_eq!(n, 1);
    let counts = app.state.store.mail_counts().expect("counts");
    assert_eq!((counts.sent, counts.pending, counts.failed), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_waits_for_a_down_server_across_a_restart_and_a_refusal_is_final() {
    let dir = TempDir::new().expect("tempdir");
    let data = dir.path().to_path_buf();
    let port = free_port();
    let app = app_for(dir, port);
    let (status, v) = submit_with(&app, "Invoice missing", Some("ben@customer.test")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, _) = submit_with(&app, "Bounce me", Some("reject@customer.test")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The server is down: the mails wait, with the reason.
    let mut waited = false;
    for _ in 0..300 {
        let c = app.state.store.mail_counts().expect("counts");
        if c.pending == 2 && c.last_error.is_some() {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(waited, "{:?}", app.state.store.mail_counts());
    app.state.shutdown.trigger();
    let TestApp { dir, lock, .. } = app;
    drop(lock);

    let sink = SmtpSink::start(&data, port);
    let app = app_for(dir, port);
    let mails = sink.wait_for(1).await;
    assert_eq!(mails[0]["to"], serde_json::json!(["<ben@customer.test>"]));
    // The 550 for reject@ is final: failed, not retried.
    let mut failed = false;
    for _ in 0..300 {
        let c = app.state.store.mail_counts().expect("counts");
        if c.failed == 1 && c.sent == 1 && c.pending == 0 {
            failed = true;
            assert!(
                c.last_error
                    .is_some_and(|e| e.contains("550") || e.contains("no such user"))
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed, "{:?}", app.state.store.mail_counts());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.mails().len(), 1);
}

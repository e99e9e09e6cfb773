//! Service levels on a running app: the `sla` object of
//! `GET /api/tickets/{id}` from the configuration file's policies, on wall
//! time: due times, the first response met by a public staff message (not
//! an internal note), Pending pausing the clocks, and a breach reported
//! with the moment it happened. (Business hours, holidays, daylight saving
//! and pauses are unit-tested in `src/sla/`.)

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use common::*;
use serde_json::Value;
use tempfile::TempDir;

fn app(policy: &str) -> TestApp {
    let dir = TempDir::new().expect("tempdir");
    let file = dir.path().join("smart-support.toml");
    let body: String = ["Critical", "High", "Medium", "Low"]
        .iter()
        .map(|p| format!("[sla.{p}]\n{policy}\n"))
        .collect();
    std::fs::write(&file, body).expect("config");
    let mut cfg = config(&dir);
    cfg.config_file = Some(file);
    start_with(dir, cfg)
}

async fn sla(app: &TestApp, id: i64) -> Value {
    send(&app.router, admin_get(&format!("/api/tickets/{id}")))
        .await
        .json()["sla"]
        .clone()
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().expect("a time").parse().expect("timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_times_met_paused_and_breached() {
    let app = app("first_response = \"1h\"\nresolution = \"4h\"");
    let (id, token) = submit(
        &app.router,
        "Login fails",
        "I cannot log in since the update.",
    )
    .await;
    let rec = wait_processed(&app.state, id).await;
    let created: jiff::Timestamp = rec.created_at.parse().expect("created");
    let s = sla(&app, id).await;
    assert_eq!(
        ts(&s["first_response_due"]),
        created + jiff::SignedDuration::from_hours(1),
        "{s}"
    );
    assert_eq!(
        ts(&s["resolution_due"]),
        created + jiff::SignedDuration::from_hours(4)
    );
    assert_eq!(s["breached"], serde_json::json!([]));
    assert_eq!(s["paused"], false);
    assert!(s["first_response_met"].is_null());
    // An internal note is no response; a public staff message is.
    let uri = format!("/api/tickets/{id}/messages");
    let note = r#"{"body": "checking", "internal": true}"#;
    assert_eq!(
        send(&app.router, admin_json(&uri, note)).await.status,
        StatusCode::CREATED
    );
    assert!(sla(&app, id).await["first_response_met"].is_null());
    let reply = r#"{"body": "Please try again now."}"#;
    assert_eq!(
        send(&app.router, admin_json(&uri, reply)).await.status,
        StatusCode::CREATED
    );
    assert!(sla(&app, id).await["first_response_met"].is_string());
    // Pending: the clocks stand still, and the resolution due time moves on.
    let pending = req(Method::PATCH, &format!("/api/tickets/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"status": "Pending"}"#))
        .expect("request");
    assert_eq!(send(&app.router, pending).await.status, StatusCode::OK);
    let before = ts(&sla(&app, id).await["resolution_due"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = sla(&app, id).await;
    assert_eq!(s["paused"], true, "{s}");
    assert!(ts(&s["resolution_due"]) > before, "{s}");
    // The customer answers: running again.
    let answer = json_req(
        Method::POST,
        &format!("/api/t/{token}/messages"),
        r#"{"body": "Still failing"}"#,
    );
    assert_eq!(send(&app.router, answer).await.status, StatusCode::CREATED);
    assert_eq!(sla(&app, id).await["paused"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_first_response_is_reported_with_its_time() {
    let app = app("first_response = \"1s\"");
    let (id, _) = submit(&app.router, "Printer", "The printer is offline.").await;
    let rec = wait_processed(&app.state, id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = sla(&app, id).await;
    assert_eq!(s["breached"], serde_json::json!(["first_response"]), "{s}");
    let created: jiff::Timestamp = rec.created_at.parse().expect("created");
    assert_eq!(
        ts(&s["breached_at"][0]),
        created + jiff::SignedDuration::from_secs(1)
    );
    // Without a policy for the priority, or without [sla], no object.
    let plain = start();
    let (id, _) = submit(&plain.router, "Printer", "The printer is offline.").await;
    wait_processed(&plain.state, id).await;
    assert!(sla(&plain, id).await.is_null());
}

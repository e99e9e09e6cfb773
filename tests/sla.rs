//! Service levels on a running app: the `sla` object of
//! `GET /api/tickets/{id}` from the configuration file's policies, on wall
//! time: due times, the first response met by a public staff message (not
//! an internal note), Pending pausing the clocks, and a breach reported
//! with the moment it happened, recorded once, escalating, reassigning to
//! the policy's group and, at the second level, mailing the admins; the
//! dashboard's countdowns, at-risk filter and compliance chart. (Business hours, holidays, daylight saving
//! and pauses are unit-tested in `src/sla/`.)

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use common::*;
use serde_json::Value;
use smart_support::store::UserChange;
use smart_support::ticket::Role;
use tempfile::TempDir;

fn app(policy: &str) -> TestApp {
    app_in(TempDir::new().expect("tempdir"), policy, "")
}

/// An app whose every priority has `policy`, with `extra` in the file.
fn app_in(dir: TempDir, policy: &str, extra: &str) -> TestApp {
    let file = dir.path().join("smart-support.toml");
    let body: String = ["Critical", "High", "Medium", "Low"]
        .iter()
        .map(|p| format!("[sla.{p}]\n{policy}\n"))
        .collect();
    std::fs::write(&file, format!("{body}{extra}")).expect("config");
    let mut cfg = config(&dir);
    cfg.config_file = Some(file);
    start_with(dir, cfg)
}

fn events(app: &TestApp, id: i64, kind: &str) -> Vec<(String, String)> {
    app.state
        .store
        .get(id)
        .expect("ticket")
        .events
        .iter()
        .filter(|e| e.kind.as_str() == kind)
        .map(|e| (e.detail.clone(), e.at.clone()))
        .collect()
}

async fn wait_for_event(app: &TestApp, id: i64, kind: &str) -> Vec<(String, String)> {
    for _ in 0..300 {
        let e = events(app, id, kind);
        if !e.is_empty() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {kind} event on ticket {id}");
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
    // The stored clocks follow the change: the dashboard row now counts
    // down to the resolution.
    let mut row = Value::Null;
    for _ in 0..100 {
        row = send(&app.router, admin_get("/api/tickets")).await.json()["tickets"][0].clone();
        if row["sla_target"] == "resolution" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(row["sla_target"], "resolution", "{row}");
    assert_eq!(
        ts(&row["sla_due"]),
        created + jiff::SignedDuration::from_hours(4)
    );
    assert_eq!(
        (row["sla_breached"].clone(), row["sla_at_risk"].clone()),
        (false.into(), false.into())
    );
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

const NOWHERE: &str = "http://127.0.0.1:9/hook";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_is_recorded_once_escalates_and_notifies() {
    let dir = TempDir::new().expect("tempdir");
    let extra = format!(
        "[sla_options]\ncheck_every = \"1s\"\nat_risk = 0.5\n\
         [[webhooks]]\nurl = \"{NOWHERE}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         events = [\"sla.at_risk\", \"sla.breached\", \"ticket.escalated\"]\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = 9\nfrom = \"support@example.test\"\n"
    );
    let app = app_in(dir, "first_response = \"1s\"\nresolution = \"8s\"", &extra);
    add_user(
        &app,
        "root",
        smart_support::ticket::Role::Admin,
        "a long enough password",
    );
    app.state
        .store
        .update_user(
            "root",
            smart_support::store::UserChange::Email(Some("root@staff.test".into())),
        )
        .expect("email");
    let (id, _) = submit(&app.router, "Printer", "The printer is offline.").await;
    let rec = wait_processed(&app.state, id).await;
    let breached = wait_for_event(&app, id, "sla_breached").await;
    let created: jiff::Timestamp = rec.created_at.parse().expect("created");
    assert_eq!(breached.len(), 1);
    assert_eq!(breached[0].0, "first_response");
    assert_eq!(
        ts(&Value::String(breached[0].1.clone())),
        created + jiff::SignedDuration::from_secs(1)
    );
    // Escalated, saying why, and recorded as the service level's doing.
    let v = send(&app.router, admin_get(&format!("/api/tickets/{id}")))
        .await
        .json();
    assert_eq!(v["status"], "Escalated", "{v}");
    let escalations = events(&app, id, "escalated");
    assert!(
        escalations
            .iter()
            .any(|(d, _)| d == "service level missed: first response"),
        "{escalations:?}"
    );
    let by_sla = v["history"]
        .as_array()
        .expect("history")
        .iter()
        .any(|h| h["by"] == "sla" && h["to"] == "Escalated");
    assert!(by_sla, "{v}");
    // Half a target's time used: at risk (the first response was, before
    // it was missed; the 8 s resolution after 4 s), each once.
    for _ in 0..100 {
        if events(&app, id, "sla_at_risk")
            .iter()
            .any(|(t, _)| t == "resolution")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at_risk = events(&app, id, "sla_at_risk");
    assert!(
        at_risk.iter().any(|(t, _)| t == "resolution"),
        "{at_risk:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let breached = events(&app, id, "sla_breached");
    let first = breached
        .iter()
        .filter(|(t, _)| t == "first_response")
        .count();
    assert_eq!(first, 1, "recorded once: {breached:?}");
    let at_risk = events(&app, id, "sla_at_risk");
    assert_eq!(
        at_risk.iter().filter(|(t, _)| t == "resolution").count(),
        1,
        "{at_risk:?}"
    );
    // The webhook messages and the admin's mail are queued (their servers
    // are down here; delivery itself is tested in webhooks.rs and mail.rs).
    let log = app.state.store.webhook_log(50).expect("log");
    for event in ["sla.breached", "sla.at_risk", "ticket.escalated"] {
        assert!(
            log.iter().any(|d| d.event == event && d.ticket_id == id),
            "{event}: {log:#?}"
        );
    }
    assert!(app.state.store.mail_counts().expect("mail").pending >= 1);
    // The list marks it and filters on it.
    let listed = send(&app.router, admin_get("/api/tickets?sla=breached"))
        .await
        .json();
    let ids: Vec<i64> = listed["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|t| t["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.contains(&id), "{listed}");
    let all = listed["tickets"].as_array().expect("tickets");
    assert!(all.iter().all(|t| t["sla_breached"] == true), "{listed}");
    let everyone = send(&app.router, admin_get("/api/tickets")).await.json();
    assert_eq!(everyone["tickets"][0]["sla_breached"], true, "{everyone}");
    let bad = send(&app.router, admin_get("/api/tickets?sla=soon")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // The ticket page says so.
    let (session, _) = sign_in(&app, "root", "a long enough password")
        .await
        .expect("in");
    let page = send(
        &app.router,
        with_cookie(&format!("/admin/tickets/{id}"), &session),
    )
    .await;
    assert!(page.body.contains("Service level missed"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_during_downtime_is_recorded_at_start_with_its_real_time() {
    let dir = TempDir::new().expect("tempdir");
    let slow = "[sla_options]\ncheck_every = \"1h\"\n";
    let app = app_in(dir, "first_response = \"1s\"", slow);
    let (id, _) = submit(&app.router, "Printer", "The printer is offline.").await;
    let rec = wait_processed(&app.state, id).await;
    app.state.shutdown.trigger();
    let TestApp { dir, lock, .. } = app;
    drop(lock);
    // Down past the due time; the next start records the breach at once.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let app = app_in(dir, "first_response = \"1s\"", slow);
    let breached = wait_for_event(&app, id, "sla_breached").await;
    let created: jiff::Timestamp = rec.created_at.parse().expect("created");
    assert_eq!(
        ts(&Value::String(breached[0].1.clone())),
        created + jiff::SignedDuration::from_secs(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_goes_to_the_group_and_then_to_the_admins() {
    let dir = TempDir::new().expect("tempdir");
    let sink = SmtpSink::start(dir.path(), 0);
    let extra = format!(
        "[groups]\nleads = [\"lead1\", \"Lead2\", \"nobody\"]\n\
         [sla_options]\ncheck_every = \"1s\"\nat_risk = 0.5\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"support@example.test\"\n\
         retry_delays = [\"1s\", \"1s\", \"1s\"]\n",
        sink.port()
    );
    let policy = "first_response = \"4s\"\nresolution = \"1h\"\n\
                  escalate_to = \"leads\"\nsecond_level_after = \"2s\"";
    let app = app_in(dir, policy, &extra);
    let password = "a long enough password";
    for (name, role) in [
        ("root", Role::Admin),
        ("lead1", Role::Agent),
        ("lead2", Role::Agent),
    ] {
        add_user(&app, name, role, password);
        let change = UserChange::Email(Some(format!("{name}@staff.test")));
        app.state.store.update_user(name, change).expect("email");
    }
    // lead1 already has an open ticket, so lead2 is the least busy.
    let (busy, _) = submit(&app.router, "Invoice", "The invoice total is wrong.").await;
    wait_processed(&app.state, busy).await;
    app.state
        .store
        .assign(busy, Some("lead1"), "root")
        .expect("assign");
    let (id, _) = submit(&app.router, "Printer", "The printer is offline.").await;
    let rec = wait_processed(&app.state, id).await;
    let created: jiff::Timestamp = rec.created_at.parse().expect("created");
    // Before the miss: the row counts down to the first response, and past
    // half its time it is listed as at risk.
    let row = |v: &Value| {
        v["tickets"]
            .as_array()
            .expect("tickets")
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
    };
    let listed = send(&app.router, admin_get("/api/tickets")).await.json();
    let mine = row(&listed).expect("listed");
    assert_eq!(mine["sla_target"], "first_response", "{mine}");
    assert_eq!(
        ts(&mine["sla_due"]),
        created + jiff::SignedDuration::from_secs(4)
    );
    let mut at_risk = None;
    for _ in 0..80 {
        let v = send(&app.router, admin_get("/api/tickets?sla=at_risk"))
            .await
            .json();
        if let Some(r) = row(&v) {
            at_risk = Some((r, v));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (r, v) = at_risk.expect("listed as at risk before the miss");
    assert_eq!(r["sla_at_risk"], true);
    assert!(
        v["tickets"]
            .as_array()
            .expect("tickets")
            .iter()
            .all(|t| t["sla_at_risk"] == true)
    );
    let (session, _) = sign_in(&app, "root", password).await.expect("in");
    let page = send(&app.router, with_cookie("/admin/tickets", &session)).await;
    assert!(page.body.contains("SLA at risk"), "{}", page.body);
    assert!(
        page.body.contains(&format!(
            "data-due=\"{}\"",
            mine["sla_due"].as_str().expect("due")
        )),
        "{}",
        page.body
    );
    // The miss: escalated, and assigned to the group's least busy member
    // (by the service level), who is mailed.
    wait_for_event(&app, id, "sla_breached").await;
    let v = send(&app.router, admin_get(&format!("/api/tickets/{id}")))
        .await
        .json();
    assert_eq!(
        (v["status"].as_str(), v["assignee"].as_str()),
        (Some("Escalated"), Some("lead2")),
        "{v}"
    );
    let reassigned = v["history"]
        .as_array()
        .expect("history")
        .iter()
        .any(|h| h["field"] == "assignee" && h["to"] == "lead2" && h["by"] == "sla");
    assert!(reassigned, "{v}");
    let busy_rec = app.state.store.get(busy).expect("busy");
    assert_eq!(
        busy_rec.assignee.as_deref(),
        Some("lead1"),
        "a member keeps it"
    );
    // The second level, two seconds after the miss and still unanswered:
    // recorded at its own time, and the admins are mailed.
    let second = wait_for_event(&app, id, "sla_second_level").await;
    assert_eq!(second.len(), 1);
    assert_eq!(
        ts(&Value::String(second[0].1.clone())),
        created + jiff::SignedDuration::from_secs(6)
    );
    // lead1: assigned, its breach; lead2: the breach; root: two second levels.
    let mails = sink.wait_for(5).await;
    let to = |who: &str| {
        mails
            .iter()
            .filter(|m| m["to"].to_string().contains(who))
            .map(|m| m["subject"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let lead = to("lead2@staff.test");
    assert!(
        lead.iter()
            .any(|s| s.contains("missed") && s.contains(&format!("#{id}"))),
        "{mails:#?}"
    );
    let admin = to("root@staff.test");
    assert!(
        admin.iter().any(|s| s.contains("still missed")),
        "{mails:#?}"
    );
    assert!(
        to("lead1@staff.test")
            .iter()
            .all(|s| !s.contains(&format!("#{id}"))),
        "{mails:#?}"
    );
    let log = app.state.store.webhook_log(50).expect("log");
    assert!(
        log.is_empty(),
        "no endpoint configured, nothing queued: {log:?}"
    );
    // The dashboard: the missed filter, and the compliance chart counts it.
    let page = send(
        &app.router,
        with_cookie("/admin/tickets?sla=breached", &session),
    )
    .await;
    assert!(page.body.contains("SLA missed"), "{}", page.body);
    assert!(page.body.contains("id=\"chart-sla\""), "{}", page.body);
    let monday = crate_monday(created);
    assert!(
        page.body.contains(&format!("week of {monday}, ")),
        "{}",
        page.body
    );
    assert!(page.body.contains(" met (0%)"), "{}", page.body);
}

/// The Monday (UTC) of the week of `t`.
fn crate_monday(t: jiff::Timestamp) -> String {
    let date = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    let back = date.weekday().to_monday_zero_offset();
    (date - jiff::Span::new().days(i64::from(back))).to_string()
}

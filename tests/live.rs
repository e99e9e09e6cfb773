//! Live updates (server-sent events), /metrics, request ids, the dashboard's
//! charts and the CSV export.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// An open event stream read frame by frame.
struct Stream {
    body: Body,
    buf: String,
    /// The id of the last event read that had one.
    last_id: Option<i64>,
}

impl Stream {
    async fn open(router: &axum::Router, req: Request<Body>) -> (StatusCode, Option<Stream>) {
        let resp = router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        if status != StatusCode::OK {
            return (status, None);
        }
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/event-stream",
            "SSE content type"
        );
        (
            status,
            Some(Stream {
                body: resp.into_body(),
                buf: String::new(),
                last_id: None,
            }),
        )
    }

    /// The next event (name, data), skipping keep-alive comments.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        self.last_id = Some(v.trim().parse().expect("numeric event id"));
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return (
                    name,
                    serde_json::from_str(&data).expect("event data is JSON"),
                );
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_stream_starts_with_a_snapshot_and_follows_the_ticket() {
    let app = start();
    let (id, token) = submit(&app.router, "Where is my parcel", "Order 5 never arrived").await;
    let (st, _) = Stream::open(&app.router, get("/api/t/not-a-real-token/events")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (_, s) = Stream::open(&app.router, get(&format!("/api/t/{token}/events"))).await;
    let mut s = s.expect("stream");
    // The first event is the current state, whatever it is by now.
    let (name, first) = s.next().await;
    assert_eq!(name, "status");
    assert!(
        first["timeline"].is_array() && first["progress"].is_number(),
        "{first}"
    );
    let mut last = first;
    while last["processing"] != "done" {
        last = s.next().await.1;
    }
    assert!(last["progress"].as_i64().is_some_and(|p| p >= 75), "{last}");
    wait_processed(&app.state, id).await;

    // A change by the customer arrives as the next event.
    let r = send(
        &app.router,
        req(Method::POST, &format!("/api/t/{token}/resolve"))
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (_, ev) = s.next().await;
    assert_eq!(ev["status"], "Resolved", "{ev}");
    let r = send(
        &app.router,
        json_req(
            Method::POST,
            &format!("/api/t/{token}/rating"),
            r#"{"stars": 4}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (_, ev) = s.next().await;
    assert_eq!(ev["status"], "Resolved");

    // Event ids are the change feed's, growing.
    let newest = app.state.store.last_event_of(id).expect("events");
    assert!(
        s.last_id.is_some_and(|l| l > 2 && l <= newest),
        "{:?}",
        s.last_id
    );
    // Reconnecting (as a browser does, with Last-Event-ID) starts from the
    // current state, which reflects the ticket's newest event.
    let again = req(Method::GET, &format!("/api/t/{token}/events"))
        .header("last-event-id", "2")
        .body(Body::empty())
        .expect("req");
    let (_, s2) = Stream::open(&app.router, again).await;
    let mut s2 = s2.expect("stream");
    let (_, snap) = s2.next().await;
    assert_eq!(snap["status"], "Resolved");
    assert_eq!(s2.last_id, Some(newest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_dropped_streams_leave_nothing_behind() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    // Above the stream caps (their own test is in hardening.rs).
    cfg.limits.max_streams_per_ticket = 600;
    cfg.limits.max_streams = 600;
    cfg.limits.max_connections = 2000;
    let app = start_with(dir, cfg);
    let (_, token) = submit(&app.router, "Login", "Cannot log in").await;
    let worker = &app.state.worker;
    let base_receivers = worker.updates.receiver_count();
    let metrics = tokio::runtime::Handle::current().metrics();
    let base_tasks = metrics.num_alive_tasks();
    let mut streams = Vec::new();
    for _ in 0..500 {
        let (_, s) = Stream::open(&app.router, get(&format!("/api/t/{token}/events"))).await;
        let mut s = s.expect("stream");
        s.next().await;
        streams.push(s);
    }
    // Trackers listen to their own ticket only, not to every update.
    assert_eq!(worker.ticket_subscribers(), (500, 1));
    assert_eq!(worker.updates.receiver_count(), base_receivers);
    drop(streams);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        worker.ticket_subscribers(),
        (0, 0),
        "every dropped stream released its subscription, and the ticket's channel went with the last"
    );
    assert!(
        metrics.num_alive_tasks() <= base_tasks,
        "no task left behind: {} > {base_tasks}",
        metrics.num_alive_tasks()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_stream_needs_auth_and_reports_every_change_with_counts() {
    let app = start();
    let (st, _) = Stream::open(&app.router, get("/api/admin/events")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (_, s) = Stream::open(&app.router, admin_get("/api/admin/events")).await;
    let mut s = s.expect("stream");
    let (name, hello) = s.next().await;
    assert_eq!(name, "hello");
    assert!(hello["counts"].is_array(), "{hello}");
    let (id, _) = submit(&app.router, "Refund", "Please refund order 7").await;
    let (name, ev) = s.next().await;
    assert_eq!(name, "ticket");
    assert_eq!(ev["id"], id);
    assert_eq!(ev["kind"], "submitted");
    let total: i64 = ev["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .filter_map(|c| c[1].as_i64())
        .sum();
    assert_eq!(total, 1, "{ev}");
    // Processing follows: started, then the AI result.
    let mut kinds = Vec::new();
    while !kinds.contains(&"ai_completed".to_string()) {
        let (_, ev) = s.next().await;
        kinds.push(ev["kind"].as_str().expect("kind").to_string());
    }
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("processing_started")
    );
}

/// The dashboard stream opened with `Last-Event-ID: last` (or without).
async fn admin_stream(app: &TestApp, last: Option<i64>) -> Stream {
    let mut r = req(Method::GET, "/api/admin/events")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"));
    if let Some(last) = last {
        r = r.header("last-event-id", last.to_string());
    }
    let (st, s) = Stream::open(&app.router, r.body(Body::empty()).expect("req")).await;
    assert_eq!(st, StatusCode::OK);
    s.expect("stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_that_reconnects_with_last_event_id_is_sent_what_it_missed() {
    let app = start();
    let (first, _) = submit(&app.router, "Refund", "Please refund order 7").await;
    wait_processed(&app.state, first).await;
    let mut s = admin_stream(&app, None).await;
    let (name, _) = s.next().await;
    assert_eq!(name, "hello");
    let seen = s.last_id.expect("hello carries where the feed is");
    assert_eq!(seen, app.state.store.last_event_id().expect("feed"));
    drop(s);

    // While it is away: a new ticket, its processing, a staff note.
    let (id, _) = submit(&app.router, "Login", "I cannot log in to my account").await;
    wait_processed(&app.state, id).await;
    let note = admin_json(
        &format!("/api/tickets/{id}/messages"),
        r#"{"body": "Checking the logs", "internal": true}"#,
    );
    assert_eq!(send(&app.router, note).await.status, StatusCode::CREATED);
    let missed = app.state.store.feed_after(seen, 100).expect("feed");
    assert!(missed.len() >= 4, "{missed:?}");

    let mut s = admin_stream(&app, Some(seen)).await;
    assert_eq!(s.next().await.0, "hello");
    for want in &missed {
        let (name, ev) = s.next().await;
        assert_eq!(name, "ticket");
        assert_eq!((ev["id"].as_i64(), s.last_id), (Some(id), Some(want.id)));
        assert_eq!(ev["kind"], serde_json::json!(want.kind));
    }
    let kinds: Vec<_> = missed.iter().map(|e| e.kind).collect();
    use smart_support::ticket::EventKind as K;
    assert_eq!(kinds.first(), Some(&K::Submitted));
    assert_eq!(kinds.last(), Some(&K::Message), "{kinds:?}");
    assert!(kinds.contains(&K::AiCompleted), "{kinds:?}");

    // Live changes follow the replay, ids still growing.
    let r = send(
        &app.router,
        admin_post(&format!("/api/tickets/{id}/resolve")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let before = s.last_id;
    let (_, ev) = s.next().await;
    assert_eq!(ev["kind"], "resolved");
    assert!(s.last_id > before);

    // Too far behind to replay: told to reload everything.
    let m = smart_support::store::NewMessage {
        author: smart_support::store::Author::Customer,
        internal: false,
        ai_assisted: false,
        body: "hello?".into(),
    };
    let now = app.state.store.last_event_id().expect("feed");
    for _ in 0..501 {
        app.state.store.add_message(first, &m, 14).expect("message");
    }
    let mut s = admin_stream(&app, Some(now)).await;
    assert_eq!(s.next().await.0, "resync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_for_admins_only() {
    let app = start();
    let (id, _) = submit(&app.router, "Hacked", "My account was hacked, urgent!").await;
    wait_processed(&app.state, id).await;
    let r = send(&app.router, get("/metrics")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&app.router, admin_get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/plain")),
    );
    let body = &r.body;
    for needle in [
        "http_requests_total{route=\"/api/tickets\",method=\"POST\",status=\"202\"}",
        "tickets_submitted_total",
        "pipeline_agent_duration_seconds_bucket{agent=\"classifier\"",
        "escalations_total",
        "tickets_processed_total{category=\"Security\",priority=\"Critical\"}",
        "tickets_backlog",
        "sse_subscribers",
    ] {
        assert!(body.contains(needle), "missing {needle} in:\n{body}");
    }
    // Routes are patterns: no tracking token ever appears.
    assert!(!body.contains("/t/") || body.contains("/t/{token}"));
}

#[tokio::test]
async fn every_response_has_a_request_id_and_errors_quote_it() {
    let app = start();
    let r = send(&app.router, admin_get("/health")).await;
    let id = r.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(!id.is_empty());
    let r2 = send(&app.router, admin_get("/health")).await;
    assert_ne!(r2.headers["x-request-id"], id.as_str(), "ids differ");
    let r = send(&app.router, get("/api/t/nope")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let header_id = r.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(r.json()["request_id"], header_id.as_str(), "{}", r.body);
    assert_eq!(r.error_code(), "not_found");
    // A client's own id is kept.
    let mine = req(Method::GET, "/api/t/nope")
        .header("x-request-id", "client-abc-1")
        .body(Body::empty())
        .expect("req");
    let r = send(&app.router, mine).await;
    assert_eq!(r.json()["request_id"], "client-abc-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_draws_accessible_charts_and_exports_the_filtered_list() {
    let app = start();
    let mut escalated = 0;
    for (s, d) in [
        (
            "=HYPERLINK(\"http://evil\")",
            "I was charged twice, refund please",
        ),
        ("App crash", "The app crashes on start"),
        ("Hacked", "My account was hacked"),
    ] {
        let (id, _) = submit(&app.router, s, d).await;
        let rec = wait_processed(&app.state, id).await;
        escalated += usize::from(rec.analysis.expect("analysis").escalation.is_some());
    }
    let r = send(&app.router, get("/admin")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "login first");
    let r = send(&app.router, get("/admin/tickets.csv")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "login first");

    let cookie = login(&app).await;
    let page = send(&app.router, with_cookie(get("/admin"), &cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = &page.body;
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 5, "{html}");
    for t in [
        "Tickets per category",
        "Tickets per priority",
        "last 14 days",
        "Share of escalated tickets",
        "Average customer rating",
    ] {
        assert!(html.contains(t), "missing chart {t}");
    }
    assert!(html.contains("role=\"img\"") && html.contains("<desc"));
    assert!(
        html.contains("Security: 1"),
        "category counts in the description"
    );
    let share = format!(
        "{:.0}% escalated ({escalated} of 3 processed",
        100.0 * escalated as f64 / 3.0
    );
    assert!(html.contains(&share), "escalation share {share}");
    assert!(
        html.contains("tickets.csv\" download>Export CSV"),
        "CSV link"
    );

    let csv = send(
        &app.router,
        with_cookie(get("/admin/tickets.csv?category=Refund"), &cookie),
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/csv"))
    );
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "header + the one Refund ticket: {}",
        csv.body
    );
    assert!(lines[0].starts_with("id,created_at,updated_at,status,category,priority"));
    assert!(lines[1].contains(",Refund,"));
    assert!(
        lines[1].ends_with("\"'=HYPERLINK(\"\"http://evil\"\")\""),
        "formulas are neutralised: {}",
        lines[1]
    );
    let all = send(&app.router, with_cookie(get("/admin/tickets.csv"), &cookie)).await;
    assert_eq!(all.body.lines().count(), 4);
}

fn with_cookie(mut r: Request<Body>, cookie: &str) -> Request<Body> {
    r.headers_mut()
        .insert(header::COOKIE, cookie.parse().expect("cookie"));
    r
}

const TEST_PASSWORD: &str = "a-long-admin-password";

/// Signs in through the login form; returns the session cookie header value.
async fn login(app: &TestApp) -> String {
    let hash = smart_support::web::auth::hash_password(TEST_PASSWORD).expect("hash");
    app.state
        .store
        .upsert_user_password("admin", smart_support::ticket::Role::Admin, &hash)
        .expect("set password");
    let router = &app.router;
    let form = send(router, get("/admin/login")).await;
    let csrf_cookie = form
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("ss_login_csrf="))
        .expect("login csrf cookie");
    let csrf_value = csrf_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("value");
    let body = format!(
        "name=admin&password={}&csrf={csrf_value}",
        url_encode(TEST_PASSWORD)
    );
    let cookie_hdr = csrf_cookie.split(';').next().expect("kv").to_string();
    let r = send(router, form_req("/admin/login", &body, Some(&cookie_hdr))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "login: {}", r.body);
    r.cookies()
        .into_iter()
        .find(|c| c.starts_with("ss_session="))
        .and_then(|c| c.split(';').next().map(str::to_string))
        .expect("session cookie")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_another_nodes_commit_is_announced_and_a_cut_listener_reconnects() {
    if !on_postgres() {
        eprintln!("PostgreSQL only (LISTEN/NOTIFY): runs in the PostgreSQL pass");
        return;
    }
    use smart_support::store::Store;
    let dir = tempfile::TempDir::new().expect("tempdir");
    let db = test_db(&dir);
    let (here, there) = (
        Store::open(&db).expect("open"),
        Store::open(&db).expect("open"),
    );
    let heard = here.listen_for_changes().expect("a listener on PostgreSQL");
    let wait = |what: &'static str| {
        let heard = heard.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), heard.notified())
                .await
                .unwrap_or_else(|_| panic!("{what}"));
        }
    };
    wait("the listener says when it is connected").await;
    let ticket = smart_support::ticket::TicketInput {
        subject: "Where is my parcel".into(),
        description: "It has not moved for days.".into(),
    };
    there.create_ticket(&ticket).expect("create");
    wait("another session's commit is announced").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), heard.notified())
            .await
            .is_err(),
        "one commit, one signal"
    );
    // The server ends the listening session: it connects again and says
    // so (the follower then reads what it may have missed).
    let cut = there
        .number_for_test(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .expect("terminate");
    assert_eq!(cut, Some(1));
    wait("the listener connects again").await;
    there.create_ticket(&ticket).expect("create");
    wait("and hears the next commit").await;
}

#[test]
fn leases_and_heartbeats_are_written_in_the_database_servers_time() {
    use smart_support::store::Store;
    let dir = tempfile::TempDir::new().expect("tempdir");
    let store = Store::open(&test_db(&dir)).expect("open");
    let skew = store.clock_skew_ms();
    if on_postgres() {
        // The test server runs on this machine: one clock, read across a
        // round trip (a wrong unit or sign would be off by far more).
        assert!(skew.abs() < 2_000, "{skew} ms");
    } else {
        assert_eq!(skew, 0, "SQLite's clock is this machine's");
    }
}

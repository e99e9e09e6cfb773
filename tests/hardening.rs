//! The hardening findings (issue: "Hardening under attack and faults"), one
//! test or more each: login throttling, intake limits and idempotency,
//! stream caps, reads beside writes, storage faults, leaks, operations.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use common::*;
use serde_json::json;
use smart_support::store::{Processing, Store};
use smart_support::ticket::TicketInput;
use smart_support::web::auth;

const PASSWORD: &str = "hardening-admin-password";

fn set_password(app: &TestApp) {
    let hash = auth::hash_password(PASSWORD).expect("hash");
    app.state
        .store
        .upsert_user_password("admin", smart_support::ticket::Role::Admin, &hash)
        .expect("set");
}

async fn login_csrf(app: &TestApp) -> String {
    common::login_csrf(&app.router).await
}

async fn try_login(app: &TestApp, csrf: &str, ip: &str, password: &str) -> Resp {
    send(&app.router, from_ip(login_req("admin", password, csrf), ip)).await
}

fn retry_after(r: &Resp) -> u64 {
    r.headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After on {}: {}", r.status, r.body))
}

// 2. Login limit per address only; lock-out of the owner; weak bearer tokens.

#[tokio::test]
async fn guesses_from_many_addresses_hit_the_global_ceiling() {
    let app = start();
    set_password(&app);
    let csrf = login_csrf(&app).await;
    let mut limited = 0;
    // 40 addresses × 5 tries = 200 guesses (before: none refused).
    for a in 0..40 {
        for _ in 0..5 {
            let r = try_login(&app, &csrf, &format!("198.51.100.{a}"), "not-the-password").await;
            match r.status {
                StatusCode::UNAUTHORIZED => {}
                StatusCode::TOO_MANY_REQUESTS => {
                    assert!(retry_after(&r) >= 1);
                    limited += 1;
                }
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
    }
    let ceiling = app.state.config.limits.login_guesses_per_minute as usize;
    assert!(200 - limited <= ceiling + 10, "{limited} of 200 refused");
    // The owner, from an address with no failures, still signs in.
    let r = try_login(&app, &csrf, "192.0.2.10", PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test]
async fn failures_from_one_address_do_not_lock_the_owner_out() {
    let app = start();
    set_password(&app);
    let csrf = login_csrf(&app).await;
    for _ in 0..3 {
        let r = try_login(&app, &csrf, "203.0.113.5", "wrong-password-1").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // That address now waits a short, growing delay — not 15 minutes.
    let r = try_login(&app, &csrf, "203.0.113.5", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&r) <= 2, "{}", retry_after(&r));
    // Anyone else is unaffected.
    let r = try_login(&app, &csrf, "203.0.113.6", PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // After the wait the owner's own address signs in too.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = try_login(&app, &csrf, "203.0.113.5", PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_is_counted_on_its_own() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.trusted_proxies = vec!["10.0.0.0/8".parse().expect("cidr")];
    let app = start_with(dir, cfg);
    set_password(&app);
    let csrf = login_csrf(&app).await;
    let via_proxy = |client: &str, password: &str| {
        let mut req = login_req("admin", password, &csrf);
        req.headers_mut()
            .insert("x-forwarded-for", client.parse().expect("header"));
        from_ip(req, "10.0.0.1")
    };
    for _ in 0..4 {
        send(&app.router, via_proxy("198.51.100.66", "wrong-password-2")).await;
    }
    let r = send(&app.router, via_proxy("198.51.100.66", PASSWORD)).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the attacker waits"
    );
    let r = send(&app.router, via_proxy("198.51.100.7", PASSWORD)).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "another customer of the proxy does not"
    );
    // An untrusted peer cannot pick its address with the header.
    let mut forged = form_req("/admin/login", "name=admin&password=x&csrf=y", None);
    forged
        .headers_mut()
        .insert("x-forwarded-for", "198.51.100.7".parse().expect("header"));
    let ip = smart_support::guard::TrustedProxies(vec!["10.0.0.0/8".parse().expect("cidr")])
        .client("192.0.2.1".parse().expect("ip"), forged.headers());
    assert_eq!(ip.to_string(), "192.0.2.1");
}

#[tokio::test]
async fn a_short_bearer_token_is_refused_at_start_and_wrong_ones_are_throttled() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.admin_token = Some("a".into());
    let err = smart_support::app::build(cfg, smart_support::models::LoadedModels::rules_only())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("at least 32"), "{err}");

    let app = start();
    let mut codes = Vec::new();
    for i in 0..8 {
        let req = req(Method::GET, "/api/tickets")
            .header(header::AUTHORIZATION, format!("Bearer guess-{i}"))
            .body(Body::empty())
            .expect("req");
        let r = send(&app.router, from_ip(req, "198.51.100.99")).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(retry_after(&r) >= 1);
        }
        codes.push(r.status.as_u16());
    }
    assert_eq!(&codes[..3], &[401, 401, 401]);
    assert!(codes[3..].iter().all(|c| *c == 429), "{codes:?}");
    // The right token from another address still works.
    let r = send(
        &app.router,
        from_ip(admin_get("/api/tickets"), "192.0.2.44"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

// 3. Intake limits and idempotent retries.

fn ticket_body(n: usize) -> String {
    json!({"subject": format!("Parcel {n}"), "description": "It never arrived"}).to_string()
}

#[tokio::test]
async fn intake_is_limited_per_address_and_in_total() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.limits.intake_per_address = 3;
    cfg.limits.intake_per_minute = 5;
    let app = start_with(dir, cfg);
    let post =
        |n: usize, ip: &str| from_ip(json_req(Method::POST, "/api/tickets", &ticket_body(n)), ip);
    for n in 0..3 {
        assert_eq!(
            send(&app.router, post(n, "198.51.100.1")).await.status,
            StatusCode::ACCEPTED
        );
    }
    let r = send(&app.router, post(3, "198.51.100.1")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error_code(), "rate_limited");
    assert!(retry_after(&r) >= 1);
    // Another address may still submit, until the total is reached.
    for n in 0..2 {
        assert_eq!(
            send(&app.router, post(10 + n, "198.51.100.2")).await.status,
            StatusCode::ACCEPTED
        );
    }
    let r = send(&app.router, post(20, "198.51.100.3")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "total limit");
    assert_eq!(
        app.state.store.list(&Default::default()).expect("list").1,
        5
    );

    // The form shows the message and keeps what was typed.
    let r = send(
        &app.router,
        from_ip(
            form_req(
                "/tickets",
                "subject=Still+waiting&description=Typed+text+kept",
                None,
            ),
            "198.51.100.1",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&r) >= 1);
    assert!(
        r.body.contains("too many tickets") && r.body.contains("Typed text kept"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_ticket() {
    let app = start();
    let post = |key: &str, body: &str| {
        let mut r = json_req(Method::POST, "/api/tickets", body);
        r.headers_mut()
            .insert("idempotency-key", key.parse().expect("key"));
        r
    };
    let first = send(&app.router, post("retry-me-1", &ticket_body(1))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let again = send(&app.router, post("retry-me-1", &ticket_body(1))).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(first.json()["id"], again.json()["id"]);
    assert_eq!(first.json()["token"], again.json()["token"]);
    assert_eq!(
        app.state.store.list(&Default::default()).expect("list").1,
        1
    );
    // The same key with another ticket is an error, not a silent answer.
    let other = send(&app.router, post("retry-me-1", &ticket_body(2))).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.error_code(), "idempotency_key_reused");
    let bad = send(&app.router, post(&"k".repeat(201), &ticket_body(3))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // The page's form carries its own key: a resubmitted form finds its ticket.
    let page = send(&app.router, get("/")).await;
    let idem = page
        .body
        .split("name=\"idem\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("form key")
        .to_string();
    let form = format!("subject=Broken+zip&description=The+zipper+broke&idem={idem}");
    let a = send(&app.router, form_req("/tickets", &form, None)).await;
    let b = send(&app.router, form_req("/tickets", &form, None)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), b.location());
    assert_eq!(
        app.state.store.list(&Default::default()).expect("list").1,
        2
    );
    // Back, edit, send again: other words are a new ticket, not an error.
    let edited = format!("subject=Broken+zip&description=The+zipper+and+a+strap+broke&idem={idem}");
    let c = send(&app.router, form_req("/tickets", &edited, None)).await;
    assert_eq!(c.status, StatusCode::SEE_OTHER);
    assert_ne!(c.location(), a.location());
    assert_eq!(
        app.state.store.list(&Default::default()).expect("list").1,
        3
    );
}

// 4. Stream caps (the connection timeouts and cap run on a real socket in cli.rs).

#[tokio::test]
async fn event_streams_are_capped_per_ticket_and_in_total() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.limits.max_streams_per_ticket = 2;
    cfg.limits.max_streams = 3;
    let app = start_with(dir, cfg);
    let (_, t1) = submit(&app.router, "Login", "Cannot log in").await;
    let (_, t2) = submit(&app.router, "Login too", "Cannot log in either").await;
    let open = |t: &str| {
        let uri = format!("/api/t/{t}/events");
        let router = app.router.clone();
        async move {
            use tower::ServiceExt;
            router.oneshot(get(&uri)).await.expect("infallible")
        }
    };
    let a = open(&t1).await;
    let b = open(&t1).await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let c = open(&t1).await;
    assert_eq!(c.status(), StatusCode::SERVICE_UNAVAILABLE, "per ticket");
    assert!(c.headers().contains_key(header::RETRY_AFTER));
    let d = open(&t2).await;
    assert_eq!(d.status(), StatusCode::OK);
    let e = open(&t2).await;
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "in total");
    // Closing a stream frees its place.
    drop(a);
    assert_eq!(open(&t2).await.status(), StatusCode::OK);
    drop((b, d));
}

// 5. Reads beside writes; ratings do not grow the history.

#[test]
fn reads_do_not_wait_for_the_writer() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let db = dir.path().join("t.db");
    let store = std::sync::Arc::new(Store::open_service(&db, 2).expect("open"));
    let (id, _) = store
        .create_ticket(&TicketInput {
            subject: "s".into(),
            description: "d".into(),
        })
        .expect("create");
    let held = store.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        held.hold_writer_for_test(Duration::from_secs(3), || tx.send(()).expect("send"));
    });
    rx.recv().expect("writer held");
    // With the writer busy for 3 s, a read still answers well within it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = store.clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(reader.get(id).map(|r| r.id));
    });
    let got = done_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("read did not wait for the writer");
    assert_eq!(got.expect("read"), id);
    writer.join().expect("join");
}

#[tokio::test]
async fn re_rating_replaces_the_rating_event() {
    let app = start();
    let (id, token) = submit(&app.router, "Thanks", "All good now").await;
    wait_processed(&app.state, id).await;
    app.state.store.resolve(id, "customer").expect("resolve");
    for stars in [1, 2, 3, 4, 5, 4, 3, 2, 1, 5] {
        let r = send(
            &app.router,
            json_req(
                Method::POST,
                &format!("/api/t/{token}/rating"),
                &json!({"stars": stars}).to_string(),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let rec = app.state.store.get(id).expect("get");
    let rated = rec
        .events
        .iter()
        .filter(|e| e.kind.as_str() == "rated")
        .count();
    assert_eq!(rated, 1);
    assert_eq!(rec.rating.expect("rating").stars, 5);
}

// 6. Storage faults.

#[tokio::test]
async fn a_full_database_answers_503_and_health_says_so() {
    if sqlite_only("the --db-max-mb cap of the file") {
        return;
    }
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.db_max_mb = Some(1);
    let app = start_with(dir, cfg);
    let long = "x ".repeat(4_900);
    let mut full = None;
    for n in 0..400 {
        let body = json!({"subject": format!("Ticket {n}"), "description": long}).to_string();
        let r = send(&app.router, json_req(Method::POST, "/api/tickets", &body)).await;
        if r.status != StatusCode::ACCEPTED {
            full = Some(r);
            break;
        }
    }
    let r = full.expect("the 1 MiB database filled up");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.error_code(), "storage_full");
    assert!(retry_after(&r) >= 1);
    let h = send(&app.router, get("/health")).await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE);
    let h = h.json();
    assert_eq!(h["status"], "error");
    assert!(
        h["degraded"].to_string().contains("cannot be written"),
        "{h}"
    );
}

/// A generator that takes its time, so a test can act while a ticket runs.
struct Slow(u64);
impl smart_support::agents::troubleshooter::TextGenerator for Slow {
    fn name(&self) -> String {
        "slow-test-generator".into()
    }
    fn generate(
        &self,
        _: &smart_support::agents::troubleshooter::AnswerRequest,
    ) -> Result<smart_support::ticket::GenerationRecord, smart_support::agents::EngineError> {
        std::thread::sleep(Duration::from_millis(self.0));
        Err(smart_support::agents::EngineError {
            engine: self.name(),
            message: "slow test generator gives up".into(),
        })
    }
}

fn slow_models(ms: u64) -> smart_support::models::LoadedModels {
    let mut m = smart_support::models::LoadedModels::rules_only();
    m.pipeline.troubleshooter =
        smart_support::agents::troubleshooter::Troubleshooter::with_generator(std::sync::Arc::new(
            Slow(ms),
        ));
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_cannot_be_stored_is_retried_until_it_can() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    let app = start_models(dir, cfg, slow_models(1500));
    let (id, _) = submit(&app.router, "Slow one", "This one takes a while").await;
    for _ in 0..500 {
        if app.state.store.get(id).expect("get").processing == Processing::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While the pipeline runs, the disk stops taking writes.
    app.state.store.block_writes_for_test(true).expect("block");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let rec = app.state.store.get(id).expect("get");
    assert_eq!(
        rec.processing,
        Processing::Processing,
        "not stored yet: still retrying"
    );
    assert!(app.state.store.write_health().failing.is_some());
    // The disk recovers: the retry stores the result, no restart needed.
    app.state
        .store
        .block_writes_for_test(false)
        .expect("unblock");
    let rec = wait_processed(&app.state, id).await;
    assert_eq!(rec.processing, Processing::Done);
    assert_eq!(rec.pipeline_runs, 1);
}

#[test]
fn empty_and_foreign_files_are_errors_never_replaced() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").expect("write");
    let e = Store::open(&empty).err().expect("refused").to_string();
    assert!(e.contains("empty") && e.contains("empty.db"), "{e}");
    assert_eq!(
        std::fs::metadata(&empty).expect("meta").len(),
        0,
        "left as it was"
    );
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "these are my notes, not a database\n".repeat(200)).expect("write");
    let e = Store::open(&text).err().expect("refused").to_string();
    assert!(
        e.contains("not a smart-support database") && e.contains("notes.db"),
        "{e}"
    );
}

#[tokio::test]
async fn a_damaged_database_is_reported_on_health() {
    if sqlite_only("a damaged file") {
        return;
    }
    let dir = tempfile::TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    {
        let store = Store::open(&cfg.db).expect("open");
        for n in 0..300 {
            store
                .create_ticket(&TicketInput {
                    subject: format!("Ticket {n}"),
                    description: "words ".repeat(50),
                })
                .expect("create");
        }
        let conn = rusqlite::Connection::open(&cfg.db).expect("open");
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE").ok();
    }
    // Overwrite the header of one index page deep in the file.
    let page = {
        let c = rusqlite::Connection::open(&cfg.db).expect("open");
        let root: i64 = c
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'tickets_created'",
                [],
                |r| r.get(0),
            )
            .expect("index root");
        root
    };
    let mut bytes = std::fs::read(&cfg.db).expect("read");
    let at = (page as usize - 1) * 4096;
    bytes[at..at + 8].copy_from_slice(&[0xFF; 8]);
    std::fs::write(&cfg.db, &bytes).expect("write");
    let app = start_with(dir, cfg);
    let h = send(&app.router, get("/health")).await.json();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["degraded"].to_string().contains("integrity"), "{h}");
    let full = send(&app.router, admin_get("/health")).await.json();
    assert_ne!(full["db"]["integrity"], "ok", "{full}");
}

#[tokio::test]
async fn a_second_service_on_the_same_database_refuses_to_start() {
    if sqlite_only("the lock file") {
        return;
    }
    let app = start();
    let cfg = app.state.config.clone();
    let err = smart_support::app::build(cfg, smart_support::models::LoadedModels::rules_only())
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("another smart-support process"),
        "{err}"
    );
}

// 7. Shutdown: streams end, running tickets go back to the queue.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_and_requeues_what_it_cannot_finish() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.shutdown_grace_secs = 0;
    let db = cfg.db.clone();
    let app = smart_support::app::build(cfg.clone(), slow_models(4000)).expect("build");
    let state = app.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(listener, async move {
        let _ = stop_rx.await;
    }));
    let (id, token) = state
        .store
        .create_ticket(&TicketInput {
            subject: "Slow".into(),
            description: "Takes a while".into(),
        })
        .expect("create");
    state.worker.notify_new_ticket();
    let router = smart_support::web::router(state.clone());
    let (_, stream) = live_stream(&router, &format!("/api/t/{token}/events")).await;
    for _ in 0..200 {
        if state.store.get(id).expect("get").processing == Processing::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    let last = stream.last_event_name().await;
    assert_eq!(last, "shutdown");
    tokio::time::timeout(Duration::from_secs(120), server)
        .await
        .expect("stops")
        .expect("join");
    drop(state);
    drop(router);
    let store = Store::open(&db).expect("reopen");
    assert_eq!(
        store.get(id).expect("get").processing,
        Processing::Accepted,
        "stays queued"
    );
}

/// Reads an event stream to its end; the names of its events.
struct LiveStream(Body);

async fn live_stream(router: &axum::Router, uri: &str) -> (StatusCode, LiveStream) {
    use tower::ServiceExt;
    let resp = router.clone().oneshot(get(uri)).await.expect("response");
    (resp.status(), LiveStream(resp.into_body()))
}

impl LiveStream {
    /// The last event's name once the server ends the stream (a liveness
    /// guard of two minutes, not a speed test).
    async fn last_event_name(mut self) -> String {
        use http_body_util::BodyExt;
        let mut text = String::new();
        let read = async {
            while let Some(Ok(frame)) = self.0.frame().await {
                if let Ok(d) = frame.into_data() {
                    text.push_str(&String::from_utf8_lossy(&d));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("the stream ended");
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("event:"))
            .map(|n| n.trim().to_string())
            .unwrap_or_default()
    }
}

// 8. Leaks and gaps.

#[tokio::test]
async fn public_health_says_only_what_is_degraded_in_words() {
    let app = start();
    let h = send(&app.router, get("/health")).await.json();
    let keys: Vec<_> = h.as_object().expect("object").keys().cloned().collect();
    // What is degraded, in words; and which kind of node and database this
    // is (for load balancers and several-node set-ups), nothing more.
    assert_eq!(keys, vec!["db", "degraded", "role", "status"], "{h}");
    assert_eq!(
        h["db"],
        serde_json::json!({"backend": backend_name()}),
        "{h}"
    );
    assert_eq!(h["status"], "degraded");
    let text = h.to_string();
    assert!(
        text.contains("keyword rules") && !text.contains('/'),
        "{text}"
    );
    // Staff get the detail; wrong credentials get an error, not the public view.
    let full = send(&app.router, admin_get("/health")).await.json();
    assert_eq!(full["engines"]["classifier"], "naive-bayes");
    assert!(full["db"]["schema_version"].is_number());
    let bad = req(Method::GET, "/health")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .expect("req");
    assert_eq!(
        send(&app.router, bad).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn request_ids_are_kept_only_when_short_and_plain() {
    let app = start();
    let with_id = |id: &str| {
        req(Method::GET, "/health")
            .header("x-request-id", id)
            .body(Body::empty())
            .expect("req")
    };
    let echoed = |r: &Resp| {
        r.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let r = send(&app.router, with_id("client-42.a:b_c")).await;
    assert_eq!(echoed(&r), "client-42.a:b_c");
    for bad in [
        "x".repeat(65),
        "a\"b".into(),
        "a b".into(),
        "id=1 level=error".into(),
    ] {
        let r = send(&app.router, with_id(&bad)).await;
        let id = echoed(&r);
        assert!(!id.is_empty() && id != bad, "{bad} → {id}");
    }
}

#[tokio::test]
async fn every_free_text_field_follows_the_same_rules() {
    let app = start();
    let post = |subject: &str, description: &str| {
        json_req(
            Method::POST,
            "/api/tickets",
            &json!({"subject": subject, "description": description}).to_string(),
        )
    };
    for (subject, why) in [
        ("\u{200B}\u{200C}\u{2060}", "visible"),
        ("Invoice \u{202E}fdp.exe", "bidirectional"),
        ("Tab\u{1b}[2J", "control"),
    ] {
        let r = send(&app.router, post(subject, "Something happened")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{subject:?}");
        assert!(r.body.contains(why), "{}", r.body);
    }
    let (id, token) = submit(&app.router, "Thanks", "Works now").await;
    wait_processed(&app.state, id).await;
    app.state.store.resolve(id, "customer").expect("resolve");
    for comment in ["nul \u{0} here", "esc \u{1b}[31m", "rlo \u{202E}"] {
        let r = send(
            &app.router,
            json_req(
                Method::POST,
                &format!("/api/t/{token}/rating"),
                &json!({"stars": 4, "comment": comment}).to_string(),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{comment:?}");
    }
}

#[tokio::test]
async fn private_pages_and_apis_are_not_cached_and_405_is_json() {
    let app = start();
    let (_, token) = submit(&app.router, "Cache", "Do not cache me").await;
    for path in [
        format!("/t/{token}"),
        format!("/api/t/{token}"),
        "/health".into(),
        "/admin/login".into(),
    ] {
        let r = send(&app.router, get(&path)).await;
        assert_eq!(
            r.headers
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{path}"
        );
    }
    let r = send(&app.router, get("/assets/app.css")).await;
    assert_ne!(
        r.headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let r = send(
        &app.router,
        req(Method::DELETE, "/api/tickets")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error_code(), "method_not_allowed");
}

// 9. Operations: backups of a live database, retention.

#[test]
fn a_backup_of_a_database_under_writes_is_consistent() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let db = dir.path().join("live.db");
    let store = std::sync::Arc::new(Store::open(&db).expect("open"));
    let t = |n: usize| TicketInput {
        subject: format!("Ticket {n}"),
        description: "words ".repeat(100),
    };
    for n in 0..200 {
        store.create_ticket(&t(n)).expect("create");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 1000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.create_ticket(&t(n)).expect("create");
                n += 1;
            }
            n - 1000
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let to = dir.path().join("backups").join("copy.db");
    let report = store.backup_to(&to).expect("backup");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().expect("join");
    assert_eq!(report.integrity, "ok");
    assert!(
        report.tickets >= 200 && report.tickets <= 200 + written as i64,
        "{report:?}"
    );
    let copy = Store::open(&to).expect("the copy opens");
    let (_, total) = copy.list(&Default::default()).expect("list");
    assert_eq!(total, report.tickets);
    // Every ticket in the copy came with its events: one consistent moment.
    assert_eq!(report.events, report.tickets);
    assert!(store.backup_to(&to).is_err(), "never overwrites");
}

#[test]
fn retention_deletes_or_anonymises_old_resolved_tickets() {
    use smart_support::config::RetentionMode;
    let dir = tempfile::TempDir::new().expect("tempdir");
    let store = Store::open(&dir.path().join("r.db")).expect("open");
    let t = |s: &str| TicketInput {
        subject: s.into(),
        description: format!("{s}: my secret words"),
    };
    let (old_a, token_a) = store.create_ticket(&t("old one")).expect("create");
    let (old_b, _) = store.create_ticket(&t("old two")).expect("create");
    let (open_old, _) = store.create_ticket(&t("old but open")).expect("create");
    let (recent, _) = store.create_ticket(&t("recent")).expect("create");
    for id in [old_a, old_b, recent] {
        store.resolve(id, "admin").expect("resolve");
    }
    let conn = rusqlite::Connection::open(dir.path().join("r.db")).expect("open");
    conn.execute(
        "UPDATE tickets SET updated_at = '2020-01-01T00:00:00.000Z' WHERE id IN (?1, ?2, ?3)",
        [old_a, old_b, open_old],
    )
    .expect("age");
    let cutoff = "2025-01-01T00:00:00.000Z";
    assert_eq!(
        store
            .apply_retention(cutoff, RetentionMode::Anonymise)
            .expect("anon"),
        2
    );
    let a = store.get(old_a).expect("kept");
    assert_eq!(a.input.subject, "[removed]");
    assert!(!a.input.description.contains("secret"));
    assert_eq!(
        store.id_for_token(&token_a).expect("lookup"),
        None,
        "old link void"
    );
    assert_eq!(
        store.get(open_old).expect("open").input.subject,
        "old but open"
    );
    assert_eq!(store.get(recent).expect("recent").input.subject, "recent");
    assert_eq!(
        store
            .apply_retention(cutoff, RetentionMode::Anonymise)
            .expect("again"),
        0
    );
    let (old_c, _) = store.create_ticket(&t("old three")).expect("create");
    store.resolve(old_c, "admin").expect("resolve");
    conn.execute(
        "UPDATE tickets SET updated_at = '2020-01-01T00:00:00.000Z' WHERE id = ?1",
        [old_c],
    )
    .expect("age");
    assert_eq!(
        store
            .apply_retention(cutoff, RetentionMode::Delete)
            .expect("delete"),
        1
    );
    assert!(store.get(old_c).is_err());
}

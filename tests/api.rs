//! Every JSON endpoint: success and error cases.

mod common;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use common::*;
use serde_json::json;

#[tokio::test]
async fn intake_answers_at_once_and_the_worker_processes_once() {
    let app = start();
    let body = json!({"subject": "Charged twice", "description": "I was charged twice for my subscription, please refund me."});
    let r = send(
        &app.router,
        json_req(Method::POST, "/api/tickets", &body.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let v = r.json();
    let token = v["token"].as_str().expect("token");
    assert_eq!(token.len(), 48, "192-bit hex token");
    assert_eq!(v["status"], "Open");
    assert!(
        v["tracking_url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/t/{token}")))
    );
    let id = v["id"].as_i64().expect("id");
    let rec = wait_processed(&app.state, id).await;
    assert_eq!(rec.pipeline_runs, 1);

    let r = send(&app.router, get(&format!("/api/t/{token}"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let t = r.json();
    assert_eq!(t["category"], "Refund");
    assert_eq!(t["status"], "In Progress");
    // Refund answers are drafts by default: the customer sees none of it.
    assert_eq!(t["solution"], serde_json::Value::Null, "{t}");
    assert_eq!(t["ai_answer_held"], true);
    assert!(!t.to_string().contains("Find the order or invoice number"));
    let staff = app.state.staff_view(&rec);
    assert_eq!(staff["solution"]["delivery"], "draft");
    assert_eq!(staff["solution"]["resolved"], false);
    assert!(
        staff["solution"]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(
        staff["solution"]["sources"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{staff}"
    );
    for key in [
        "neg",
        "neu",
        "pos",
        "compound",
        "sentiment",
        "risk",
        "confidence",
        "timeline",
        "priority",
    ] {
        assert!(!t[key].is_null(), "{key} missing: {t}");
    }
    // Customers do not see staff-only fields.
    assert!(t.get("token").is_none() && t.get("events").is_none() && t.get("agents").is_none());
}

#[tokio::test]
async fn wait_true_returns_the_processed_ticket() {
    let app = start();
    let body =
        json!({"subject": "HACKED", "description": "My account was hacked, this is urgent!"});
    let r = send(
        &app.router,
        json_req(Method::POST, "/api/tickets?wait=true", &body.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    assert_eq!(v["category"], "Security");
    assert_eq!(v["priority"], "Critical");
    assert_eq!(v["status"], "Escalated");
    assert_eq!(v["sentiment"], "Urgent");
    // Security answers are drafts: the customer's escalation box keeps its
    // reasons only; the summary (for staff) says the steps were not sent.
    assert!(
        v["escalation"]["reasons"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(v["escalation"].get("summary").is_none(), "{v}");
    let id = v["id"].as_i64().expect("id");
    let rec = app.state.store.get(id).expect("stored");
    let staff = app.state.staff_view(&rec);
    let summary = staff["escalation"]["summary"].as_str().expect("summary");
    assert!(
        summary.contains("Security") && summary.contains("not shown to the customer"),
        "{summary}"
    );
    let steps: Vec<_> = v["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|s| s["state"].clone())
        .collect();
    assert_eq!(
        steps,
        [
            json!("completed"),
            json!("completed"),
            json!("pending"),
            json!("completed")
        ]
    );
    let r = send(
        &app.router,
        json_req(Method::POST, "/api/tickets?wait=maybe", &body.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn intake_validation_errors_are_clear_json() {
    let app = start();
    let cases: Vec<(String, &str, StatusCode, &str)> = vec![
        (
            json!({"subject": "", "description": "x"}).to_string(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"subject": "   ", "description": "x"}).to_string(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"subject": "s", "description": ""}).to_string(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"subject": "x".repeat(201), "description": "d"}).to_string(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"subject": "s", "description": "d".repeat(10_001)}).to_string(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"subject": "s\u{0007}", "description": "d"}).to_string(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"subject": "s", "description": "d", "admin": true}).to_string(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"subject": "s"}).to_string(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"subject": 5, "description": "d"}).to_string(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "{not json".to_string(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json!({"subject": "s", "description": "d"}).to_string(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            format!(
                "{{\"subject\": \"s\", \"description\": \"{}\"}}",
                "d".repeat(70_000)
            ),
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, ctype, status, code) in cases {
        let req = req(Method::POST, "/api/tickets")
            .header(header::CONTENT_TYPE, ctype)
            .body(Body::from(body.clone()))
            .expect("request");
        let r = send(&app.router, req).await;
        assert_eq!(
            r.status,
            status,
            "body {}: {}",
            &body[..body.len().min(80)],
            r.body
        );
        assert_eq!(r.error_code(), code, "{}", r.body);
        assert!(
            !r.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .is_empty()
        );
    }
    // Nothing was stored by the rejected requests.
    let r = send(&app.router, admin_get("/api/tickets")).await;
    assert_eq!(r.json()["total"], 0);
    // Exactly at the limits is fine.
    let body = json!({"subject": "x".repeat(200), "description": "d".repeat(10_000)});
    let r = send(
        &app.router,
        json_req(Method::POST, "/api/tickets", &body.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
}

#[tokio::test]
async fn limits_are_configurable() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.max_subject_chars = 5;
    let app = start_with(dir, cfg);
    let r = send(
        &app.router,
        json_req(
            Method::POST,
            "/api/tickets",
            r#"{"subject":"123456","description":"d"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("limit is 5"), "{}", r.body);
}

#[tokio::test]
async fn customer_endpoints_are_scoped_by_token() {
    let app = start();
    let (id, token) = submit(
        &app.router,
        "Where is my order?",
        "Tracking shows nothing for a week.",
    )
    .await;
    wait_processed(&app.state, id).await;

    let r = send(&app.router, get(&format!("/api/t/{token}/status"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let s = r.json();
    assert_eq!(s["status"], "In Progress");
    assert_eq!(s["processing"], "done");
    assert_eq!(s["progress"], 75);
    assert!(
        s.get("description").is_none(),
        "status endpoint stays small"
    );

    // Wrong, truncated, altered and absurd tokens are all plain 404s.
    let mut altered = token.clone();
    altered.replace_range(47.., if token.ends_with('0') { "1" } else { "0" });
    for bad in [
        altered.as_str(),
        &token[..40],
        "nope",
        "../../etc/passwd",
        &"a".repeat(500),
    ] {
        for path in [format!("/api/t/{bad}"), format!("/api/t/{bad}/status")] {
            let r = send(&app.router, get(&path)).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        }
        let r = send(
            &app.router,
            json_req(Method::POST, &format!("/api/t/{bad}/resolve"), ""),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }

    // Rating before resolution is a conflict; bad stars are rejected.
    let rating = |stars: i64| json!({"stars": stars, "comment": "Quick help"}).to_string();
    let r = send(
        &app.router,
        json_req(Method::POST, &format!("/api/t/{token}/rating"), &rating(4)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);

    let r = send(
        &app.router,
        json_req(Method::POST, &format!("/api/t/{token}/resolve"), ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "Resolved");
    // Resolving again changes nothing.
    let r = send(
        &app.router,
        json_req(Method::POST, &format!("/api/t/{token}/resolve"), ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let rec = app.state.store.get(id).expect("ticket");
    let resolved_events = rec
        .events
        .iter()
        .filter(|e| e.kind == smart_support::ticket::EventKind::Resolved)
        .count();
    assert_eq!(resolved_events, 1);

    for bad in [0, 6, -1] {
        let r = send(
            &app.router,
            json_req(
                Method::POST,
                &format!("/api/t/{token}/rating"),
                &rating(bad),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let r = send(
        &app.router,
        json_req(
            Method::POST,
            &format!("/api/t/{token}/rating"),
            r#"{"stars": 3, "extra": 1}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(
        &app.router,
        json_req(Method::POST, &format!("/api/t/{token}/rating"), &rating(4)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.json()["rating"],
        json!({"stars": 4, "comment": "Quick help"})
    );
    let r = send(
        &app.router,
        json_req(
            Method::POST,
            &format!("/api/t/{token}/rating"),
            r#"{"stars": 5}"#,
        ),
    )
    .await;
    assert_eq!(r.json()["rating"], json!({"stars": 5, "comment": null}));
}

#[tokio::test]
async fn admin_api_requires_authentication() {
    let app = start();
    let (id, _) = submit(&app.router, "Invoice", "Wrong amount on my invoice").await;
    for (n, path) in ["/api/tickets".to_string(), format!("/api/tickets/{id}")]
        .into_iter()
        .enumerate()
    {
        let r = send(&app.router, get(&path)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.error_code(), "unauthorized");
        for (i, auth) in [
            "Bearer wrong",
            "Basic Zm9vOmJhcg==",
            "Bearer ",
            &format!("bearer {ADMIN_TOKEN}"),
        ]
        .into_iter()
        .enumerate()
        {
            // Each from its own address: wrong tokens are throttled per address.
            let req = req(Method::GET, &path)
                .header(header::AUTHORIZATION, auth)
                .body(Body::empty())
                .expect("req");
            assert_eq!(
                send(&app.router, from_ip(req, &format!("10.9.{n}.{i}")))
                    .await
                    .status,
                StatusCode::UNAUTHORIZED,
                "{auth}"
            );
        }
    }
    let r = send(
        &app.router,
        json_req(Method::POST, &format!("/api/tickets/{id}/resolve"), ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_ne!(
        app.state.store.get(id).expect("t").status,
        smart_support::ticket::Status::Resolved
    );

    let r = send(&app.router, admin_get(&format!("/api/tickets/{id}"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert!(v["token"].as_str().is_some() && v["events"].is_array());
}

#[tokio::test]
async fn admin_token_unset_disables_bearer_auth() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.admin_token = None;
    let app = start_with(dir, cfg);
    let r = send(&app.router, admin_get("/api/tickets")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_list_search_filter_sort_paginate() {
    let app = start();
    let mut ids = Vec::new();
    for i in 0..12 {
        let (id, _) = submit(
            &app.router,
            &format!("Refund request {i}"),
            "Please refund my last payment.",
        )
        .await;
        ids.push(id);
    }
    for i in 0..5 {
        let (id, _) = submit(
            &app.router,
            &format!("Password change {i}"),
            "How can I change my password? The reset email goes to my old address.",
        )
        .await;
        ids.push(id);
    }
    let (hacked, _) = submit(
        &app.router,
        "Hacked!",
        "Someone hacked my account and changed the email.",
    )
    .await;
    ids.push(hacked);
    for id in &ids {
        wait_processed(&app.state, *id).await;
    }

    let list = |q: &str| send(&app.router, admin_get(&format!("/api/tickets?{q}")));
    let r = list("").await;
    let v = r.json();
    assert_eq!(v["total"], 18);
    assert_eq!(v["page"], 1);
    assert_eq!(v["per_page"], 20);
    assert_eq!(v["tickets"][0]["id"], hacked, "newest first");

    let v = list("q=refund").await.json();
    assert_eq!(v["total"], 12);
    let v = list("q=passw").await.json();
    assert_eq!(v["total"], 5, "prefix search");
    let v = list("q=refund%20payment").await.json();
    assert_eq!(v["total"], 12, "all terms must match");
    let v = list("q=%22%29%28*%20OR%20NEAR").await.json();
    assert_eq!(v["total"], 0, "FTS syntax in the query is treated as words");
    // The query language (src/store/search.rs): phrases, exclusions, OR.
    let v = list("q=%22change%20my%20password%22").await.json();
    assert_eq!(v["total"], 5, "a phrase");
    let v = list("q=%22my%20change%22").await.json();
    assert_eq!(v["total"], 0, "a phrase is in order");
    let v = list("q=email%20-password").await.json();
    assert_eq!(v["total"], 1, "an exclusion");
    let v = list("q=-refund").await.json();
    assert_eq!(v["total"], 6, "only an exclusion");
    let v = list("q=hacked%20OR%20refund").await.json();
    assert_eq!(v["total"], 13, "either");
    let v = list("q=hacked%20OR%20refund%20payment").await.json();
    assert_eq!(v["total"], 12, "OR before AND");

    let v = list("category=Refund").await.json();
    assert_eq!(v["total"], 12);
    let v = list("category=account&priority=Low").await.json();
    assert_eq!(v["total"], 5);
    let v = list("status=Escalated").await.json();
    assert_eq!(v["total"], 1);
    assert_eq!(v["tickets"][0]["category"], "Security");
    let v = list("priority=Critical&sort=priority").await.json();
    assert_eq!(v["total"], 1);

    let v = list("sort=priority&per_page=1").await.json();
    assert_eq!(v["tickets"][0]["priority"], "Critical");
    let v = list("sort=oldest&per_page=5&page=3").await.json();
    let page_ids: Vec<i64> = v["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .filter_map(|t| t["id"].as_i64())
        .collect();
    assert_eq!(page_ids, ids[10..15].to_vec());
    let v = list("per_page=5&page=4").await.json();
    assert_eq!(v["tickets"].as_array().map(Vec::len), Some(3));
    let v = list("per_page=5&page=9").await.json();
    assert_eq!(v["tickets"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["total"], 18);

    for bad in [
        "category=Nope",
        "priority=urgent",
        "status=closed",
        "page=0",
        "page=x",
        "per_page=101",
        "sort=random",
    ] {
        let r = list(bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.error_code(), "bad_request");
    }
}

#[tokio::test]
async fn admin_ticket_and_resolve_errors() {
    let app = start();
    for path in ["/api/tickets/999", "/api/tickets/abc", "/api/tickets/-1"] {
        let r = send(&app.router, admin_get(path)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.error_code(), "not_found");
    }
    let r = send(&app.router, admin_post("/api/tickets/999/resolve")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let (id, _) = submit(&app.router, "Question", "How do I export data?").await;
    let r = send(
        &app.router,
        admin_post(&format!("/api/tickets/{id}/resolve")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "Resolved");
    // A ticket resolved before the AI finished stays resolved afterwards.
    let rec = wait_processed(&app.state, id).await;
    assert_eq!(rec.status, smart_support::ticket::Status::Resolved);
}

#[tokio::test]
async fn health_reports_degraded_rules_only_mode() {
    let app = start();
    let r = send(&app.router, admin_get("/health")).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["banner"], "rules only — no models loaded");
    assert_eq!(v["db"]["ok"], true);
    let backend = app.state.store.backend();
    assert_eq!(
        v["db"]["schema_version"],
        smart_support::store::migrations::steps(backend).len()
    );
    assert_eq!(v["engines"]["classifier"], "naive-bayes");
    assert_eq!(v["engines"]["troubleshooter"], "rules");
    assert_eq!(v["engines"]["sentiment"], "vader");
    assert!(
        v["engines"]["notes"]
            .as_array()
            .is_some_and(|n| n.len() == 2)
    );
    assert!(v["worker"]["backlog"].is_number());
    assert_eq!(
        (v["role"].as_str(), v["db"]["backend"].as_str()),
        (Some("all"), Some(backend_name()))
    );
    let public = send(&app.router, get("/health")).await.json();
    assert_eq!(
        (public["role"].as_str(), public["db"]["backend"].as_str()),
        (Some("all"), Some(backend_name()))
    );
    assert!(
        public["db"]["ok"].is_null() && public["engines"].is_null(),
        "{public}"
    );
}

#[test]
fn an_unreachable_postgres_server_is_a_clear_error_without_the_password() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    // Nothing listens on the port: connecting fails at once.
    let port = free_port();
    cfg.db = format!("postgres://support:s3cret@127.0.0.1:{port}/tickets").into();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let err = rt
        .block_on(async {
            smart_support::app::build(cfg, smart_support::models::LoadedModels::rules_only()).err()
        })
        .expect("refused")
        .to_string();
    assert!(err.contains("cannot be reached"), "{err}");
    assert!(err.contains("postgres://support:***@127.0.0.1"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert!(!std::path::Path::new("postgres:").exists());
    // Any other URL is not a database.
    let mut cfg = config(&dir);
    cfg.db = "mysql://root@127.0.0.1/tickets".into();
    let err = rt
        .block_on(async {
            smart_support::app::build(cfg, smart_support::models::LoadedModels::rules_only()).err()
        })
        .expect("refused")
        .to_string();
    assert!(err.contains("a SQLite file or a postgres:// URL"), "{err}");
}

#[tokio::test]
async fn unknown_api_paths_and_methods() {
    let app = start();
    let r = send(&app.router, get("/api/nothing")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "not_found");
    let r = send(
        &app.router,
        req(Method::DELETE, "/api/tickets")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let app = start();
    let r = send(&app.router, get("/")).await;
    assert_eq!(
        r.headers
            .get("referrer-policy")
            .and_then(|v| v.to_str().ok()),
        Some("no-referrer")
    );
    assert_eq!(
        r.headers
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    let csp = r
        .headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
}

//! The support desk's conversation, assignment and changes: the API names
//! outside checks rely on, the customer's view (never an internal message),
//! the reopen window and the history of every change.

mod common;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use common::*;
use serde_json::{Value, json};
use smart_support::ticket::Role;
use smart_support::web::auth;

fn patch(uri: &str, body: &str) -> axum::http::Request<Body> {
    req(Method::PATCH, uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

async fn staff_view(app: &TestApp, id: i64) -> Value {
    send(&app.router, admin_get(&format!("/api/tickets/{id}")))
        .await
        .json()
}

#[tokio::test]
async fn a_conversation_with_internal_notes_the_customer_never_sees() {
    let app = start();
    // A ticket the knowledge base answers well: the AI's answer is shown at once.
    let (id, token) = submit(
        &app.router,
        "Where is my order",
        "The tracking link of my order has not moved for days.",
    )
    .await;
    wait_processed(&app.state, id).await;
    let post = |uri: String, body: Value| admin_json(&uri, &body.to_string());
    let r = send(
        &app.router,
        post(
            format!("/api/tickets/{id}/messages"),
            json!({"body": "We are checking with the courier.", "internal": false}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let m = r.json();
    for k in ["id", "author", "internal", "body", "created_at"] {
        assert!(m.get(k).is_some(), "{k} in {m}");
    }
    assert_eq!(m["author"], "api");
    assert_eq!(m["internal"], false);
    let r = send(
        &app.router,
        post(
            format!("/api/tickets/{id}/messages"),
            json!({"body": "SECRET-NOTE courier owes us", "internal": true}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = send(
        &app.router,
        json_req(
            Method::POST,
            &format!("/api/t/{token}/messages"),
            &json!({"body": "Thanks, any news?"}).to_string(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.json()["author"], "customer");

    let staff = staff_view(&app, id).await;
    let messages = staff["messages"].as_array().expect("messages").clone();
    // The AI's answer reached the customer at once, so it is the first message, by `ai`.
    assert_eq!(messages[0]["author"], "ai");
    let steps = staff["solution"]["steps"].as_array().expect("steps");
    let first_step = steps[0].as_str().unwrap_or("-");
    assert!(
        messages[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains(first_step))
    );
    let bodies: Vec<_> = messages[1..]
        .iter()
        .map(|m| m["body"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        bodies,
        [
            "We are checking with the courier.",
            "SECRET-NOTE courier owes us",
            "Thanks, any news?"
        ],
        "in time order"
    );
    let customer = send(&app.router, get(&format!("/api/t/{token}"))).await;
    assert_eq!(
        customer.json()["messages"].as_array().map(Vec::len),
        Some(3)
    );
    // Not in any of the customer's views: API, status, tracker page.
    for uri in [
        format!("/api/t/{token}"),
        format!("/api/t/{token}/status"),
        format!("/t/{token}"),
    ] {
        let r = send(&app.router, get(&uri)).await;
        assert!(!r.body.contains("SECRET-NOTE"), "{uri}");
    }
    let page = send(&app.router, get(&format!("/t/{token}"))).await;
    assert!(
        page.body.contains("We are checking with the courier.")
            && page.body.contains("Thanks, any news?")
    );
    assert_eq!(
        send(&app.router, get(&format!("/api/t/{token}/status")))
            .await
            .json()["messages"],
        3
    );

    // Nor in the customer's live stream (its first event is a full snapshot).
    let stream = {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let resp = app
            .router
            .clone()
            .oneshot(get(&format!("/api/t/{token}/events")))
            .await
            .expect("stream");
        let mut body = resp.into_body();
        let frame = body.frame().await.expect("a frame").expect("ok");
        String::from_utf8_lossy(&frame.into_data().unwrap_or_default()).to_string()
    };
    assert!(
        stream.contains("event: status") && stream.contains("\"messages\":3"),
        "{stream}"
    );
    assert!(!stream.contains("SECRET-NOTE"));
}

#[tokio::test]
async fn bad_messages_get_clear_errors() {
    let app = start();
    let (id, token) = submit(&app.router, "Login", "Cannot log in").await;
    let staff = |body: &str| admin_json(&format!("/api/tickets/{id}/messages"), body);
    assert_eq!(
        send(&app.router, staff(r#"{"body": "   "}"#)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let long = json!({"body": "x".repeat(5001)}).to_string();
    let r = send(&app.router, staff(&long)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("5000"), "{}", r.body);
    assert_eq!(
        send(&app.router, staff("{not json")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&app.router, staff(r#"{"body": "hi", "extra": 1}"#))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(
            &app.router,
            admin_json("/api/tickets/999/messages", r#"{"body": "hi"}"#)
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let r = send(
        &app.router,
        json_req(
            Method::POST,
            &format!("/api/tickets/{id}/messages"),
            r#"{"body": "hi"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A customer cannot write an internal note.
    let r = send(
        &app.router,
        json_req(
            Method::POST,
            &format!("/api/t/{token}/messages"),
            r#"{"body": "hi", "internal": true}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(
        &app.router,
        json_req(
            Method::POST,
            "/api/t/not-a-token-at-all/messages",
            r#"{"body": "hi"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_customer_reply_reopens_a_resolved_ticket_within_the_window() {
    let app = start();
    let (id, token) = submit(&app.router, "Refund", "Where is my refund").await;
    wait_processed(&app.state, id).await;
    app.state.store.resolve(id, "admin").expect("resolve");
    let reply = |body: &str| {
        json_req(
            Method::POST,
            &format!("/api/t/{token}/messages"),
            &json!({"body": body}).to_string(),
        )
    };
    assert_eq!(
        send(&app.router, reply("It still has not arrived"))
            .await
            .status,
        StatusCode::CREATED
    );
    let v = staff_view(&app, id).await;
    assert_eq!(v["status"], "Open");
    let history = v["history"].as_array().expect("history");
    // The AI's decisions come first, then the staff's resolution, then the reopening.
    let by: Vec<_> = history
        .iter()
        .map(|h| h["by"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(&by[..2], ["ai", "ai"], "{history:?}");
    assert_eq!(by[by.len() - 2], "admin");
    let h = history.last().expect("an entry");
    assert_eq!(
        (
            h["field"].as_str(),
            h["from"].as_str(),
            h["to"].as_str(),
            h["by"].as_str()
        ),
        (
            Some("status"),
            Some("Resolved"),
            Some("Open"),
            Some("customer")
        )
    );
    let timeline = send(&app.router, get(&format!("/api/t/{token}")))
        .await
        .json()["timeline"]
        .clone();
    assert_eq!(
        timeline[2]["state"], "pending",
        "the resolution is undone: {timeline}"
    );
    // Resolved long ago: the reply is refused with a clear message.
    app.state.store.resolve(id, "admin").expect("resolve");
    run_sql(
        &app,
        &format!("UPDATE tickets SET updated_at = '2020-01-01T00:00:00.000Z' WHERE id = {id}"),
    );
    let r = send(&app.router, reply("Hello again")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("open a new ticket"), "{}", r.body);
    assert_eq!(staff_view(&app, id).await["status"], "Resolved");
}

#[tokio::test]
async fn assignment_and_changes_are_recorded_in_the_history() {
    let app = start();
    let hash = auth::hash_password("maria-password-1").expect("hash");
    app.state
        .store
        .create_user("maria", Role::Agent, &hash)
        .expect("user");
    let (id, _) = submit(&app.router, "Invoice", "The invoice amount is wrong").await;
    wait_processed(&app.state, id).await;
    let r = send(
        &app.router,
        admin_json(&format!("/api/tickets/{id}/assign"), r#"{"user": "maria"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["assignee"], "maria");
    let r = send(
        &app.router,
        admin_json(
            &format!("/api/tickets/{id}/assign"),
            r#"{"user": "nobody"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(
        &app.router,
        admin_json(&format!("/api/tickets/{id}/assign"), r#"{"user": null}"#),
    )
    .await;
    assert_eq!(r.json()["assignee"], Value::Null);
    let ai = staff_view(&app, id).await;
    let r = send(
        &app.router,
        patch(
            &format!("/api/tickets/{id}"),
            r#"{"category": "Refund", "priority": "High", "status": "Open"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (
            v["category"].as_str(),
            v["priority"].as_str(),
            v["status"].as_str()
        ),
        (Some("Refund"), Some("High"), Some("Open"))
    );
    assert_eq!(
        v["ai_category"], ai["category"],
        "the AI's own value stays visible to staff"
    );
    let all = v["history"].as_array().expect("history").clone();
    assert!(
        all.iter()
            .any(|h| h["by"] == "ai" && h["field"] == "category"),
        "the AI's decisions are in the history"
    );
    let history: Vec<Value> = all.into_iter().filter(|h| h["by"] != "ai").collect();
    let fields: Vec<_> = history
        .iter()
        .map(|h| h["field"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        fields,
        ["assignee", "assignee", "category", "priority", "status"]
    );
    for h in &history {
        assert_eq!(h["by"], "api");
        assert!(h["at"].is_string() && h.get("from").is_some() && h.get("to").is_some());
    }
    assert_eq!(history[2]["from"], ai["category"]);
    let count = |v: &Value| v["history"].as_array().map(Vec::len);
    let before = count(&v);
    // The customer sees the corrected category; a no-op change adds nothing.
    let r = send(
        &app.router,
        patch(&format!("/api/tickets/{id}"), r#"{"category": "Refund"}"#),
    )
    .await;
    assert_eq!(count(&r.json()), before);
    assert_eq!(
        send(
            &app.router,
            patch(
                &format!("/api/tickets/{id}"),
                r#"{"priority": "Urgentest"}"#
            )
        )
        .await
        .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(
            &app.router,
            patch("/api/tickets/4242", r#"{"priority": "Low"}"#)
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // Filter by assignee.
    send(
        &app.router,
        admin_json(&format!("/api/tickets/{id}/assign"), r#"{"user": "maria"}"#),
    )
    .await;
    let mine = send(&app.router, admin_get("/api/tickets?assignee=maria"))
        .await
        .json();
    assert_eq!(mine["total"], 1);
    assert_eq!(mine["tickets"][0]["assignee"], "maria");
    let unassigned = send(&app.router, admin_get("/api/tickets?assignee=-"))
        .await
        .json();
    assert_eq!(unassigned["total"], 0);
}

#[tokio::test]
async fn new_tickets_go_to_active_agents_in_turn_when_auto_assign_is_on() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.auto_assign = true;
    let app = start_with(dir, cfg);
    let hash = auth::hash_password("agent-password-1").expect("hash");
    for (name, role) in [
        ("carol", Role::Agent),
        ("alice", Role::Agent),
        ("bob", Role::Agent),
        ("root", Role::Admin),
    ] {
        app.state
            .store
            .create_user(name, role, &hash)
            .expect("user");
    }
    app.state
        .store
        .update_user("bob", smart_support::store::UserChange::Active(false))
        .expect("disable bob");
    let mut got = Vec::new();
    for n in 0..4 {
        let (id, _) = submit(&app.router, &format!("Ticket {n}"), "Please help").await;
        got.push(
            staff_view(&app, id).await["assignee"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    // Agents only (not the admin), active only (not bob), in name order, in turn.
    assert_eq!(got, ["alice", "carol", "alice", "carol"]);
    let v = staff_view(&app, 1).await;
    let h = v["history"]
        .as_array()
        .expect("history")
        .iter()
        .find(|h| h["field"] == "assignee")
        .cloned()
        .expect("entry");
    assert_eq!(h["by"], "system");
}

#[tokio::test]
async fn automatic_assignment_is_off_by_default() {
    let app = start();
    let hash = auth::hash_password("agent-password-1").expect("hash");
    app.state
        .store
        .create_user("alice", Role::Agent, &hash)
        .expect("user");
    let (id, _) = submit(&app.router, "Ticket", "Please help").await;
    assert_eq!(staff_view(&app, id).await["assignee"], Value::Null);
}

#[tokio::test]
async fn the_dashboard_shows_ai_agreement_and_corrections_export_as_labelled_data() {
    let app = start();
    let hash = auth::hash_password("admin-password-1").expect("hash");
    app.state
        .store
        .create_user("admin", Role::Admin, &hash)
        .expect("user");
    let (a, _) = submit(&app.router, "Refund please", "Please refund order 7").await;
    let (b, _) = submit(&app.router, "Refund again", "Refund my second order").await;
    wait_processed(&app.state, a).await;
    wait_processed(&app.state, b).await;
    let r = send(
        &app.router,
        patch(&format!("/api/tickets/{a}"), r#"{"category": "Billing"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let agreement = app.state.store.ai_agreement().expect("agreement");
    let refund = agreement
        .iter()
        .find(|g| g.category == "Refund")
        .expect("Refund row");
    assert_eq!(
        (refund.tickets, refund.category_kept, refund.priority_kept),
        (2, 1, 2)
    );
    let rows = app.state.store.overrides(100).expect("overrides");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].ai_value.as_deref(),
            rows[0].staff_value.as_deref(),
            rows[0].by.as_str()
        ),
        (Some("Refund"), Some("Billing"), "api")
    );
    assert!(rows[0].description.contains("order 7"));
    // The export needs a staff session.
    let r = send(&app.router, get("/admin/overrides.csv")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn staff_see_who_else_has_a_ticket_open_and_who_is_typing() {
    let app = start();
    let (id, _) = submit(&app.router, "Login", "Cannot log in").await;
    // The API token acts as `api`; a second viewer is recorded directly.
    app.state.presence.heartbeat(id, "maria", true);
    let r = send(
        &app.router,
        admin_json(
            &format!("/api/tickets/{id}/presence"),
            r#"{"typing": false}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["me"], "api");
    assert_eq!(
        v["viewers"],
        json!([{"name": "api", "typing": false}, {"name": "maria", "typing": true}])
    );
    let r = send(&app.router, admin_json("/api/tickets/999/presence", "{}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(
        &app.router,
        json_req(Method::POST, &format!("/api/tickets/{id}/presence"), "{}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "staff only");
    let r = send(
        &app.router,
        admin_json(&format!("/api/tickets/{id}/presence"), r#"{"leave": true}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.state.presence.heartbeat(id, "maria", false).len(),
        1,
        "api left"
    );
}

#[tokio::test]
async fn with_ai_answers_as_drafts_the_customer_sees_only_what_staff_send() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.ai_answers = smart_support::config::AiAnswers::Draft;
    let app = start_with(dir, cfg);
    let (id, token) = submit(
        &app.router,
        "Charged twice",
        "I was charged twice this month",
    )
    .await;
    wait_processed(&app.state, id).await;
    let staff = staff_view(&app, id).await;
    let first_step = staff["solution"]["steps"][0]
        .as_str()
        .expect("a drafted step")
        .to_string();
    let customer = send(&app.router, get(&format!("/api/t/{token}")))
        .await
        .json();
    assert_eq!(customer["solution"], Value::Null);
    assert_eq!(customer["ai_answer_held"], true);
    let page = send(&app.router, get(&format!("/t/{token}"))).await;
    assert!(
        !page.body.contains(&first_step),
        "the draft is not on the tracker"
    );
    assert!(page.body.contains("a support agent will reply"));
    // What staff send from the draft reaches the customer as a message.
    let body = json!({"body": first_step, "ai_assisted": true}).to_string();
    assert_eq!(
        send(
            &app.router,
            admin_json(&format!("/api/tickets/{id}/messages"), &body)
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let customer = send(&app.router, get(&format!("/api/t/{token}")))
        .await
        .json();
    assert_eq!(
        customer["messages"].as_array().map(Vec::len),
        Some(1),
        "no message by `ai`: the draft did not reach the customer by itself"
    );
    assert_eq!(customer["messages"][0]["body"], first_step.as_str());
    assert_eq!(customer["messages"][0]["ai_assisted"], true);
}

#[tokio::test]
async fn pending_waits_on_the_customer_and_their_reply_ends_it() {
    let app = start();
    let (id, token) = submit(&app.router, "Export", "The export is empty").await;
    wait_processed(&app.state, id).await;
    let r = send(
        &app.router,
        req(Method::PATCH, &format!("/api/tickets/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"status": "Pending"}"#))
            .expect("request"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["status"], "Pending");
    // The customer sees it waiting on them.
    let mine = send(&app.router, get(&format!("/api/t/{token}")))
        .await
        .json();
    assert_eq!(mine["status"], "Pending");
    // A staff message keeps it pending; the customer's reply ends it.
    let staff = admin_json(
        &format!("/api/tickets/{id}/messages"),
        r#"{"body": "Which file?"}"#,
    );
    assert_eq!(send(&app.router, staff).await.status, StatusCode::CREATED);
    assert_eq!(staff_view(&app, id).await["status"], "Pending");
    let reply = json_req(
        Method::POST,
        &format!("/api/t/{token}/messages"),
        &json!({"body": "The March one"}).to_string(),
    );
    assert_eq!(send(&app.router, reply).await.status, StatusCode::CREATED);
    let v = staff_view(&app, id).await;
    assert_eq!(v["status"], "Open");
    let h = v["history"]
        .as_array()
        .expect("history")
        .last()
        .cloned()
        .expect("entry");
    assert_eq!(
        (h["from"].as_str(), h["to"].as_str(), h["by"].as_str()),
        (Some("Pending"), Some("Open"), Some("customer"))
    );
}

//! 200 simultaneous submissions: every one is stored and processed once.

mod common;

use axum::http::{Method, StatusCode};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_submissions_none_lost() {
    let app = start();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let router = app.router.clone();
            tokio::spawn(async move {
                let body = serde_json::json!({
                    "subject": format!("Concurrent ticket {i}"),
                    "description": format!("Ticket number {i}: my invoice shows the wrong amount."),
                });
                let r = send(
                    &router,
                    json_req(Method::POST, "/api/tickets", &body.to_string()),
                )
                .await;
                assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
                r.json()["id"].as_i64().expect("id")
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task"));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "every submission got its own id");
    for id in &ids {
        let rec = wait_processed(&app.state, *id).await;
        assert_eq!(rec.pipeline_runs, 1, "ticket {id}");
    }
    let r = send(
        &app.router,
        admin_get("/api/tickets?q=concurrent&per_page=100"),
    )
    .await;
    assert_eq!(r.json()["total"], 200);
    assert_eq!(app.state.store.backlog().expect("backlog"), 0);
}

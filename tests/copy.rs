//! `smart-support db copy`: a database with a bit of everything in it moves
//! to the other backend (PostgreSQL in the PostgreSQL pass, another SQLite
//! file in the SQLite pass) and back, row for row, and the service works on
//! the copy; a copy that would overwrite data, or copy a database onto
//! itself, is refused with the destination untouched.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{Value, json};
use smart_support::store::Store;
use smart_support::ticket::Role;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_smart-support");

fn copy(from: &Path, to: &Path) -> Output {
    Command::new(BIN)
        .args(["db", "copy", "--from"])
        .arg(from)
        .arg("--to")
        .arg(to)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run db copy")
}

fn dump(db: &Path) -> Vec<(String, Vec<Vec<String>>)> {
    Store::open(db)
        .expect("open")
        .dump_for_test()
        .expect("dump")
}

/// A SQLite database with tickets (processed, answered, resolved), a
/// conversation with an internal note, a staff account and the starter
/// knowledge base; the app is stopped before it returns.
async fn filled(dir: &TempDir) -> (std::path::PathBuf, Vec<(i64, String)>) {
    let db = dir.path().join("source.db");
    let owned = TempDir::new().expect("tempdir");
    let mut cfg = config(&owned);
    cfg.db = db.clone();
    let app = start_with(owned, cfg);
    add_user(&app, "dana", Role::Agent, "a long enough password 42");
    let mut tickets = Vec::new();
    for (s, d) in [
        (
            "Refund for a double charge",
            "I was charged twice in March.",
        ),
        ("Password reset", "The reset email never arrives."),
        ("Hacked", "Someone changed my email address."),
        ("Refund please", "Please refund order 7."),
    ] {
        tickets.push(submit(&app.router, s, d).await);
    }
    for (id, _) in &tickets {
        wait_processed(&app.state, *id).await;
    }
    let (first, token) = &tickets[0];
    for (body, internal) in [
        ("We are on it.", false),
        ("SECRET-NOTE check the PSP", true),
    ] {
        let r = send(
            &app.router,
            admin_json(
                &format!("/api/tickets/{first}/messages"),
                &json!({ "body": body, "internal": internal }).to_string(),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let r = send(
        &app.router,
        json_req(Method::POST, &format!("/api/t/{token}/resolve"), ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    app.state.shutdown.trigger();
    let TestApp { worker, lock, .. } = app;
    worker.abort();
    let _ = worker.await;
    drop(lock);
    (db, tickets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_moves_to_the_other_backend_and_back_row_for_row() {
    let dir = TempDir::new().expect("tempdir");
    let (source, tickets) = filled(&dir).await;
    let there_dir = TempDir::new().expect("tempdir");
    let there = test_db(&there_dir);
    let out = copy(&source, &there);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(
        report["to"]
            .as_str()
            .is_some_and(|t| t.starts_with("postgres://")),
        on_postgres(),
        "{report}"
    );
    let tables = report["tables"].as_array().expect("tables");
    assert!(
        tables.iter().any(|t| t[0] == "tickets" && t[1] == 4),
        "{report}"
    );
    assert!(
        tables.iter().any(|t| t[0] == "users" && t[1] == 1),
        "{report}"
    );
    assert!(report["rows"].as_i64().is_some_and(|n| n > 20), "{report}");

    let back = dir.path().join("back.db");
    let out = copy(&there, &back);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original = dump(&source);
    assert!(
        original
            .iter()
            .any(|(t, rows)| t == "events" && rows.len() > 8)
    );
    assert_eq!(dump(&there), original, "the copy holds the same rows");
    assert_eq!(dump(&back), original, "and so does the copy of the copy");

    // The service runs on the copy: search, tracking tokens, staff accounts;
    // new rows continue after the copied ids.
    let last_event = Store::open(&there)
        .expect("open")
        .number_for_test("SELECT MAX(id) FROM events")
        .expect("max")
        .expect("events");
    let mut cfg = config(&there_dir);
    cfg.db = there.clone();
    let app = start_with(there_dir, cfg);
    let v = send(&app.router, admin_get("/api/tickets?q=refund"))
        .await
        .json();
    assert_eq!(v["total"], 2, "{v}");
    let (first, token) = &tickets[0];
    let v = send(&app.router, get(&format!("/api/t/{token}")))
        .await
        .json();
    assert_eq!(v["id"], *first, "{v}");
    assert!(!v.to_string().contains("SECRET-NOTE"), "{v}");
    sign_in(&app, "dana", "a long enough password 42")
        .await
        .expect("the copied account signs in");
    let (id, _) = submit(&app.router, "After the move", "A new ticket.").await;
    assert_eq!(id, 5, "ids continue after the copied ones");
    wait_processed(&app.state, id).await;
    let newest = app
        .state
        .store
        .number_for_test(&format!(
            "SELECT MIN(id) FROM events WHERE ticket_id = {id}"
        ))
        .expect("events")
        .expect("an event");
    assert!(newest > last_event, "{newest} after {last_event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_would_overwrite_data_or_copy_onto_itself_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    let (source, _) = filled(&dir).await;
    let before = dump(&source);

    let out = copy(&source, &source);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the same database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A destination that holds tickets stays as it was.
    let other_dir = TempDir::new().expect("tempdir");
    let other = test_db(&other_dir);
    let store = Store::open(&other).expect("open");
    store
        .create_ticket(&smart_support::ticket::TicketInput {
            subject: "Someone's data".into(),
            description: "Not to be overwritten.".into(),
        })
        .expect("create");
    let theirs = store.dump_for_test().expect("dump");
    drop(store);
    let out = copy(&source, &other);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already holds 1 tickets"), "{err}");
    assert_eq!(dump(&other), theirs, "the destination is untouched");
    assert_eq!(dump(&source), before, "and so is the source");

    let out = copy(&dir.path().join("missing.db"), &dir.path().join("new.db"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!dir.path().join("new.db").exists(), "nothing was created");

    // A server that is not there: a clear error, and never the password.
    let url = format!(
        "postgres://someone:hunter2-secret@127.0.0.1:{}/nowhere",
        free_port()
    );
    let out = copy(&source, Path::new(&url));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open postgres://someone:***@127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

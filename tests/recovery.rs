//! Restart recovery: accepted-but-unprocessed tickets are processed after a
//! restart, interrupted ones are run again, and finished ones never are.

mod common;

use common::*;
use smart_support::store::{Processing, Store};
use smart_support::ticket::{Status, TicketInput};

#[tokio::test]
async fn restart_processes_the_backlog_exactly_once() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    // "Before the crash": one ticket done, one accepted, one caught mid-pipeline.
    let (done, accepted, interrupted) = {
        let store = Store::open(&cfg.db).expect("open");
        let t = |s: &str| TicketInput {
            subject: s.into(),
            description: format!("{s} please help, order 7 is late"),
        };
        let (done, _) = store.create_ticket(&t("done")).expect("create");
        let lease = std::time::Duration::from_secs(600);
        let claim = store
            .claim(done, "before", lease)
            .expect("claim")
            .expect("claimed");
        let analysis = smart_support::pipeline::Pipeline::rules_only().run(&t("done"));
        store.complete(&claim, &analysis).expect("complete");
        store.resolve(done, "customer").expect("resolve");
        let (accepted, _) = store.create_ticket(&t("accepted")).expect("create");
        let (interrupted, _) = store.create_ticket(&t("interrupted")).expect("create");
        // Its lease runs ten more minutes, but its holder is gone.
        store
            .claim(interrupted, "before", lease)
            .expect("claim")
            .expect("claimed");
        (done, accepted, interrupted)
    };

    let app = start_with(dir, cfg.clone());
    let a = wait_processed(&app.state, accepted).await;
    let i = wait_processed(&app.state, interrupted).await;
    assert_eq!(a.pipeline_runs, 1);
    assert_eq!(
        i.pipeline_runs, 2,
        "the interrupted run left no result, so it ran again"
    );
    let d = app.state.store.get(done).expect("done");
    assert_eq!(d.pipeline_runs, 1, "a finished ticket is never re-run");
    assert_eq!(d.status, Status::Resolved);
    assert_eq!(a.processing, Processing::Done);

    // A second restart finds nothing to do.
    // (the first instance ends, releasing the database lock)
    let TestApp {
        dir, worker, lock, ..
    } = app;
    worker.abort();
    drop(lock);
    let app = start_with(dir, cfg);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for id in [done, accepted, interrupted] {
        let rec = app.state.store.get(id).expect("ticket");
        assert_eq!(rec.processing, Processing::Done);
        assert!(rec.pipeline_runs <= 2 && (id == interrupted || rec.pipeline_runs == 1));
    }
    assert_eq!(app.state.store.backlog().expect("backlog"), 0);
}

#[tokio::test]
async fn a_ticket_whose_attempts_ran_out_is_answered_by_the_rules_and_staff_see_why() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.max_attempts = 2;
    let id = {
        let store = Store::open(&cfg.db).expect("open");
        let (id, _) = store
            .create_ticket(&TicketInput {
                subject: "Refund".into(),
                description: "Please refund order 7".into(),
            })
            .expect("create");
        // Two processes died holding it (each start expires the leases).
        for _ in 0..2 {
            store.expire_leases().expect("expire");
            let lease = std::time::Duration::from_secs(600);
            store
                .claim_next("doomed", lease)
                .expect("claim")
                .expect("claimed");
        }
        id
    };
    let app = start_with(dir, cfg);
    let rec = wait_processed(&app.state, id).await;
    assert_eq!(rec.processing, Processing::Done);
    assert_eq!(rec.attempts, 3);
    let failure = rec.failure.clone().expect("the reason is kept");
    assert!(
        failure.contains("did not finish in 2 attempts")
            && failure.contains("the service stopped while processing it"),
        "{failure}"
    );
    let analysis = rec.analysis.expect("answered");
    assert_eq!(analysis.agents.classifier.engine, "rules");
    let v = send(&app.router, admin_get(&format!("/api/tickets/{id}")))
        .await
        .json();
    assert_eq!(v["failure"], failure.as_str(), "{v}");
    assert_eq!(v["attempts"], 3);
    // Customers see the answer, not the reason.
    let public = send(&app.router, get(&format!("/api/t/{}", rec.token))).await;
    assert_eq!(public.status, axum::http::StatusCode::OK);
    assert!(public.json()["category"].is_string(), "{}", public.body);
    assert!(
        !public.body.contains("attempts") && public.json()["failure"].is_null(),
        "{}",
        public.body
    );
}

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
        store.claim(done).expect("claim").expect("claimed");
        let analysis = smart_support::pipeline::Pipeline::rules_only().run(&t("done"));
        store.complete(done, &analysis).expect("complete");
        store.resolve(done, "customer").expect("resolve");
        let (accepted, _) = store.create_ticket(&t("accepted")).expect("create");
        let (interrupted, _) = store.create_ticket(&t("interrupted")).expect("create");
        store.claim(interrupted).expect("claim").expect("claimed");
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

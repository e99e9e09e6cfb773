//! The store: once-only claims under leases, writes under concurrency and
//! the change feed (on the tests' backend: SQLite, or PostgreSQL in its
//! pass); and the SQLite file's own: migrations from every earlier version,
//! a newer or foreign file refused, a second process waiting its turn.

mod common;

use std::sync::Arc;
use std::time::Duration;

use smart_support::pipeline::Pipeline;
use smart_support::store::migrations::{LATEST, MIGRATIONS};
use smart_support::store::{ListQuery, Processing, Store, StoreError};
use smart_support::ticket::{Status, TicketInput};
use tempfile::TempDir;

const LEASE: Duration = Duration::from_secs(60);

fn input(subject: &str, description: &str) -> TicketInput {
    TicketInput {
        subject: subject.into(),
        description: description.into(),
    }
}

fn all() -> ListQuery {
    ListQuery {
        page: 1,
        per_page: 100,
        ..Default::default()
    }
}

#[test]
fn fresh_file_gets_the_latest_schema_and_its_directory() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("nested").join("deeper").join("t.db");
    let store = Store::open(&path).expect("open");
    assert_eq!(store.schema_version().expect("version"), LATEST);
    assert!(path.exists());
    // Opening again is a no-op.
    drop(store);
    assert_eq!(
        Store::open(&path)
            .expect("reopen")
            .schema_version()
            .expect("v"),
        LATEST
    );
}

/// Raw inserts that only use the version-1 columns, as an old release wrote them.
fn insert_v1_ticket(dir: &TempDir, subject: &str) {
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("open");
    conn.execute(
        "INSERT INTO tickets (token, token_prefix, subject, description, status, created_at, updated_at)
         VALUES (?1, substr(?1, 1, 8), ?2, 'old description about a refund', 'Open', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
        rusqlite::params![format!("{:048x}", subject.len() as u128 * 7919 + 1), subject],
    )
    .expect("insert");
}

#[test]
fn every_earlier_version_upgrades_with_its_data() {
    for start in 1..LATEST {
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("t.db");
        {
            let store = Store::open_to(&path, start).expect("old schema");
            assert_eq!(store.schema_version().expect("v"), start);
        }
        insert_v1_ticket(&dir, &format!("legacy ticket from v{start}"));
        let store = Store::open(&path).expect("upgrade");
        assert_eq!(store.schema_version().expect("v"), LATEST, "from {start}");
        // Old rows are intact, searchable (FTS rebuilt) and processable.
        let (rows, total) = store
            .list(&ListQuery {
                q: Some("legacy refund".into()),
                ..all()
            })
            .expect("search");
        assert_eq!(total, 1, "from v{start}");
        assert_eq!(rows[0].subject, format!("legacy ticket from v{start}"));
        assert_eq!(store.pending(10).expect("pending"), vec![rows[0].id]);
        assert!(
            store
                .claim(rows[0].id, "test", LEASE)
                .expect("claim")
                .is_some()
        );
        // New writes work on the upgraded file.
        store
            .create_ticket(&input("new", "after upgrade"))
            .expect("insert");
    }
    assert_eq!(MIGRATIONS.len(), LATEST);
}

#[test]
fn newer_schema_is_refused_with_a_clear_error() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("t.db");
    drop(Store::open(&path).expect("open"));
    let conn = rusqlite::Connection::open(&path).expect("raw");
    conn.pragma_update(None, "user_version", 99)
        .expect("pragma");
    drop(conn);
    match Store::open(&path) {
        Err(e @ StoreError::SchemaTooNew { .. }) => assert!(e.to_string().contains("99")),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[test]
fn not_a_database_is_a_clear_error() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("t.db");
    std::fs::write(
        &path,
        b"this is not sqlite, just text that is long enough to fill a header",
    )
    .expect("write");
    let err = Store::open(&path).err().expect("must fail");
    assert!(err.to_string().contains("database"), "{err}");
}

#[test]
fn a_ticket_is_claimed_once_and_completed_once() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(&common::test_db(&dir)).expect("open");
    let (id, _) = store
        .create_ticket(&input("Refund", "refund please"))
        .expect("create");
    let claim = store
        .claim(id, "a", LEASE)
        .expect("claim")
        .expect("claimed");
    assert!(store.claim(id, "b", LEASE).expect("second claim").is_none());
    assert!(store.claim_next("b", LEASE).expect("next").is_none());
    let analysis = Pipeline::rules_only().run(&input("Refund", "refund please"));
    store.complete(&claim, &analysis).expect("complete");
    assert!(matches!(
        store.complete(&claim, &analysis),
        Err(StoreError::Conflict(_))
    ));
    let rec = store.get(id).expect("get");
    assert_eq!(rec.processing, Processing::Done);
    assert_eq!((rec.pipeline_runs, rec.attempts), (1, 1));
    assert_eq!(rec.status, Status::InProgress);
    assert_eq!(store.expire_leases().expect("expire"), 0);
    assert!(store.pending(10).expect("pending").is_empty());
}

#[test]
fn an_expired_lease_is_claimed_again_and_the_old_holder_is_fenced_off() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(&common::test_db(&dir)).expect("open");
    let (id, _) = store
        .create_ticket(&input("Refund", "refund please"))
        .expect("create");
    let slow = store
        .claim_next("slow", Duration::from_millis(200))
        .expect("claim")
        .expect("claimed");
    assert_eq!(
        (slow.id, slow.attempt, slow.last_error.clone()),
        (id, 1, None)
    );
    assert!(
        store
            .renew(&slow, Duration::from_millis(200))
            .expect("renew")
    );
    assert!(store.claim_next("fast", LEASE).expect("held").is_none());
    std::thread::sleep(Duration::from_millis(300));
    // Expired: another worker takes it, knowing why the last try ended.
    let fast = store
        .claim_next("fast", LEASE)
        .expect("claim")
        .expect("claimed");
    assert_eq!((fast.id, fast.attempt), (id, 2));
    assert!(
        fast.last_error
            .as_deref()
            .is_some_and(|e| e.contains("slow")),
        "{fast:?}"
    );
    assert_ne!(fast.token, slow.token);
    // The old holder can neither renew, nor store, nor hand it back.
    assert!(!store.renew(&slow, LEASE).expect("renew"));
    let analysis = Pipeline::rules_only().run(&input("Refund", "refund please"));
    assert!(matches!(
        store.complete(&slow, &analysis),
        Err(StoreError::Conflict(_))
    ));
    assert!(!store.release(&slow).expect("release"));
    // The holder stores exactly one result.
    store.complete(&fast, &analysis).expect("complete");
    let rec = store.get(id).expect("get");
    assert_eq!(
        (rec.processing, rec.attempts, rec.pipeline_runs),
        (Processing::Done, 2, 2)
    );
    assert!(store.claim_next("late", LEASE).expect("done").is_none());
}

#[test]
fn a_handed_back_ticket_does_not_count_an_attempt_and_attempts_run_out() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(&common::test_db(&dir)).expect("open");
    let (id, _) = store
        .create_ticket(&input("Refund", "refund please"))
        .expect("create");
    let c = store
        .claim_next("a", LEASE)
        .expect("claim")
        .expect("claimed");
    assert!(store.release(&c).expect("release"));
    let c = store
        .claim_next("a", LEASE)
        .expect("claim")
        .expect("claimed");
    assert_eq!(
        (c.attempt, c.last_error.clone()),
        (1, None),
        "a shutdown is no failed attempt"
    );
    // Three processes die holding it (each start expires the leases).
    for n in 2..=4 {
        assert_eq!(store.expire_leases().expect("expire"), 1);
        let c = store
            .claim_next("a", LEASE)
            .expect("claim")
            .expect("claimed");
        assert_eq!(c.attempt, n);
        assert_eq!(
            c.last_error.as_deref(),
            Some("the service stopped while processing it")
        );
        assert_eq!(c.exhausted(3), n > 3, "attempt {n}");
    }
    assert_eq!(store.get(id).expect("get").attempts, 4);
    // A failed attempt given up by a live worker counts too, and the
    // ticket is claimable again at once.
    assert_eq!(store.expire_leases().expect("expire"), 1);
    let c = store
        .claim_next("a", LEASE)
        .expect("claim")
        .expect("claimed");
    assert_eq!(c.attempt, 5);
    assert!(
        store
            .abandon(&c, "the pipeline task failed")
            .expect("abandon")
    );
    assert!(!store.abandon(&c, "twice").expect("not held"));
    let c = store
        .claim_next("b", LEASE)
        .expect("claim")
        .expect("claimed");
    assert_eq!(
        (c.attempt, c.last_error.as_deref()),
        (6, Some("the pipeline task failed"))
    );
}

#[test]
fn concurrent_writers_never_hit_busy() {
    let dir = TempDir::new().expect("tempdir");
    let store = Arc::new(Store::open(&common::test_db(&dir)).expect("open"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let (id, _) = store
                        .create_ticket(&input(&format!("t{t} n{i}"), "text"))
                        .expect("create");
                    if i % 5 == 0 {
                        store.resolve(id, "test").expect("resolve");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let (_, total) = store.list(&all()).expect("list");
    assert_eq!(total, 400);
    let counts = store.status_counts().expect("counts");
    assert_eq!(
        counts
            .iter()
            .find(|(s, _)| *s == Status::Resolved)
            .map(|c| c.1),
        Some(80)
    );
}

#[test]
fn a_second_process_waits_instead_of_failing() {
    // Another connection holding a write lock briefly (e.g. `admin set-password`
    // against a live database) must not make our writes fail.
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("t.db");
    let store = Store::open(&path).expect("open");
    let other = rusqlite::Connection::open(&path).expect("other");
    other
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO settings VALUES ('k', 'v');")
        .expect("lock");
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        other.execute_batch("COMMIT").expect("commit");
    });
    store
        .create_ticket(&input("while locked", "x"))
        .expect("waits for the lock");
    releaser.join().expect("thread");
    assert_eq!(store.setting("k").expect("read").as_deref(), Some("v"));
}

#[test]
fn the_feed_has_every_change_in_order_and_never_reuses_an_id() {
    use smart_support::store::{Author, NewMessage};
    use smart_support::ticket::EventKind as K;
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(&common::test_db(&dir)).expect("open");
    let (id, _) = store
        .create_ticket(&input("Refund", "refund order 7"))
        .expect("create");
    let claim = store
        .claim(id, "w", LEASE)
        .expect("claim")
        .expect("claimed");
    let analysis = Pipeline::rules_only().run(&input("Refund", "refund order 7"));
    store.complete(&claim, &analysis).expect("complete");
    let note = NewMessage {
        author: Author::Staff("ann".into()),
        internal: true,
        ai_assisted: false,
        body: "checking".into(),
    };
    store.add_message(id, &note, 14).expect("note");
    store.resolve(id, "customer").expect("resolve");
    store.rate(id, 3, None).expect("rate");
    let feed = store.feed_after(0, 100).expect("feed");
    let kinds: Vec<_> = feed.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds[..2],
        [K::Submitted, K::ProcessingStarted],
        "{kinds:?}"
    );
    assert!(kinds.contains(&K::AiCompleted) && kinds.contains(&K::Message));
    assert_eq!(kinds.last(), Some(&K::Rated), "{kinds:?}");
    assert!(feed.windows(2).all(|w| w[0].id < w[1].id), "ids grow");
    assert!(
        feed.iter()
            .all(|e| e.ticket_id == id && e.status == Status::Resolved)
    );
    // Messages and staff changes are in the feed, not in the history.
    let history = store.get(id).expect("get").events;
    assert!(history.iter().all(|e| e.kind.in_history()), "{history:?}");

    // Re-rating replaces the newest event: its id is not handed out again,
    // or a follower that had read it would miss the new rating.
    let newest = store.last_event_id().expect("last");
    store.rate(id, 5, None).expect("rate again");
    let after = store.feed_after(newest, 10).expect("feed");
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].id > newest && after[0].kind == K::Rated);
    assert_eq!(
        store
            .feed_after(store.last_event_id().expect("last"), 10)
            .expect("feed"),
        []
    );
}

#[test]
fn on_postgres_a_tls_url_encrypts_and_checks_the_certificate() {
    if !common::on_postgres() {
        eprintln!("PostgreSQL only (TLS): runs in the PostgreSQL pass");
        return;
    }
    let Ok(ca) = std::env::var("SMART_SUPPORT_TEST_POSTGRES_CA") else {
        // scripts/test-postgres.sh always sets it for its own cluster.
        assert_ne!(
            std::env::var("SMART_SUPPORT_REQUIRE_POSTGRES").as_deref(),
            Ok("1"),
            "SMART_SUPPORT_TEST_POSTGRES_CA is needed for the TLS test"
        );
        eprintln!("skipping: SMART_SUPPORT_TEST_POSTGRES_CA (the server's CA) is not set");
        return;
    };
    let url = common::fresh_postgres().expect("a test database");
    let how = "SELECT CASE WHEN ssl THEN 'tls' ELSE 'plain' END FROM pg_stat_ssl
               WHERE pid = pg_backend_pid()";
    let session = |url: &str| {
        Store::open(std::path::Path::new(url))
            .and_then(|s| s.text_for_test(how))
            .map(|t| t.unwrap_or_default())
    };
    let tls = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    assert_eq!(session(&tls).expect("a TLS session"), "tls");
    assert_eq!(session(&url).expect("a plain session"), "plain");
    // The public web roots do not know the test CA: refused, not downgraded.
    let err = session(&format!("{url}?sslmode=require")).expect_err("an unknown issuer is refused");
    assert!(err.to_string().contains("certificate"), "{err}");
    let err = session(&format!(
        "{url}?sslmode=require&sslrootcert=/nowhere/ca.pem"
    ))
    .expect_err("a missing CA file is refused");
    assert!(err.to_string().contains("/nowhere/ca.pem"), "{err}");
}

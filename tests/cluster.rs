//! Several real server processes on one database: two web nodes and two
//! worker nodes. Tickets submitted to either web node are processed by the
//! workers exactly once, also when a worker is killed in the middle of a
//! ticket; a live stream on a web node sees what the workers did.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;
use smart_support::store::Store;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_smart-support");
const TOKEN: &str = "cluster-admin-token-0123456789abcdef012345";
const TICKETS: usize = 300;

struct Node {
    child: Child,
    addr: String,
    /// Its log, read so the pipe never fills.
    _log: Receiver<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve --role ROLE` on `db` (no models), once it listens; or its error.
fn start(db: &Path, role: &str) -> Result<Node, String> {
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(db)
        .args(["--role", role, "--nli-model", "none", "--gen-model", "none"])
        .args(["--lease-secs", "3", "--workers", "2"])
        // One test client submits every ticket: lift the per-address limit.
        .args(["--intake-per-address", "0", "--intake-per-minute", "0"])
        .env("SMART_SUPPORT_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let Ok(line) = log.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            return Err(seen.join("\n"));
        };
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            return Ok(Node {
                child,
                addr,
                _log: log,
            });
        }
        seen.push(line);
    }
}

fn signal(node: &Node, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success(), "kill {sig}");
}

fn submit(agent: &ureq::Agent, node: &Node, n: usize) -> i64 {
    let body = serde_json::json!({
        "subject": format!("Order {n} arrived broken"),
        "description": format!("Ticket {n}: I want a refund for order {n}, the box was crushed."),
    });
    let resp: Value = agent
        .post(&format!("http://{}/api/tickets", node.addr))
        .send_json(body)
        .expect("accepted")
        .into_json()
        .expect("json");
    resp["id"].as_i64().expect("id")
}

fn staff_health(agent: &ureq::Agent, node: &Node) -> Value {
    agent
        .get(&format!("http://{}/health", node.addr))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("health")
        .into_json()
        .expect("json")
}

/// The dashboard's live stream on `node`, read on a thread: the ids of the
/// tickets it reported `ai_completed` for.
fn completions_seen(node: &Node) -> Receiver<i64> {
    let url = format!("http://{}/api/admin/events", node.addr);
    let resp = ureq::get(&url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("stream opens");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in BufReader::new(resp.into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:")
                && event == "ticket"
            {
                let v: Value = serde_json::from_str(data.trim()).unwrap_or_default();
                if v["kind"] == "ai_completed" {
                    let _ = tx.send(v["id"].as_i64().unwrap_or(-1));
                }
            }
        }
    });
    rx
}

/// The database as the test reads it (a store of its own: the same
/// queries on either backend).
fn reader(db: &Path) -> &'static Store {
    static STORE: std::sync::OnceLock<Store> = std::sync::OnceLock::new();
    STORE.get_or_init(|| Store::open(db).expect("open the database"))
}

fn count(db: &Path, sql: &str) -> i64 {
    reader(db)
        .number_for_test(sql)
        .expect(sql)
        .unwrap_or_default()
}

/// The ticket `node` (a worker) holds under a lease right now, if any.
fn holding(db: &Path, node: &Node) -> Option<i64> {
    let sql = format!(
        "SELECT id FROM tickets WHERE processing = 'processing' AND lease_owner LIKE '%:{}:%'",
        node.child.id()
    );
    reader(db).number_for_test(&sql).ok().flatten()
}

/// Waits until worker `node` has finished a ticket.
fn wait_for_work(db: &Path, node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let sql = format!(
        "SELECT COUNT(*) FROM tickets WHERE processing = 'done' AND lease_owner LIKE '%:{}:%'",
        node.child.id()
    );
    while count(db, &sql) == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker never finished a ticket"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until every thread of `node` is stopped (state `T` in
/// `/proc/PID/task/*/stat`).
fn wait_stopped(node: &Node) {
    let tasks = format!("/proc/{}/task", node.child.id());
    let stopped = || {
        std::fs::read_dir(&tasks).is_ok_and(|dir| {
            dir.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                    // The state follows the command name's closing parenthesis.
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with(['T', 't']))
                })
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stopped() {
        assert!(Instant::now() < deadline, "the worker did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Freezes worker `node` while it holds a ticket (trying again while it
/// holds none) and returns that ticket.
fn freeze_holding(db: &Path, node: &Node) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        signal(node, "-STOP");
        // kill returns once the signal is sent; a thread running on another
        // core may still commit its ticket until it has really stopped.
        wait_stopped(node);
        if let Some(id) = holding(db, node) {
            return id;
        }
        signal(node, "-CONT");
        std::thread::sleep(Duration::from_millis(3));
    }
    panic!("the worker never held a ticket");
}

#[test]
fn four_nodes_process_every_ticket_once_through_a_worker_crash() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let db: PathBuf = common::test_db(&dir);
    let web_a = start(&db, "web").expect("web a");
    let web_b = start(&db, "web").expect("web b");
    let worker_c = start(&db, "worker").expect("worker c");
    let worker_d = start(&db, "worker").expect("worker d");
    if !common::on_postgres() {
        // A process that wants the file to itself cannot join.
        let err = start(&db, "all")
            .err()
            .expect("an all-in-one node is refused");
        assert!(err.contains("--role all owns its file alone"), "{err}");
    }

    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let h = staff_health(&agent, &web_a);
    assert_eq!(h["role"], "web");
    assert_eq!(h["db"]["backend"], common::backend_name());
    // The worker itself serves its health, and nothing else.
    let w = staff_health(&agent, &worker_c);
    assert_eq!(w["role"], "worker");
    let err = agent
        .get(&format!("http://{}/admin", worker_c.addr))
        .call()
        .expect_err("no pages on a worker");
    assert!(matches!(err, ureq::Error::Status(404, _)), "{err}");

    let seen = completions_seen(&web_a);
    let mut ids = Vec::new();
    let mut frozen = None;
    for n in 0..TICKETS {
        let web = if n % 2 == 0 { &web_a } else { &web_b };
        ids.push(submit(&agent, web, n));
        // A backlog is queued: once c is working through it, kill it in the
        // middle of a ticket. The rest of the tickets come after.
        if n == TICKETS * 2 / 3 {
            wait_for_work(&db, &worker_c);
            frozen = Some(freeze_holding(&db, &worker_c));
            signal(&worker_c, "-KILL");
        }
    }
    let interrupted = frozen.expect("a ticket was interrupted");

    // Every ticket ends processed, the interrupted one by the other worker
    // once its lease ran out.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(
        &db,
        "SELECT COUNT(*) FROM tickets WHERE processing = 'done'",
    ) < TICKETS as i64
    {
        assert!(Instant::now() < deadline, "tickets left unprocessed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let one = |sql: &str| count(&db, sql);
    assert_eq!(one("SELECT COUNT(*) FROM tickets"), TICKETS as i64);
    assert_eq!(
        one("SELECT COUNT(*) FROM tickets WHERE analysis IS NULL"),
        0,
        "every ticket has its result"
    );
    assert_eq!(
        one("SELECT COUNT(*) FROM events WHERE kind = 'ai_completed'"),
        TICKETS as i64,
        "one completion event per ticket"
    );
    assert_eq!(
        one(
            "SELECT COUNT(*) FROM (SELECT ticket_id FROM events WHERE kind = 'ai_completed'
             GROUP BY ticket_id HAVING COUNT(*) > 1) AS repeated"
        ),
        0
    );
    assert_eq!(
        one(
            "SELECT COUNT(*) FROM (SELECT ticket_id FROM messages WHERE author_kind = 'ai'
             GROUP BY ticket_id HAVING COUNT(*) > 1) AS repeated"
        ),
        0,
        "at most one AI answer per ticket"
    );
    let attempts = one(&format!(
        "SELECT attempts FROM tickets WHERE id = {interrupted}"
    ));
    let owner = reader(&db)
        .text_for_test(&format!(
            "SELECT lease_owner FROM tickets WHERE id = {interrupted}"
        ))
        .expect("interrupted ticket")
        .unwrap_or_default();
    assert_eq!(attempts, 2, "claimed by c, then by d");
    assert!(
        owner.contains(&format!(":{}:", worker_d.child.id())),
        "{owner}"
    );

    // The stream on web node A saw every completion, all done elsewhere,
    // by both workers.
    let mut reported = std::collections::BTreeSet::new();
    while reported.len() < TICKETS {
        match seen.recv_timeout(Duration::from_secs(10)) {
            Ok(id) => {
                reported.insert(id);
            }
            Err(_) => panic!("the stream on A reported {} of {TICKETS}", reported.len()),
        }
    }
    assert_eq!(reported, ids.iter().copied().collect());
    for worker in [&worker_c, &worker_d] {
        let by = count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM tickets WHERE lease_owner LIKE '%:{}:%'",
                worker.child.id()
            ),
        );
        assert!(by > 0, "worker {} processed none", worker.child.id());
    }
    let h = staff_health(&agent, &web_b);
    assert_eq!(h["worker"]["backlog"], 0, "{h}");
}

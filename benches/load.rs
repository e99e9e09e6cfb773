//! Intake under read load: tickets accepted per second while other clients
//! read, with the read connections (`--db-readers 4`, the default) and with
//! reads sharing the writer's connection (`--db-readers 0`, how every read
//! worked before), measured in the same run on the real server over loopback.
//!
//! The three read loads from the hardening issue:
//! 1. eight clients polling one ticket that has 20 000 events;
//! 2. 5 000 idle customer event streams;
//! 3. three dashboard event streams on 70 000 tickets (every new ticket
//!    makes each stream count tickets by status).
//!
//! `cargo bench --bench load` (release build). `SMART_SUPPORT_LOAD_SECS`
//! sets each measurement's length (default 5 s). Prints one table; each
//! figure is the median of `SMART_SUPPORT_LOAD_RUNS` runs (default 3),
//! configurations interleaved.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use smart_support::config::ServeConfig;
use smart_support::models::LoadedModels;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "load-bench-admin-token-0123456789abcdef";
const INTAKE_CLIENTS: usize = 4;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Load {
    None,
    Polling,
    Streams,
    Dashboards,
}

impl Load {
    fn label(self) -> &'static str {
        match self {
            Load::None => "no read load",
            Load::Polling => "8 clients polling a ticket with 20 000 events",
            Load::Streams => "5 000 idle customer streams",
            Load::Dashboards => "3 dashboard streams, 70 000 tickets",
        }
    }
}

/// Fills the database directly (one transaction) before the server starts.
fn seed(db: &std::path::Path, load: Load) -> String {
    let store = smart_support::store::Store::open(db).expect("open");
    let (id, token) = store
        .create_ticket(&smart_support::ticket::TicketInput {
            subject: "Seed".into(),
            description: "The ticket the readers watch".into(),
        })
        .expect("seed");
    drop(store);
    let mut conn = rusqlite::Connection::open(db).expect("open");
    let tx = conn.transaction().expect("tx");
    match load {
        Load::Polling => {
            let mut st = tx
                .prepare("INSERT INTO events (ticket_id, kind, detail, at) VALUES (?1, 'rated', '5 stars', '2026-01-01T00:00:00.000Z')")
                .expect("prepare");
            for _ in 0..20_000 {
                st.execute([id]).expect("insert");
            }
        }
        Load::Dashboards => {
            let mut st = tx
                .prepare(
                    "INSERT INTO tickets (token, token_prefix, subject, description, status, processing, category, priority, created_at, updated_at)
                     VALUES (?1, substr(?1, 1, 8), 'Old ticket', 'Words of an old ticket', ?2, 'done', 'Billing', 'Low', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
                )
                .expect("prepare");
            for n in 0..70_000u32 {
                let status = ["Resolved", "Escalated", "In Progress"][n as usize % 3];
                st.execute(rusqlite::params![format!("{n:048x}"), status])
                    .expect("insert");
            }
        }
        _ => {}
    }
    tx.commit().expect("commit");
    token
}

async fn serve(
    readers: usize,
    load: Load,
) -> (
    SocketAddr,
    String,
    tempfile::TempDir,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut cfg = ServeConfig::defaults(dir.path().join("load.db"));
    let token = seed(&cfg.db, load);
    cfg.admin_token = Some(TOKEN.into());
    cfg.db_readers = readers;
    cfg.limits.intake_per_address = 0;
    cfg.limits.intake_per_minute = 0;
    cfg.limits.max_connections = 6_000;
    cfg.limits.max_streams = 5_500;
    cfg.limits.max_streams_per_ticket = 6_000;
    cfg.shutdown_grace_secs = 1;
    let app = smart_support::app::build(cfg, LoadedModels::rules_only()).expect("build");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(listener, async move {
        let _ = rx.await;
    }));
    (addr, token, dir, tx)
}

async fn get(client: &HttpClient, url: &str, auth: bool) -> bool {
    let mut req = hyper::Request::get(url);
    if auth {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    let Ok(req) = req.body(Full::new(Bytes::new())) else {
        return false;
    };
    match client.request(req).await {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

/// Opens an event stream on a raw socket and reads its first bytes.
async fn open_stream(addr: SocketAddr, path: &str, auth: bool) -> Option<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = if auth {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Accept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf[..n])
        .contains("200 OK")
        .then_some(s)
}

/// Keeps a stream's socket drained so the server never blocks on it.
fn drain(mut s: tokio::net::TcpStream, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
        }
    });
}

async fn measure(readers: usize, load: Load, secs: u64) -> f64 {
    let (addr, token, _dir, stop_server) = serve(readers, load).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let stop = Arc::new(AtomicBool::new(false));
    match load {
        Load::None => {}
        Load::Polling => {
            for _ in 0..8 {
                let (client, stop) = (client.clone(), stop.clone());
                let url = format!("http://{addr}/api/t/{token}/status");
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        get(&client, &url, false).await;
                    }
                });
            }
        }
        Load::Streams => {
            let mut opened = 0;
            for _ in 0..5_000 {
                if let Some(s) = open_stream(addr, &format!("/api/t/{token}/events"), false).await {
                    drain(s, stop.clone());
                    opened += 1;
                }
            }
            assert_eq!(opened, 5_000, "streams opened");
        }
        Load::Dashboards => {
            for _ in 0..3 {
                let s = open_stream(addr, "/api/admin/events", true)
                    .await
                    .expect("dashboard stream");
                drain(s, stop.clone());
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..INTAKE_CLIENTS {
        let (client, accepted) = (client.clone(), accepted.clone());
        let url = format!("http://{addr}/api/tickets");
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                let body = format!(
                    r#"{{"subject":"Load {c}-{n}","description":"Where is my order number {n}?"}}"#
                );
                let Ok(req) = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                else {
                    continue;
                };
                if let Ok(r) = client.request(req).await {
                    if r.status().as_u16() == 202 {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = r.into_body().collect().await;
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let rate = accepted.load(Ordering::Relaxed) as f64 / secs as f64;
    stop.store(true, Ordering::Relaxed);
    let _ = stop_server.send(());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let secs = env("SMART_SUPPORT_LOAD_SECS", 5);
    let runs = env("SMART_SUPPORT_LOAD_RUNS", 3).max(1);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "intake, {INTAKE_CLIENTS} clients, {secs} s per measurement, median of {runs}; {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| read load | tickets/s, reads share the writer (--db-readers 0) | tickets/s, 4 read connections | ratio |"
    );
    println!("| --- | --- | --- | --- |");
    for load in [Load::None, Load::Polling, Load::Streams, Load::Dashboards] {
        let (mut shared, mut pooled) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            shared.push(rt.block_on(measure(0, load, secs)));
            pooled.push(rt.block_on(measure(4, load, secs)));
        }
        let (s, p) = (median(shared), median(pooled));
        println!(
            "| {} | {s:.0} | {p:.0} | {:.2}× |",
            load.label(),
            p / s.max(1e-9)
        );
    }
}

//! Test helpers: a real app (store in a temp dir, worker running) driven
//! through its router without a socket.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use smart_support::app::{self, App};
use smart_support::config::ServeConfig;
use smart_support::models::LoadedModels;
use smart_support::web::SharedState;
use tempfile::TempDir;
use tower::ServiceExt;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";

pub struct TestApp {
    pub router: Router,
    pub state: SharedState,
    pub worker: tokio::task::JoinHandle<()>,
    pub dir: TempDir,
    /// The database lock, held as long as the app lives.
    pub lock: Option<std::fs::File>,
}

/// The defaults, with an admin token and intake limits lifted: tests of
/// other things submit many tickets from one (in-process) address. The
/// limits' own tests set them back.
pub fn config(dir: &TempDir) -> ServeConfig {
    let mut c = ServeConfig::defaults(test_db(dir));
    c.admin_token = Some(ADMIN_TOKEN.into());
    c.limits.intake_per_address = 0;
    c.limits.intake_per_minute = 0;
    c.limits.writes_per_address = 0;
    c
}

/// The database a test runs on: a SQLite file in `dir`; with
/// `SMART_SUPPORT_TEST_DB=postgres`, a new database on the server at
/// `SMART_SUPPORT_TEST_POSTGRES_URL` (the same tests, the other backend).
pub fn test_db(dir: &TempDir) -> PathBuf {
    if !on_postgres() {
        return dir.path().join("data").join("tickets.db");
    }
    // One database per directory, as the file would be: a test that
    // restarts the service with `config(&dir)` again finds its data.
    static BY_DIR: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let mut known = BY_DIR.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, url)) = known.iter().find(|(d, _)| d == dir.path()) {
        return PathBuf::from(url);
    }
    let url = fresh_postgres().expect("on PostgreSQL");
    known.push((dir.path().to_path_buf(), url.clone()));
    PathBuf::from(url)
}

/// Whether the tests run on PostgreSQL (`SMART_SUPPORT_TEST_DB=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("SMART_SUPPORT_TEST_DB").is_ok_and(|v| v == "postgres")
}

/// `true` (and a note on stderr) when the tests run on PostgreSQL and this
/// one is about the SQLite file itself (its size cap, its lock, a damaged
/// file, its backup): it runs in the SQLite pass of the same suite.
pub fn sqlite_only(what: &str) -> bool {
    if on_postgres() {
        eprintln!("SQLite only ({what}): runs in the SQLite pass");
    }
    on_postgres()
}

/// The backend name `/health` reports for the tests' database.
pub fn backend_name() -> &'static str {
    if on_postgres() { "postgres" } else { "sqlite" }
}

/// Runs `sql` (a statement without parameters) on the test's database, as
/// an operator would with its shell: tests use it to set up what the API
/// cannot (a ticket resolved long ago).
pub fn run_sql(app: &TestApp, sql: &str) {
    app.state.store.sql_for_test(sql).expect("sql");
}

/// A new, empty database on the test server, as a URL; `None` when the
/// tests run on SQLite.
pub fn fresh_postgres() -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let base = std::env::var("SMART_SUPPORT_TEST_POSTGRES_URL").expect(
        "SMART_SUPPORT_TEST_DB=postgres needs SMART_SUPPORT_TEST_POSTGRES_URL \
         (postgres://USER@HOST:PORT/DB of a server the tests may create databases on)",
    );
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "ss_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let (b, n) = (base.clone(), name.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&b, tokio_postgres::NoTls)
                .await
                .expect("the test PostgreSQL server answers");
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {n}"))
                .await
                .expect("create a test database");
        });
    })
    .join()
    .expect("create database");
    let (head, _) = base.rsplit_once('/').expect("a URL with a database name");
    Some(format!("{head}/{name}"))
}

pub fn start_with(dir: TempDir, cfg: ServeConfig) -> TestApp {
    start_models(dir, cfg, LoadedModels::rules_only())
}

pub fn start_models(dir: TempDir, cfg: ServeConfig, models: LoadedModels) -> TestApp {
    let App {
        router,
        state,
        worker,
        lock,
        ..
    } = app::build(cfg, models).expect("app builds");
    TestApp {
        router,
        state,
        worker,
        dir,
        lock,
    }
}

pub fn start() -> TestApp {
    let dir = TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    start_with(dir, cfg)
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    }

    pub fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

pub async fn send(router: &Router, req: Request<Body>) -> Resp {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub fn req(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri)
}

pub fn json_req(method: Method, uri: &str, body: &str) -> Request<Body> {
    req(method, uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

pub fn get(uri: &str) -> Request<Body> {
    req(Method::GET, uri).body(Body::empty()).expect("request")
}

pub fn admin_get(uri: &str) -> Request<Body> {
    req(Method::GET, uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::empty())
        .expect("request")
}

pub fn admin_post(uri: &str) -> Request<Body> {
    req(Method::POST, uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::empty())
        .expect("request")
}

/// An authenticated admin POST with a JSON body.
pub fn admin_json(uri: &str, body: &str) -> Request<Body> {
    req(Method::POST, uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

pub fn form_req(uri: &str, body: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b =
        req(Method::POST, uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(body.to_string())).expect("request")
}

/// Submits a ticket through the API; returns (id, token).
pub async fn submit(router: &Router, subject: &str, description: &str) -> (i64, String) {
    let body = serde_json::json!({"subject": subject, "description": description}).to_string();
    let r = send(router, json_req(Method::POST, "/api/tickets", &body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let v = r.json();
    (
        v["id"].as_i64().expect("id"),
        v["token"].as_str().expect("token").to_string(),
    )
}

/// Waits until the worker has stored the ticket's result. A liveness guard,
/// not a speed test: generous (10 minutes), since a busy 2-core machine
/// running model tests side by side can take minutes per ticket.
pub async fn wait_processed(state: &SharedState, id: i64) -> smart_support::store::TicketRecord {
    for _ in 0..12_000 {
        let rec = state.store.get(id).expect("ticket exists");
        if rec.analysis.is_some() {
            return rec;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ticket {id} was not processed");
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The request as if it came from `ip` (the limits key on the client address).
pub fn from_ip(mut req: Request<Body>, ip: &str) -> Request<Body> {
    let addr: std::net::SocketAddr = format!("{ip}:40000").parse().expect("ip");
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    req
}

/// The staff sign-in form's CSRF token (the same value goes in its cookie).
pub async fn login_csrf(router: &Router) -> String {
    let r = send(router, get("/admin/login")).await;
    r.cookies()
        .into_iter()
        .find(|c| c.starts_with(smart_support::web::auth::LOGIN_CSRF_COOKIE))
        .and_then(|c| {
            c.split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .map(|(_, v)| v.to_string())
        })
        .expect("login csrf cookie")
}

/// A sign-in form post with its CSRF cookie.
pub fn login_req(name: &str, password: &str, csrf: &str) -> Request<Body> {
    form_req(
        "/admin/login",
        &format!(
            "name={}&password={}&csrf={csrf}",
            url_encode(name),
            url_encode(password)
        ),
        Some(&format!(
            "{}={csrf}",
            smart_support::web::auth::LOGIN_CSRF_COOKIE
        )),
    )
}

pub fn add_user(app: &TestApp, name: &str, role: smart_support::ticket::Role, password: &str) {
    let hash = smart_support::web::auth::hash_password(password).expect("hash");
    app.state
        .store
        .create_user(name, role, &hash)
        .expect("create user");
}

/// Signs in; the session cookie header and the session's CSRF token.
pub async fn sign_in(app: &TestApp, name: &str, password: &str) -> Result<(String, String), Resp> {
    let csrf = login_csrf(&app.router).await;
    let r = send(&app.router, login_req(name, password, &csrf)).await;
    if r.status != StatusCode::SEE_OTHER {
        return Err(r);
    }
    let session = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with(smart_support::web::auth::SESSION_COOKIE))
        .and_then(|c| c.split(';').next().map(str::to_string))
        .expect("session cookie");
    let page = send(&app.router, with_cookie("/admin/tickets", &session)).await;
    let token = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf on the page")
        .to_string();
    Ok((session, token))
}

pub fn with_cookie(uri: &str, cookie: &str) -> axum::http::Request<axum::body::Body> {
    req(axum::http::Method::GET, uri)
        .header(axum::http::header::COOKIE, cookie)
        .body(axum::body::Body::empty())
        .expect("request")
}

/// A file under the test models' directory (`scripts/fetch-test-models.sh`
/// puts the models and llama.cpp's vocabulary files there). Missing, the
/// test says so and passes, except where CI sets
/// `SMART_SUPPORT_REQUIRE_TEST_MODELS=1`: then it fails.
pub fn test_model(relative: &str) -> Option<std::path::PathBuf> {
    let p = smart_support::inference::hub::test_models_dir()?.join(relative);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("SMART_SUPPORT_REQUIRE_TEST_MODELS").is_ok_and(|v| v == "1") {
        panic!(
            "{} is missing; run scripts/fetch-test-models.sh",
            p.display()
        );
    }
    eprintln!(
        "skipping: {} not found (run scripts/fetch-test-models.sh)",
        p.display()
    );
    None
}

/// A helper service from `tests/support/` on loopback (a Python script
/// that prints its port on its first line and logs what it receives as JSON
/// lines), stopped when dropped.
pub struct LoopbackService {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl LoopbackService {
    /// Runs `tests/support/{script}` with `--log` in `dir`, `--port` and
    /// `args`.
    pub fn start(script: &str, dir: &Path, port: u16, args: &[&str]) -> LoopbackService {
        let log = dir.join(format!("{script}-{port}-{}.jsonl", args.join("-")));
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support")
            .join(script);
        let mut child = Command::new("python3")
            .arg(path)
            .arg("--log")
            .arg(&log)
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 runs {script}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{script} prints its port: {e}"));
        LoopbackService {
            child,
            port: line.trim().parse().expect("a port"),
            log,
        }
    }

    /// What it has received so far.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    /// Waits (up to a minute: a liveness guard) until `done` holds.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..600 {
            let r = self.records();
            if done(&r) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: got {:#?}", self.records());
    }
}

impl Drop for LoopbackService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real SMTP server on loopback (`tests/support/smtp_sink.py`, which
/// decodes each message with Python's email package).
pub struct SmtpSink(pub LoopbackService);

impl SmtpSink {
    pub fn start(dir: &Path, port: u16) -> SmtpSink {
        SmtpSink(LoopbackService::start("smtp_sink.py", dir, port, &[]))
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }

    pub fn mails(&self) -> Vec<Value> {
        self.0.records()
    }

    /// Waits (a liveness guard, one minute) for `n` mails.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        self.0
            .wait_until(&format!("{n} mails"), |m| m.len() >= n)
            .await
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

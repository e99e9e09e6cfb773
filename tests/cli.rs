//! The `smart-support` binary: triage, admin set-password, and serve.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_smart-support");

#[test]
fn triage_prints_the_pipeline_json() {
    let out = Command::new(BIN)
        .args([
            "triage",
            "--subject",
            "Account hacked",
            "--description",
            "Someone hacked my account, urgent!",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["category"], "Security");
    assert_eq!(v["priority"], "Critical");
    assert_eq!(v["sentiment"], "Urgent");
    assert_eq!(v["risk"], "High");
    assert_eq!(v["status"], "Escalated");
    assert!(
        v["escalation"]["reasons"]
            .as_array()
            .is_some_and(|r| r.len() == 3)
    );
    assert!(
        v["solution"]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(v["solution"]["resolved"], false);
    assert_eq!(v["timeline"].as_array().map(Vec::len), Some(4));
    for k in ["neg", "neu", "pos", "compound"] {
        assert!(v[k].is_number(), "{k}");
    }
    // The security override decides before any model or the learned classifier.
    assert_eq!(v["agents"]["classifier"]["engine"], "rules");

    let calm = Command::new(BIN)
        .args([
            "triage",
            "--subject",
            "Thanks",
            "--description",
            "Great service, thank you!",
        ])
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&calm.stdout).expect("json");
    assert!(v["escalation"].is_null());
    assert_eq!(v["sentiment"], "Positive");
}

#[test]
fn set_password_reads_stdin_and_rejects_short_passwords() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let db = dir.path().join("t.db");
    let run = |pw: &str| {
        let mut child = Command::new(BIN)
            .args(["admin", "set-password", "--db"])
            .arg(&db)
            .env_remove("SMART_SUPPORT_ADMIN_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{pw}\n").as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    let short = run("short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10"));
    let ok = run("a-very-good-password");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&ok.stderr).contains("a-very-good-password"),
        "secret echoed"
    );
    let store = smart_support::store::Store::open(&db).expect("open");
    let (user, hash) = store
        .user_for_login("admin")
        .expect("read")
        .expect("the user admin exists");
    assert_eq!(user.role, smart_support::ticket::Role::Admin);
    assert!(smart_support::web::auth::verify_password(
        "a-very-good-password",
        &hash
    ));
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn serve_starts_with_no_models_and_keeps_secrets_out_of_logs() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let db = dir.path().join("data").join("tickets.db");
    let home = dir.path().to_path_buf();
    let mut server = spawn_server(dir, &db, |cmd| {
        cmd.env(
            "SMART_SUPPORT_ADMIN_TOKEN",
            "cli-test-admin-token-0123456789abcdef",
        )
        .env("SMART_SUPPORT_ADMIN_PASSWORD", "cli-test-password-123")
        // `--nli-model auto` and `--gen-model auto` must find nothing: an empty HF
        // cache, no models/ here, and no test-model cache.
        .env("HF_HOME", &home)
        .env("SMART_SUPPORT_TEST_MODELS", &home);
    });
    let (addr, dir) = (server.addr.clone(), &server.dir);
    let health = http_get(&addr, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // The public health check says what is degraded in words, nothing more.
    assert!(health.contains("\"degraded\""), "{health}");
    assert!(health.contains("keyword rules"), "{health}");
    assert!(
        !health.contains("engines") && !health.contains(dir.path().to_str().unwrap_or("/tmp")),
        "{health}"
    );
    // Submit a ticket and open its tracker: the token is in the URL, which must not be logged.
    let body = r#"{"subject":"Where is my parcel","description":"Order 5 never arrived"}"#;
    let mut s = TcpStream::connect(&addr).expect("connect");
    write!(
        s,
        "POST /api/tickets HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    let json = resp.split("\r\n\r\n").nth(1).expect("body");
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    let token = v["token"].as_str().expect("token").to_string();
    let page = http_get(&addr, &format!("/t/{token}"));
    assert!(page.starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(500));
    let _ = server.child.kill();
    let _ = server.child.wait();
    let mut log = std::mem::take(&mut server.early_log);
    while let Ok(line) = server.log.recv_timeout(Duration::from_millis(200)) {
        log.push(line);
    }
    let log = log.join("\n");
    assert!(db.exists(), "database created with its directory");
    assert!(
        log.contains("route=\"/t/{token}\""),
        "requests are traced by route:\n{log}"
    );
    for secret in [
        token.as_str(),
        "cli-test-admin-token-0123456789abcdef",
        "cli-test-password-123",
    ] {
        assert!(!log.contains(secret), "secret {secret} in logs:\n{log}");
    }
}

/// A running `serve` on an ephemeral port, killed when dropped.
struct Server {
    child: std::process::Child,
    addr: String,
    /// The log lines up to the one that names the address.
    early_log: Vec<String>,
    log: std::sync::mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on `db` (in `dir`), with `configure` adding to its command.
fn spawn_server(
    dir: tempfile::TempDir,
    db: &std::path::Path,
    configure: impl FnOnce(&mut Command),
) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stderr(Stdio::piped());
    configure(&mut cmd);
    let mut child = cmd.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut early_log = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server logs its address");
        early_log.push(line.clone());
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().expect("addr").to_string();
        }
    };
    Server {
        child,
        addr,
        early_log,
        log: rx,
        dir,
    }
}

/// `serve` with no models, plus `extra` flags.
fn start_server(extra: &[&str]) -> Server {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let db = dir.path().join("tickets.db");
    spawn_server(dir, &db, |cmd| {
        cmd.args(["--nli-model", "none", "--gen-model", "none"])
            .args(extra);
    })
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

/// Waits (a liveness guard of two minutes) for the process to exit.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the service did not stop");
}

fn submit_raw(addr: &str) -> String {
    let body = r#"{"subject":"Where is my parcel","description":"Order 5 never arrived"}"#;
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST /api/tickets HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let json = resp.split("\r\n\r\n").nth(1).expect("body");
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    v["token"].as_str().expect("token").to_string()
}

#[test]
fn sigterm_and_sigint_end_streams_and_exit_cleanly() {
    for sig in ["-TERM", "-INT"] {
        let mut server = start_server(&[]);
        let token = submit_raw(&server.addr);
        // A tracker's live stream is open: before, it kept SIGINT waiting forever.
        let mut stream = TcpStream::connect(&server.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        write!(
            stream,
            "GET /api/t/{token}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("write");
        let mut first = [0u8; 512];
        let n = stream.read(&mut first).expect("stream starts");
        assert!(String::from_utf8_lossy(&first[..n]).contains("200 OK"));
        signal(server.child.id(), sig);
        let mut rest = String::new();
        let _ = stream.read_to_string(&mut rest);
        assert!(rest.contains("event: shutdown"), "{sig}: {rest}");
        let status = wait_exit(&mut server.child);
        assert!(status.success(), "{sig}: exit {status:?}");
        let log: Vec<String> = server.log.try_iter().collect();
        assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
    }
}

#[test]
fn silent_and_trickling_connections_are_closed_and_the_cap_answers_503() {
    let server = start_server(&[
        "--header-timeout-secs",
        "1",
        "--max-connections",
        "4",
        "--max-streams",
        "2",
    ]);
    // Silent: closed after the header timeout (before: open for 400 s and more).
    let mut silent = TcpStream::connect(&server.addr).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert_eq!(
        silent.read(&mut buf).unwrap_or(0),
        0,
        "closed by the server"
    );
    // Trickling a header a byte at a time: closed too, long before it ends.
    let mut trickle = TcpStream::connect(&server.addr).expect("connect");
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in "GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".bytes() {
        if trickle.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !closed {
        trickle
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut out = Vec::new();
        let _ = trickle.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("200 OK"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    // Four idle connections fill the cap; the fifth gets a clear 503.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&server.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = TcpStream::connect(&server.addr).expect("connect");
    fifth
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut out = String::new();
    let _ = fifth.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(
        out.contains("Retry-After") && out.contains("too_many_connections"),
        "{out}"
    );
    drop(idle);
    // The idle ones time out, and the rejections were logged.
    std::thread::sleep(Duration::from_millis(1500));
    let health = http_get(&server.addr, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let log: Vec<String> = server.log.try_iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("connections rejected") && l.contains("max_connections")),
        "{log:?}"
    );
}

#[test]
fn backup_copies_a_live_database_and_refuses_to_overwrite() {
    let server = start_server(&[]);
    for _ in 0..5 {
        submit_raw(&server.addr);
    }
    let db = server.dir.path().join("tickets.db");
    let to = server.dir.path().join("backup").join("copy.db");
    let out = Command::new(BIN)
        .args(["backup", "--db"])
        .arg(&db)
        .arg("--to")
        .arg(&to)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(v["integrity"], "ok");
    assert_eq!(v["tickets"], 5);
    let again = Command::new(BIN)
        .args(["backup", "--db"])
        .arg(&db)
        .arg("--to")
        .arg(&to)
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    // A second service on the same database refuses, saying why.
    let second = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(&db)
        .args(["--nli-model", "none", "--gen-model", "none"])
        .output()
        .expect("run");
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another smart-support process"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}

#[test]
fn the_configuration_file_sets_serve_flags_and_a_bad_key_stops_it() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let file = dir.path().join("smart-support.toml");
    std::fs::write(
        &file,
        "[server]\nmax_streams = 3\nnli_model = \"none\"\ngen_model = \"none\"\n\
         bind = \"127.0.0.1:1\"\nadmin_token = \"file-token-0123456789abcdef0123456789\"\n",
    )
    .expect("write");
    let db = dir.path().join("tickets.db");
    // `--bind` on the command line wins over the file's unusable port 1.
    let server = spawn_server(dir, &db, |cmd| {
        cmd.arg("--config").arg(&file);
    });
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer file-token-0123456789abcdef0123456789\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .expect("write");
    let mut health = String::new();
    s.read_to_string(&mut health).expect("read");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"max\":3"), "{health}");
    assert!(health.contains("keyword rules"), "{health}");
    // A key that is no flag: the service does not start, and says why.
    let bad = server.dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nworkres = 2\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: server.workres: not a flag of serve"),
        "{err}"
    );
}

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
    let hash = store
        .setting(smart_support::web::auth::PASSWORD_SETTING)
        .expect("read")
        .expect("set");
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
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("SMART_SUPPORT_ADMIN_TOKEN", "cli-test-admin-token")
        .env("SMART_SUPPORT_ADMIN_PASSWORD", "cli-test-password-123")
        .env("RUST_LOG", "info")
        // `--nli-model auto` and `--gen-model auto` must find nothing: an empty HF
        // cache, no models/ here, and no test-model cache.
        .env("HF_HOME", dir.path())
        .env("SMART_SUPPORT_TEST_MODELS", dir.path())
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server logs its address");
        log.push(line.clone());
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().expect("addr").to_string();
        }
    };
    let health = http_get(&addr, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("rules only"), "{health}");
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
    child.kill().expect("kill");
    let _ = child.wait();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
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
        "cli-test-admin-token",
        "cli-test-password-123",
    ] {
        assert!(!log.contains(secret), "secret {secret} in logs:\n{log}");
    }
}

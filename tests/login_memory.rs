//! Finding 1 (critical): concurrent wrong logins blew up memory — each
//! argon2 check holds ~19 MiB and every one ran at once (200 concurrent
//! attempts: 5.19 GB peak). Alone in its test binary, so the process's peak
//! RSS is this test's.

mod common;

use axum::http::StatusCode;
use common::*;
use smart_support::web::auth;

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_wrong_logins_stay_within_bounded_memory() {
    let app = start();
    let hash = auth::hash_password("the-real-admin-password").expect("hash");
    app.state
        .store
        .upsert_user_password("admin", smart_support::ticket::Role::Admin, &hash)
        .expect("set");
    let csrf = login_csrf(&app.router).await;
    let before = peak_rss_mib();
    // 200 attempts at once, each from its own address (no per-address limit
    // applies), all in one network.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let router = app.router.clone();
            let csrf = csrf.clone();
            tokio::spawn(async move {
                let req = login_req("admin", &format!("wrong-guess-{i}"), &csrf);
                send(&router, from_ip(req, &format!("10.0.0.{}", i + 1)))
                    .await
                    .status
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for t in tasks {
        *codes.entry(t.await.expect("join").as_u16()).or_insert(0) += 1;
    }
    let grown = peak_rss_mib().saturating_sub(before);
    eprintln!("status codes {codes:?}; peak RSS grew {grown} MiB (from {before} MiB)");
    // Two checks at a time hold ~40 MiB; 200 at once held ~3.8 GiB.
    assert!(grown < 400, "peak RSS grew {grown} MiB");
    assert!(
        codes.keys().all(|c| [401, 429, 503].contains(c)),
        "{codes:?}"
    );
    assert!(codes.get(&401).copied().unwrap_or(0) >= 1);
    assert!(
        codes.get(&429).copied().unwrap_or(0) + codes.get(&503).copied().unwrap_or(0) > 0,
        "past the ceiling attempts are refused: {codes:?}"
    );
    // The right password still works from a fresh address afterwards.
    let req = login_req("admin", "the-real-admin-password", &csrf);
    let r = send(&app.router, from_ip(req, "192.0.2.200")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

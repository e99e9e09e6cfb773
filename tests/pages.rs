//! The HTML pages and admin access control: forms without JavaScript,
//! escaping, sessions, CSRF and the login rate limit.

mod common;

use axum::http::{StatusCode, header};
use common::*;
use smart_support::web::auth;

const PASSWORD: &str = "a-long-admin-password";

fn set_password(app: &TestApp) {
    let hash = auth::hash_password(PASSWORD).expect("hash");
    app.state
        .store
        .upsert_user_password("admin", smart_support::ticket::Role::Admin, &hash)
        .expect("store");
}

fn cookie_value(cookies: &[String], name: &str) -> Option<String> {
    cookies
        .iter()
        .filter_map(|c| c.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn hidden_csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("csrf field") + marker.len();
    html[start..].split('"').next().unwrap_or("").to_string()
}

/// Logs in through the form; returns (session cookie header, session CSRF token).
async fn login(app: &TestApp) -> (String, String) {
    let r = send(&app.router, get("/admin/login")).await;
    let login_csrf =
        cookie_value(&r.cookies(), auth::LOGIN_CSRF_COOKIE).expect("login csrf cookie");
    assert_eq!(hidden_csrf(&r.body), login_csrf);
    let body = format!(
        "name=admin&password={}&csrf={login_csrf}",
        url_encode(PASSWORD)
    );
    let r = send(
        &app.router,
        form_req(
            "/admin/login",
            &body,
            Some(&format!("{}={login_csrf}", auth::LOGIN_CSRF_COOKIE)),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let session_cookie = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with(auth::SESSION_COOKIE))
        .expect("session cookie");
    assert!(
        session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Strict"),
        "{session_cookie}"
    );
    let session = cookie_value(&[session_cookie], auth::SESSION_COOKIE).expect("value");
    let cookie = format!("{}={session}", auth::SESSION_COOKIE);
    let page = send(&app.router, req_with_cookie("/admin/tickets", &cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    (cookie, hidden_csrf(&page.body))
}

fn req_with_cookie(uri: &str, cookie: &str) -> axum::http::Request<axum::body::Body> {
    req(axum::http::Method::GET, uri)
        .header(header::COOKIE, cookie)
        .body(axum::body::Body::empty())
        .expect("request")
}

#[tokio::test]
async fn form_submission_works_without_javascript() {
    let app = start();
    let r = send(&app.router, get("/")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("action=\"/tickets\""));
    assert!(
        !r.body.contains("rules only") && !r.body.contains("Degraded mode"),
        "customers see nothing of engines"
    );
    let staff = send(&app.router, get("/admin/login")).await;
    assert!(
        staff.body.contains("rules only — no models loaded"),
        "the staff pages show the degraded banner"
    );

    let r = send(
        &app.router,
        form_req(
            "/tickets",
            "subject=Package+damaged&description=The+box+arrived+crushed.",
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let location = r.location();
    assert!(location.starts_with("/t/"), "{location}");
    let token = location.trim_start_matches("/t/").to_string();
    let id = app
        .state
        .store
        .id_for_token(&token)
        .expect("db")
        .expect("ticket");
    wait_processed(&app.state, id).await;

    let r = send(&app.router, get(&location)).await;
    assert_eq!(r.status, StatusCode::OK);
    for needle in [
        "Package damaged",
        "Order",
        "Suggested solution",
        "Mark as resolved",
        "Ticket Submitted",
        "AI Processing",
        "<progress",
    ] {
        assert!(r.body.contains(needle), "tracker lacks {needle}");
    }
    assert!(
        r.body
            .contains(&format!("data-status-url=\"/api/t/{token}/status\""))
    );

    // Resolve, then rate, through plain forms.
    let r = send(
        &app.router,
        form_req(&format!("/t/{token}/resolve"), "", None),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = send(&app.router, get(&location)).await;
    assert!(r.body.contains("How did we do?") && !r.body.contains("Mark as resolved"));
    let r = send(
        &app.router,
        form_req(&format!("/t/{token}/rating"), "stars=9", None),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("stars must be 1 to 5"));
    let r = send(
        &app.router,
        form_req(
            &format!("/t/{token}/rating"),
            "stars=4&comment=Thanks",
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = send(&app.router, get(&location)).await;
    assert!(
        r.body.contains("<strong>4 of 5</strong>"),
        "saved rating shown"
    );
}

#[tokio::test]
async fn invalid_form_keeps_what_was_typed() {
    let app = start();
    let r = send(
        &app.router,
        form_req(
            "/tickets",
            "subject=&description=My+long+explanation+%3Cb%3E",
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("subject must not be empty"));
    assert!(
        r.body.contains("My long explanation &lt;b&gt;"),
        "typed text kept, escaped"
    );
}

#[tokio::test]
async fn unknown_tracker_token_is_404_page() {
    let app = start();
    let r = send(&app.router, get(&format!("/t/{}", "0".repeat(48)))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("No ticket has this tracking link"));
    let r = send(&app.router, form_req("/t/nope/resolve", "", None)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&app.router, get("/no/such/page")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn script_in_subject_is_rendered_as_text_everywhere() {
    let app = start();
    set_password(&app);
    let payload = "<script>alert('x')</script>";
    let (id, token) = submit(
        &app.router,
        payload,
        "<img src=x onerror=alert(1)> please help",
    )
    .await;
    wait_processed(&app.state, id).await;
    let (cookie, _) = login(&app).await;
    for (path, cookie) in [
        (format!("/t/{token}"), None),
        ("/admin/tickets".to_string(), Some(cookie.as_str())),
        (format!("/admin/tickets/{id}"), Some(cookie.as_str())),
    ] {
        let r = match cookie {
            Some(c) => send(&app.router, req_with_cookie(&path, c)).await,
            None => send(&app.router, get(&path)).await,
        };
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(!r.body.contains(payload), "{path} renders the raw script");
        assert!(!r.body.contains("<img src=x"), "{path} renders the raw img");
        assert!(
            r.body.contains("&lt;script&gt;"),
            "{path} lacks the escaped subject"
        );
    }
}

#[tokio::test]
async fn admin_pages_need_a_session() {
    let app = start();
    for path in ["/admin", "/admin/tickets", "/admin/tickets/1"] {
        let r = send(&app.router, get(path)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        let to = r.location();
        assert!(
            to == "/admin/login" || to == "/admin/tickets",
            "{path} → {to}"
        );
    }
    let r = send(
        &app.router,
        req_with_cookie(
            "/admin/tickets",
            &format!("{}=forged", auth::SESSION_COOKIE),
        ),
    )
    .await;
    assert_eq!(r.location(), "/admin/login");
    let r = send(
        &app.router,
        form_req("/admin/tickets/1/resolve", "csrf=x", None),
    )
    .await;
    assert_eq!(r.location(), "/admin/login");
}

#[tokio::test]
async fn login_without_a_password_set_explains_how_to_set_one() {
    let app = start();
    let r = send(&app.router, get("/admin/login")).await;
    assert!(r.body.contains("smart-support admin set-password"));
    let csrf = cookie_value(&r.cookies(), auth::LOGIN_CSRF_COOKIE).expect("cookie");
    let r = send(
        &app.router,
        form_req(
            "/admin/login",
            &format!("name=admin&password=&csrf={csrf}"),
            Some(&format!("{}={csrf}", auth::LOGIN_CSRF_COOKIE)),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.cookies()
            .iter()
            .all(|c| !c.starts_with(auth::SESSION_COOKIE))
    );
}

#[tokio::test]
async fn login_needs_csrf_and_the_right_password_and_is_rate_limited() {
    let app = start();
    set_password(&app);
    let r = send(&app.router, get("/admin/login")).await;
    let csrf = cookie_value(&r.cookies(), auth::LOGIN_CSRF_COOKIE).expect("cookie");
    let csrf_cookie = format!("{}={csrf}", auth::LOGIN_CSRF_COOKIE);
    let good = format!("name=admin&password={}", url_encode(PASSWORD));

    // Missing or mismatched CSRF: refused even with the right password.
    let r = send(
        &app.router,
        form_req("/admin/login", &good, Some(&csrf_cookie)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app.router,
        form_req("/admin/login", &format!("{good}&csrf={csrf}"), None),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app.router,
        form_req(
            "/admin/login",
            &format!("{good}&csrf=other"),
            Some(&csrf_cookie),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Three free tries; after that each try waits, doubling (1 s, 2 s, 4 s …).
    for _ in 0..3 {
        let r = send(
            &app.router,
            form_req(
                "/admin/login",
                &format!("name=admin&password=wrong-password&csrf={csrf}"),
                Some(&csrf_cookie),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("Wrong name or password"));
    }
    // Now even the right password waits (from this address).
    let r = send(
        &app.router,
        form_req(
            "/admin/login",
            &format!("{good}&csrf={csrf}"),
            Some(&csrf_cookie),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.get(header::RETRY_AFTER).is_some());
    assert!(
        r.cookies()
            .iter()
            .all(|c| !c.starts_with(auth::SESSION_COOKIE))
    );
}

#[tokio::test]
async fn dashboard_filters_and_admin_forms_check_csrf() {
    let app = start();
    set_password(&app);
    let (a, _) = submit(
        &app.router,
        "Refund please",
        "I want my money back for order 42",
    )
    .await;
    let (b, _) = submit(
        &app.router,
        "App crashes",
        "The app crashes on start with an error",
    )
    .await;
    wait_processed(&app.state, a).await;
    wait_processed(&app.state, b).await;
    let (cookie, csrf) = login(&app).await;

    let r = send(
        &app.router,
        req_with_cookie("/admin/tickets?category=Technical", &cookie),
    )
    .await;
    assert!(r.body.contains("App crashes") && !r.body.contains("Refund please"));
    let r = send(
        &app.router,
        req_with_cookie("/admin/tickets?q=money", &cookie),
    )
    .await;
    assert!(r.body.contains("Refund please") && !r.body.contains("App crashes"));
    assert!(r.body.contains("1 ticket ·"));
    let r = send(
        &app.router,
        req_with_cookie("/admin/tickets?priority=bogus", &cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = send(
        &app.router,
        req_with_cookie(&format!("/admin/tickets/{b}"), &cookie),
    )
    .await;
    assert!(
        r.body.contains("AI analysis")
            && r.body.contains("Technical")
            && r.body.contains("Resolve ticket")
    );

    // Resolve without / with a wrong CSRF token: refused, nothing changes.
    for body in ["", "csrf=wrong"] {
        let r = send(
            &app.router,
            form_req(&format!("/admin/tickets/{b}/resolve"), body, Some(&cookie)),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body:?}");
    }
    assert_ne!(
        app.state.store.get(b).expect("t").status,
        smart_support::ticket::Status::Resolved
    );
    let r = send(
        &app.router,
        form_req(
            &format!("/admin/tickets/{b}/resolve"),
            &format!("csrf={csrf}"),
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.state.store.get(b).expect("t").status,
        smart_support::ticket::Status::Resolved
    );

    // The session also works for the admin API; its POSTs need X-CSRF-Token.
    let r = send(&app.router, req_with_cookie("/api/tickets", &cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    let post = |csrf_header: Option<&str>| {
        let mut b = req(
            axum::http::Method::POST,
            &format!("/api/tickets/{a}/resolve"),
        )
        .header(header::COOKIE, &cookie);
        if let Some(h) = csrf_header {
            b = b.header("x-csrf-token", h);
        }
        b.body(axum::body::Body::empty()).expect("request")
    };
    assert_eq!(
        send(&app.router, post(None)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app.router, post(Some("wrong"))).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app.router, post(Some(&csrf))).await.status,
        StatusCode::OK
    );

    // Logging out ends the session.
    let r = send(
        &app.router,
        form_req("/admin/logout", &format!("csrf={csrf}"), Some(&cookie)),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = send(&app.router, req_with_cookie("/admin/tickets", &cookie)).await;
    assert_eq!(r.location(), "/admin/login");
}

#[tokio::test]
async fn dashboard_paginates_with_filters_kept() {
    let app = start();
    set_password(&app);
    for i in 0..30 {
        submit(
            &app.router,
            &format!("Invoice question {i}"),
            "Please send my invoice.",
        )
        .await;
    }
    let (cookie, _) = login(&app).await;
    let r = send(
        &app.router,
        req_with_cookie("/admin/tickets?q=invoice&per_page=10", &cookie),
    )
    .await;
    assert!(
        r.body.contains("30 tickets · page 1 of 3"),
        "{}",
        &r.body[..r.body.len().min(3000)]
    );
    assert!(
        r.body
            .contains("&#x2f;admin&#x2f;tickets?per_page=10&amp;q=invoice&amp;page=2")
    );
    let r = send(
        &app.router,
        req_with_cookie("/admin/tickets?q=invoice&per_page=10&page=3", &cookie),
    )
    .await;
    assert!(r.body.contains("page 3 of 3") && r.body.contains("Invoice question 0"));
    assert!(!r.body.contains("rel=\"next\""));
}

#[tokio::test]
async fn assets_are_served_and_names_cannot_escape() {
    let app = start();
    let r = send(&app.router, get("/assets/app.css")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/css"))
    );
    assert_eq!(
        send(&app.router, get("/assets/tracker.js")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app.router, get("/assets/..%2FCargo.toml"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app.router, get("/assets/nope.css")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn template_and_asset_directories_override_the_embedded_files() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let tpl = dir.path().join("tpl");
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&tpl).expect("mkdir");
    std::fs::create_dir_all(&assets).expect("mkdir");
    std::fs::write(tpl.join("error.html"), "CUSTOM {{ code }} {{ message }}").expect("write");
    std::fs::write(assets.join("app.css"), "body{color:red}").expect("write");
    let mut cfg = config(&dir);
    cfg.templates_dir = Some(tpl);
    cfg.assets_dir = Some(assets);
    let app = start_with(dir, cfg);
    let r = send(&app.router, get("/missing")).await;
    assert_eq!(r.body, "CUSTOM 404 This page does not exist.");
    assert_eq!(
        send(&app.router, get("/assets/app.css")).await.body,
        "body{color:red}"
    );
    // Files not overridden still come from the binary.
    assert!(
        send(&app.router, get("/"))
            .await
            .body
            .contains("How can we help?")
    );
}

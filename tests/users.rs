//! Staff accounts: roles, disabled users, the `/admin/users` page, the
//! `users` command, and the move of the single admin password to a user.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use common::*;
use smart_support::store::{Store, UserChange};
use smart_support::ticket::{Role, TicketInput};
use smart_support::web::auth;

const BIN: &str = env!("CARGO_BIN_EXE_smart-support");

#[tokio::test]
async fn agents_work_tickets_but_cannot_manage_users() {
    let app = start();
    add_user(&app, "boss", Role::Admin, "boss-password-1");
    add_user(&app, "maria", Role::Agent, "maria-password-1");
    let (agent, agent_csrf) = sign_in(&app, "maria", "maria-password-1")
        .await
        .expect("agent signs in");
    assert_eq!(
        send(&app.router, with_cookie("/admin/tickets", &agent))
            .await
            .status,
        StatusCode::OK
    );
    let r = send(&app.router, with_cookie("/admin/users", &agent)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app.router,
        form_req(
            "/admin/users",
            &format!("csrf={agent_csrf}&name=eve&role=admin&password=eve-password-1"),
            Some(&agent),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        app.state
            .store
            .user_for_login("eve")
            .expect("read")
            .is_none()
    );

    // An admin adds a user from the page; the new user signs in.
    let (admin, csrf) = sign_in(&app, "boss", "boss-password-1")
        .await
        .expect("admin signs in");
    let page = send(&app.router, with_cookie("/admin/users", &admin)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("maria") && page.body.contains("agent"));
    let r = send(
        &app.router,
        form_req(
            "/admin/users",
            &format!("csrf={csrf}&name=eve&role=agent&password=eve-password-1"),
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(sign_in(&app, "eve", "eve-password-1").await.is_ok());
    // Without the CSRF token nothing changes.
    let r = send(
        &app.router,
        form_req("/admin/users/eve/disable", "csrf=wrong", Some(&admin)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A bad name or a short password is a clear error on the page.
    let r = send(
        &app.router,
        form_req(
            "/admin/users",
            &format!("csrf={csrf}&name=a+b&role=agent&password=eve-password-1"),
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("user name"), "{}", r.body);
}

#[tokio::test]
async fn a_disabled_user_is_signed_out_at_once_and_cannot_sign_in() {
    let app = start();
    add_user(&app, "boss", Role::Admin, "boss-password-1");
    add_user(&app, "maria", Role::Agent, "maria-password-1");
    let (agent, _) = sign_in(&app, "maria", "maria-password-1")
        .await
        .expect("agent");
    let (admin, csrf) = sign_in(&app, "boss", "boss-password-1")
        .await
        .expect("admin");
    let r = send(
        &app.router,
        form_req(
            "/admin/users/maria/disable",
            &format!("csrf={csrf}"),
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send(&app.router, with_cookie("/admin/tickets", &agent)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "the session ended");
    assert_eq!(r.location(), "/admin/login");
    let refused = sign_in(&app, "maria", "maria-password-1")
        .await
        .expect_err("refused");
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.body.contains("Wrong name or password"),
        "same answer as a wrong password"
    );
    // Disabled from another process (the `users disable` command) works the same.
    app.state
        .store
        .update_user("maria", UserChange::Active(true))
        .expect("enable");
    let (agent, _) = sign_in(&app, "maria", "maria-password-1")
        .await
        .expect("again");
    Store::open(&app.state.config.db)
        .expect("second handle")
        .update_user("maria", UserChange::Active(false))
        .expect("disable");
    let r = send(&app.router, with_cookie("/admin/tickets", &agent)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_last_admin_cannot_be_disabled_or_demoted() {
    let app = start();
    add_user(&app, "boss", Role::Admin, "boss-password-1");
    let (admin, csrf) = sign_in(&app, "boss", "boss-password-1")
        .await
        .expect("admin");
    for (path, body) in [
        ("/admin/users/boss/disable", format!("csrf={csrf}")),
        ("/admin/users/boss/role", format!("csrf={csrf}&role=agent")),
    ] {
        let r = send(&app.router, form_req(path, &body, Some(&admin))).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{path}");
        assert!(r.body.contains("no active admin"), "{}", r.body);
    }
    let me = app
        .state
        .store
        .user_for_login("boss")
        .expect("read")
        .expect("boss")
        .0;
    assert!(me.active && me.role == Role::Admin);
}

#[tokio::test]
async fn unknown_names_and_wrong_passwords_get_the_same_answer() {
    let app = start();
    add_user(&app, "boss", Role::Admin, "boss-password-1");
    let a = sign_in(&app, "nobody", "boss-password-1")
        .await
        .expect_err("refused");
    let b = sign_in(&app, "boss", "not-the-password")
        .await
        .expect_err("refused");
    assert_eq!(a.status, b.status);
    assert!(a.body.contains("Wrong name or password") && b.body.contains("Wrong name or password"));
}

#[test]
fn the_admin_password_becomes_the_user_admin_and_data_stays() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let db = dir.path().join("old.db");
    let hash = auth::hash_password("old-admin-password").expect("hash");
    {
        let old = Store::open_to(&db, 4).expect("schema 4");
        old.set_setting("admin_password_hash", &hash)
            .expect("old setting");
        old.create_ticket(&TicketInput {
            subject: "Kept".into(),
            description: "Still here".into(),
        })
        .expect("ticket");
    }
    let store = Store::open(&db).expect("migrated");
    let (user, stored) = store
        .user_for_login("admin")
        .expect("read")
        .expect("admin user");
    assert_eq!(user.role, Role::Admin);
    assert!(auth::verify_password("old-admin-password", &stored));
    assert_eq!(store.setting("admin_password_hash").expect("read"), None);
    let (list, total) = store.list(&Default::default()).expect("list");
    assert_eq!((total, list[0].subject.as_str()), (1, "Kept"));
}

fn users_cmd(db: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("users")
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("SMART_SUPPORT_USER_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

#[test]
fn the_users_command_adds_lists_disables_and_sets_passwords() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let db = dir.path().join("u.db");
    let ok = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr))
    };
    ok(&users_cmd(
        &db,
        &["add", "--name", "boss", "--role", "admin"],
        "boss-password-1\n",
    ));
    ok(&users_cmd(
        &db,
        &["add", "--name", "maria", "--role", "agent"],
        "maria-password-1\n",
    ));
    let dup = users_cmd(
        &db,
        &["add", "--name", "MARIA", "--role", "agent"],
        "maria-password-2\n",
    );
    assert!(!dup.status.success(), "names are unique regardless of case");
    let short = users_cmd(&db, &["add", "--name", "sam", "--role", "agent"], "short\n");
    assert!(!short.status.success());
    let bad_role = users_cmd(
        &db,
        &["add", "--name", "sam", "--role", "owner"],
        "sam-password-1\n",
    );
    assert!(!bad_role.status.success());
    ok(&users_cmd(&db, &["disable", "maria"], ""));
    ok(&users_cmd(
        &db,
        &["set-password", "boss"],
        "boss-password-2\n",
    ));
    let list = users_cmd(&db, &["list"], "");
    ok(&list);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("boss\tadmin\tactive"), "{text}");
    assert!(text.contains("maria\tagent\tdisabled"), "{text}");
    let store = Store::open(&db).expect("open");
    let (_, hash) = store.user_for_login("boss").expect("read").expect("boss");
    assert!(auth::verify_password("boss-password-2", &hash));
    let last = users_cmd(&db, &["disable", "boss"], "");
    assert!(!last.status.success(), "the last admin stays");
    assert!(String::from_utf8_lossy(&last.stderr).contains("no active admin"));
}

#[tokio::test]
async fn staff_download_the_corrections_and_see_the_agreement_table() {
    let app = start();
    add_user(&app, "boss", Role::Admin, "boss-password-1");
    let (id, _) = submit(&app.router, "Refund please", "Please refund order =SUM(A1)").await;
    wait_processed(&app.state, id).await;
    let patch = req(axum::http::Method::PATCH, &format!("/api/tickets/{id}"))
        .header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {ADMIN_TOKEN}"),
        )
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(r#"{"priority": "Critical"}"#))
        .expect("request");
    assert_eq!(send(&app.router, patch).await.status, StatusCode::OK);
    let (session, _) = sign_in(&app, "boss", "boss-password-1")
        .await
        .expect("admin");
    let csv = send(&app.router, with_cookie("/admin/overrides.csv", &session)).await;
    assert_eq!(csv.status, StatusCode::OK);
    let mut lines = csv.body.lines();
    assert_eq!(
        lines.next(),
        Some("ticket_id,field,ai_value,staff_value,by,at,subject,description")
    );
    let row = lines.next().expect("one correction");
    assert!(
        row.starts_with(&format!("{id},priority,")) && row.contains(",Critical,api,"),
        "{row}"
    );
    assert!(
        row.contains("Please refund order =SUM(A1)"),
        "text kept (only cells that start with = are guarded): {row}"
    );
    let page = send(&app.router, with_cookie("/admin/tickets", &session)).await;
    assert!(
        page.body.contains("AI agreement") && page.body.contains("Refund"),
        "agreement table"
    );
}

#[tokio::test]
async fn admins_keep_canned_replies_and_agents_see_those_of_the_ticket_category() {
    let app = start();
    add_user(&app, "boss", Role::Admin, "boss-password-1");
    add_user(&app, "maria", Role::Agent, "maria-password-1");
    let (admin, csrf) = sign_in(&app, "boss", "boss-password-1")
        .await
        .expect("admin");
    for (title, category, body) in [
        (
            "Refund timing",
            "Refund",
            "Refunds reach your card in 5-10 business days.",
        ),
        (
            "Courier check",
            "Order",
            "We have asked the courier about your parcel.",
        ),
        ("Greeting", "", "Thanks for writing to us."),
    ] {
        let form = format!(
            "csrf={csrf}&title={}&category={category}&body={}",
            url_encode(title),
            url_encode(body)
        );
        let r = send(&app.router, form_req("/admin/replies", &form, Some(&admin))).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    }
    let bad = format!("csrf={csrf}&title=x&category=Nope&body=y");
    let r = send(&app.router, form_req("/admin/replies", &bad, Some(&admin))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let (agent, agent_csrf) = sign_in(&app, "maria", "maria-password-1")
        .await
        .expect("agent");
    let r = send(
        &app.router,
        form_req(
            "/admin/replies",
            &format!("csrf={agent_csrf}&title=t&body=b"),
            Some(&agent),
        ),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "agents do not manage replies"
    );
    let (id, _) = submit(&app.router, "Refund please", "Please refund my order").await;
    wait_processed(&app.state, id).await;
    let page = send(
        &app.router,
        with_cookie(&format!("/admin/tickets/{id}"), &agent),
    )
    .await;
    assert!(page.body.contains("Refund timing") && page.body.contains("Greeting"));
    assert!(
        !page.body.contains("Courier check"),
        "another category's reply is not offered"
    );
}

//! E-mail notifications through SMTP (lettre; plain SMTP, or STARTTLS
//! required). Mails are queued in the store with the change that causes
//! them (`store::mail`) and sent here: rendered from `templates/mail/*.txt`
//! (minijinja, like the pages; the first line is `Subject: …`), sent with a
//! 10 s timeout, retried on the schedule while the server is down or answers
//! a transient error, failed at once on a permanent one (550 no such user).
//! The customer's tracking link is in their mails and nowhere in the logs.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};
use rand::RngExt;

use crate::store::mail::{DueMail, MailKind};
use crate::store::{Store, StoreError};
use crate::web::assets::Templates;

/// The `[smtp]` section, checked.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub host: String,
    pub port: u16,
    pub from: Mailbox,
    pub credentials: Option<(String, String)>,
    /// STARTTLS required (the connection is refused without it).
    pub starttls: bool,
    pub retry_delays: Vec<Duration>,
}

/// The default wait before each retry.
pub fn default_retry_delays() -> Vec<Duration> {
    [60, 300, 900, 3600, 4 * 3600, 12 * 3600]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// Checks an address someone typed: `name@domain`, at most 254 bytes.
pub fn check_address(raw: &str) -> Result<String, String> {
    let a = raw.trim();
    if a.len() > 254 {
        return Err("the e-mail address is longer than 254 characters".into());
    }
    a.parse::<lettre::Address>()
        .map(|_| a.to_string())
        .map_err(|_| format!("'{a}' is not an e-mail address"))
}

/// The transport for `s`: 10 s per operation.
pub fn transport(s: &MailSettings) -> Result<SmtpTransport, String> {
    let builder = if s.starttls {
        SmtpTransport::starttls_relay(&s.host).map_err(|e| format!("smtp.host: {e}"))?
    } else {
        SmtpTransport::builder_dangerous(&s.host)
    };
    let mut builder = builder.port(s.port).timeout(Some(Duration::from_secs(10)));
    if let Some((user, password)) = &s.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// Renders `mail/{kind}.txt`: `Subject: …`, a blank line, the body.
pub fn render(
    templates: &Templates,
    kind: MailKind,
    ctx: minijinja::Value,
) -> Result<Rendered, String> {
    let name = format!("mail/{}.txt", kind.as_str());
    let text = templates
        .render(&name, ctx)
        .map_err(|e| format!("template {name}: {e}"))?;
    let (head, body) = text
        .split_once("\n\n")
        .ok_or_else(|| format!("template {name}: no blank line after the subject"))?;
    let subject = head
        .strip_prefix("Subject:")
        .ok_or_else(|| format!("template {name}: the first line is not 'Subject: …'"))?
        .trim()
        .to_string();
    Ok(Rendered {
        subject,
        body: body.trim_end().to_string() + "\n",
    })
}

/// What the task needs.
pub struct Mailer {
    pub settings: MailSettings,
    pub transport: SmtpTransport,
    pub templates: Templates,
    pub public_url: String,
}

/// One round: sends every mail due now. Returns how many were tried.
pub fn round(
    store: &Store,
    m: &Mailer,
    stop: &crate::shutdown::Shutdown,
) -> Result<usize, StoreError> {
    let mut tries = 0;
    loop {
        let due = store.due_mail(16)?;
        if due.is_empty() || stop.is_triggered() {
            return Ok(tries);
        }
        for d in due {
            if stop.is_triggered() {
                return Ok(tries);
            }
            attempt(store, m, &d)?;
            tries += 1;
        }
    }
}

fn attempt(store: &Store, m: &Mailer, d: &DueMail) -> Result<(), StoreError> {
    let Some(kind) = MailKind::parse(&d.kind) else {
        return store.mail_failed(d.id, &format!("unknown kind '{}'", d.kind), None);
    };
    let Some((subject, token, status)) = store.mail_ticket(d.ticket_id)? else {
        return store.mail_failed(d.id, "the ticket no longer exists", None);
    };
    let ctx = minijinja::context! {
        ticket => minijinja::context! { id => d.ticket_id, subject => subject, status => status },
        tracking_url => format!("{}/t/{token}", m.public_url),
        staff_url => format!("{}/admin/tickets/{}", m.public_url, d.ticket_id),
        data => minijinja::Value::from(minijinja::value::Serde(&d.context)),
    };
    let sent = render(&m.templates, kind, ctx)
        .map_err(Failure::from)
        .and_then(|r| send(m, &d.to, &r));
    match sent {
        Ok(()) => {
            tracing::info!(
                mail = d.id,
                kind = kind.as_str(),
                ticket = d.ticket_id,
                "mail sent"
            );
            store.mail_sent(d.id)
        }
        Err(Failure::Permanent(e)) => {
            tracing::error!(mail = d.id, kind = kind.as_str(), error = %e, "mail refused for good");
            store.mail_failed(d.id, &e, None)
        }
        Err(Failure::Transient(e)) => {
            let n = d.attempts as usize;
            let retry_at = m.settings.retry_delays.get(n).map(|wait| {
                let jitter: f64 = rand::rng().random();
                crate::clock::after(wait.mul_f64(0.8 + 0.4 * jitter))
            });
            match &retry_at {
                Some(at) => {
                    tracing::warn!(mail = d.id, error = %e, retry_at = %at, "mail not sent; will retry")
                }
                None => tracing::error!(mail = d.id, error = %e, "mail not sent; retries spent"),
            }
            store.mail_failed(d.id, &e, retry_at)
        }
    }
}

enum Failure {
    Permanent(String),
    Transient(String),
}

impl From<String> for Failure {
    /// A template or address problem: sending again will not help.
    fn from(e: String) -> Failure {
        Failure::Permanent(e)
    }
}

fn send(m: &Mailer, to: &str, r: &Rendered) -> Result<(), Failure> {
    let to: Mailbox = to
        .parse()
        .map_err(|_| Failure::Permanent(format!("'{to}' is not an e-mail address")))?;
    let message = Message::builder()
        .from(m.settings.from.clone())
        .to(to)
        .subject(r.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(r.body.clone())
        .map_err(|e| Failure::Permanent(e.to_string()))?;
    m.transport.send(&message).map(|_| ()).map_err(|e| {
        if e.is_permanent() {
            Failure::Permanent(e.to_string())
        } else {
            Failure::Transient(e.to_string())
        }
    })
}

/// Starts the mail task (sending while this node has the `mail` turn);
/// with no `[smtp]`, nothing is queued and no task runs.
pub fn spawn(
    store: std::sync::Arc<Store>,
    mailer: Option<Mailer>,
    turn: crate::cluster::Turn,
    shutdown: crate::shutdown::Shutdown,
) -> Option<tokio::task::JoinHandle<()>> {
    let mailer = std::sync::Arc::new(mailer?);
    let turn = std::sync::Arc::new(turn);
    Some(tokio::spawn(async move {
        while !shutdown.is_triggered() {
            let (s, m, sd) = (store.clone(), mailer.clone(), shutdown.clone());
            let t = turn.clone();
            let run = tokio::task::spawn_blocking(move || {
                if !t.mine() {
                    return Ok(0);
                }
                round(&s, &m, &sd)
            });
            match run.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "mail: the store failed"),
                Err(e) => tracing::error!(error = %e, "mail task panicked"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.wait() => break,
            }
        }
        let _ = tokio::task::spawn_blocking(move || turn.give_up()).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_templates_dir_replaces_a_mail_template() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        std::fs::create_dir(dir.path().join("mail")).expect("mkdir");
        std::fs::write(
            dir.path().join("mail/received.txt"),
            "Subject: Got it ({{ ticket.id }})\n\nSee {{ tracking_url }}\n",
        )
        .expect("write");
        let t = Templates::new(Some(dir.path().to_path_buf()));
        let ctx =
            minijinja::context! { ticket => minijinja::context! { id => 3 }, tracking_url => "u" };
        let r = render(&t, MailKind::Received, ctx).expect("renders");
        assert_eq!(
            r,
            Rendered {
                subject: "Got it (3)".into(),
                body: "See u\n".into()
            }
        );
        // The others stay the embedded ones.
        let ctx =
            minijinja::context! { ticket => minijinja::context! { id => 3 }, tracking_url => "u" };
        assert!(
            render(&t, MailKind::Resolved, ctx)
                .expect("renders")
                .subject
                .contains("resolved")
        );
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            check_address(" ana@example.com "),
            Ok("ana@example.com".into())
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "a b@example.com",
            "ana@exa mple.com",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        assert!(check_address(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn every_mail_template_renders_a_subject_and_a_body() {
        let t = Templates::new(None);
        for kind in MailKind::ALL {
            let ctx = minijinja::context! {
                ticket => minijinja::context! { id => 7, subject => "Printer <on> fire & more", status => "Open" },
                tracking_url => "http://support.test/t/abc",
                staff_url => "http://support.test/admin/tickets/7",
                data => minijinja::context! {
                    author => "alice", body => "Try <b>this</b>.", user => "bob",
                    target => "first_response", due => "2026-11-25T10:00:00.000Z",
                },
            };
            let r = render(&t, *kind, ctx).expect("renders");
            assert!(
                !r.subject.is_empty() && !r.subject.contains('\n'),
                "{kind:?}"
            );
            // Plain text: nothing is HTML-escaped.
            assert!(
                !r.body.contains("&lt;") && !r.subject.contains("&amp;"),
                "{r:?}"
            );
            if matches!(
                kind,
                MailKind::Received | MailKind::Reply | MailKind::Resolved
            ) {
                assert!(
                    r.body.contains("http://support.test/t/abc"),
                    "{kind:?}: {r:?}"
                );
            } else {
                assert!(
                    r.body.contains("http://support.test/admin/tickets/7"),
                    "{r:?}"
                );
                assert!(
                    !r.body.contains("/t/abc"),
                    "a tracking link in a staff mail"
                );
            }
        }
    }
}

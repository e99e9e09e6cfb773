//! The mail outbox. A mail is queued in the same transaction as the change
//! that causes it (a ticket received, a public staff reply, a ticket
//! resolved, a ticket assigned), with the kind, the ticket, the address and
//! what the template needs; the mail task renders and sends it, and retries
//! while the mail server is down. Nothing is queued while no mail server is
//! configured.

use super::sql::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{Store, StoreError};
use crate::clock;

/// What a mail is about; each kind has its template (`templates/mail/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// To the customer: the ticket is in, with its tracking link.
    Received,
    /// To the customer: staff replied publicly.
    Reply,
    /// To the customer: the ticket is resolved.
    Resolved,
    /// To a staff user: a ticket was assigned to them.
    Assigned,
    /// To the assignee (or the admins): a service level was missed.
    Breached,
}

impl MailKind {
    pub const ALL: &'static [MailKind] = &[
        MailKind::Received,
        MailKind::Reply,
        MailKind::Resolved,
        MailKind::Assigned,
        MailKind::Breached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Received => "received",
            MailKind::Reply => "reply",
            MailKind::Resolved => "resolved",
            MailKind::Assigned => "assigned",
            MailKind::Breached => "breached",
        }
    }

    pub fn parse(s: &str) -> Option<MailKind> {
        MailKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

/// A mail due now.
#[derive(Debug, Clone)]
pub struct DueMail {
    pub id: i64,
    pub kind: String,
    pub ticket_id: i64,
    pub to: String,
    pub context: serde_json::Value,
    pub attempts: u32,
}

/// The outbox's counts, for `/health`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MailCounts {
    pub pending: i64,
    pub sent: i64,
    pub failed: i64,
    pub last_error: Option<String>,
}

impl Store {
    /// Whether changes queue mails (a mail server is configured).
    pub fn set_mail(&self, on: bool) {
        self.mail_on.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Queues a mail inside the caller's transaction.
    pub(super) fn enqueue_mail(
        &self,
        tx: &Transaction,
        kind: MailKind,
        ticket: i64,
        to: &str,
        context: serde_json::Value,
    ) -> Result<(), StoreError> {
        if !self.mail_on.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let now = clock::now();
        tx.execute(
            "INSERT INTO mail_outbox (kind, ticket_id, to_addr, context, state, next_at, created_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
            params![kind.as_str(), ticket, to, context.to_string(), now],
        )?;
        Ok(())
    }

    /// Queues `kind` to the ticket's customer, when they gave an address.
    pub(super) fn mail_customer(
        &self,
        tx: &Transaction,
        kind: MailKind,
        ticket: i64,
        context: serde_json::Value,
    ) -> Result<(), StoreError> {
        if !self.mail_on.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let email: Option<String> =
            tx.query_row("SELECT email FROM tickets WHERE id = ?1", [ticket], |r| {
                r.get(0)
            })?;
        match email {
            Some(to) => self.enqueue_mail(tx, kind, ticket, &to, context),
            None => Ok(()),
        }
    }

    /// Queues "assigned to you" to `user`, when they have an address.
    pub(super) fn mail_assignee(
        &self,
        tx: &Transaction,
        ticket: i64,
        user: &str,
    ) -> Result<(), StoreError> {
        if !self.mail_on.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let email: Option<String> = tx
            .query_row("SELECT email FROM users WHERE name = ?1", [user], |r| {
                r.get(0)
            })
            .unwrap_or(None);
        match email {
            Some(to) => self.enqueue_mail(
                tx,
                MailKind::Assigned,
                ticket,
                &to,
                serde_json::json!({ "user": user }),
            ),
            None => Ok(()),
        }
    }

    /// Mails due now, oldest first.
    pub fn due_mail(&self, limit: usize) -> Result<Vec<DueMail>, StoreError> {
        let now = clock::now();
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, ticket_id, to_addr, context, attempts FROM mail_outbox
             WHERE state = 'pending' AND next_at <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![now, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, u32>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, kind, ticket_id, to, context, attempts)| {
                Ok(DueMail {
                    id,
                    kind,
                    ticket_id,
                    to,
                    context: serde_json::from_str(&context)?,
                    attempts,
                })
            })
            .collect()
    }

    pub fn mail_sent(&self, id: i64) -> Result<(), StoreError> {
        let now = clock::now();
        self.write(|c| {
            c.execute(
                "UPDATE mail_outbox SET state = 'sent', attempts = attempts + 1,
                   last_error = NULL, sent_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            Ok(())
        })
    }

    /// A failed try: retried at `retry_at`, or failed for good.
    pub fn mail_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<String>,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "UPDATE mail_outbox SET state = ?2, attempts = attempts + 1,
                   next_at = COALESCE(?3, next_at), last_error = ?4 WHERE id = ?1",
                params![
                    id,
                    if retry_at.is_some() {
                        "pending"
                    } else {
                        "failed"
                    },
                    retry_at,
                    error
                ],
            )?;
            Ok(())
        })
    }

    pub fn mail_counts(&self) -> Result<MailCounts, StoreError> {
        let conn = self.reader();
        let mut counts = MailCounts::default();
        let mut stmt =
            conn.prepare_cached("SELECT state, COUNT(*) FROM mail_outbox GROUP BY state")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            match state.as_str() {
                "pending" => counts.pending = n,
                "sent" => counts.sent = n,
                _ => counts.failed = n,
            }
        }
        counts.last_error = conn
            .query_row(
                "SELECT last_error FROM mail_outbox WHERE last_error IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap_or(None);
        Ok(counts)
    }

    /// The ticket's subject, tracking token and status, for a mail's
    /// template; `None` once the ticket is gone (retention).
    pub fn mail_ticket(&self, id: i64) -> Result<Option<(String, String, String)>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row(
                "SELECT subject, token, status FROM tickets WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }
}

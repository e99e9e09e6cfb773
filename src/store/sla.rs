//! Service-level events: an at-risk or missed target is recorded once per
//! ticket and target, in one transaction with what it sets off (its webhook
//! message; for a miss, the escalation and the staff mail).

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, desk, mail::MailKind};
use crate::clock;
use crate::notify::webhook::EventType;
use crate::ticket::{EventKind, Priority, Status};

/// What happened to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaEvent {
    AtRisk,
    Breached,
}

impl Store {
    /// Tickets whose clocks may run: not resolved, of a priority with a
    /// policy.
    pub fn sla_open_tickets(&self, priorities: &[Priority]) -> Result<Vec<i64>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, priority FROM tickets WHERE status != 'Resolved' AND priority IS NOT NULL
             ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter(|(_, p)| priorities.iter().any(|q| q.as_str() == p))
            .map(|(id, _)| id)
            .collect())
    }

    /// Records `what` for `target` of ticket `id` at `at` (a breach at its
    /// due time), unless it was recorded before; a breach escalates the
    /// ticket and mails its assignee, or the admins. Returns whether it was
    /// new.
    pub fn record_sla(
        &self,
        id: i64,
        what: SlaEvent,
        target: &str,
        at: &str,
        due: &str,
    ) -> Result<bool, StoreError> {
        let now = clock::now();
        let (kind, hook) = match what {
            SlaEvent::AtRisk => (EventKind::SlaAtRisk, EventType::SlaAtRisk),
            SlaEvent::Breached => (EventKind::SlaBreached, EventType::SlaBreached),
        };
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let seen = tx
                .query_row(
                    "SELECT 1 FROM events WHERE ticket_id = ?1 AND kind = ?2 AND detail = ?3",
                    params![id, kind.as_str(), target],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if seen {
                return Ok(false);
            }
            Self::add_event(&tx, id, kind, target, at)?;
            let sla = serde_json::json!({ "target": target, "due": due, "at": at });
            self.enqueue_webhook(&tx, hook, id, Some(("sla", sla)))?;
            if what == SlaEvent::Breached {
                let (status, assignee): (String, Option<String>) = tx.query_row(
                    "SELECT status, assignee FROM tickets WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let why = format!("service level missed: {}", target.replace('_', " "));
                if status != Status::Escalated.as_str() && status != Status::Resolved.as_str() {
                    tx.execute(
                        "UPDATE tickets SET status = 'Escalated', updated_at = ?2 WHERE id = ?1",
                        params![id, now],
                    )?;
                    desk::record_change(&tx, id, "status", Some(&status), Some(Status::Escalated.as_str()), "sla", &now)?;
                    self.event(&tx, id, EventKind::Escalated, &why, &now)?;
                }
                let ctx = serde_json::json!({ "target": target, "due": due });
                let to: Vec<String> = match assignee {
                    Some(user) => tx
                        .query_row("SELECT email FROM users WHERE name = ?1", [user], |r| r.get(0))
                        .optional()?
                        .flatten()
                        .into_iter()
                        .collect(),
                    None => Vec::new(),
                };
                let to = if to.is_empty() {
                    let mut stmt = tx.prepare(
                        "SELECT email FROM users WHERE role = 'admin' AND active = 1 AND email IS NOT NULL",
                    )?;
                    stmt.query_map([], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()?
                } else {
                    to
                };
                for addr in to {
                    self.enqueue_mail(&tx, MailKind::Breached, id, &addr, ctx.clone())?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
    }
}

//! Service-level state in the store: each ticket's clocks as last evaluated
//! (`sla_clocks`, read by the dashboard's badges, countdowns, filter and
//! compliance chart), and the events an at-risk, missed or still-missed
//! target sets off, recorded once per ticket and target in one transaction
//! with their consequences (webhook message; for a miss, the escalation,
//! the reassignment to the policy's group and the staff mail; for the second
//! level, the admins' mail).

use super::sql::{Backend, OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{Store, StoreError, desk, mail::MailKind};
use crate::clock;
use crate::notify::webhook::EventType;
use crate::ticket::{EventKind, Priority, Status};

/// What happened to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaEvent {
    AtRisk,
    Breached,
    /// Still missed a configured time after the breach: admins are told.
    SecondLevel,
}

impl SlaEvent {
    fn kinds(self) -> (EventKind, EventType) {
        match self {
            SlaEvent::AtRisk => (EventKind::SlaAtRisk, EventType::SlaAtRisk),
            SlaEvent::Breached => (EventKind::SlaBreached, EventType::SlaBreached),
            SlaEvent::SecondLevel => (EventKind::SlaSecondLevel, EventType::SlaBreached),
        }
    }

    /// The history event that a dashboard update carries.
    pub fn event_kind(self) -> EventKind {
        self.kinds().0
    }
}

/// The dashboard's service-level filter (`?sla=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaFilter {
    /// A target was missed.
    Breached,
    /// A running target has used its at-risk share.
    AtRisk,
}

impl SlaFilter {
    pub fn parse(s: &str) -> Option<SlaFilter> {
        match s {
            "breached" => Some(SlaFilter::Breached),
            "at_risk" => Some(SlaFilter::AtRisk),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SlaFilter::Breached => "breached",
            SlaFilter::AtRisk => "at_risk",
        }
    }
}

/// One event to record: `what` happened to `target` at `at` (for a breach,
/// its due time `due`, so that one found after downtime keeps its time).
#[derive(Debug, Clone)]
pub struct SlaRecord<'a> {
    pub what: SlaEvent,
    pub target: &'a str,
    pub at: String,
    pub due: String,
    /// For a breach: the users the ticket goes to (the least busy active
    /// one), unless its assignee is one of them.
    pub group: &'a [String],
}

/// One target's clock as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredClock {
    pub target: String,
    pub due: String,
    pub met_at: Option<String>,
    pub breached_at: Option<String>,
    pub at_risk: bool,
}

/// One priority's service level over one week (Monday to Sunday, UTC) of
/// created tickets whose outcome is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compliance {
    /// The week's Monday, `YYYY-MM-DD`.
    pub week: String,
    pub priority: Priority,
    /// Tickets whose targets were all met or one was missed.
    pub decided: i64,
    pub missed: i64,
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

    /// The stored clocks of ticket `id`, by target.
    pub fn sla_clocks(&self, id: i64) -> Result<Vec<StoredClock>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT target, due, met_at, breached_at, at_risk FROM sla_clocks
             WHERE ticket_id = ?1 ORDER BY target",
        )?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(StoredClock {
                    target: r.get(0)?,
                    due: r.get(1)?,
                    met_at: r.get(2)?,
                    breached_at: r.get(3)?,
                    at_risk: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Replaces the stored clocks of ticket `id` (sorted by target) when
    /// they changed; returns whether they did. A ticket that is gone is
    /// left alone.
    pub fn save_sla_clocks(&self, id: i64, clocks: &[StoredClock]) -> Result<bool, StoreError> {
        if self.sla_clocks(id)? == clocks {
            return Ok(false);
        }
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
            let exists = tx
                .query_row("SELECT 1 FROM tickets WHERE id = ?1", [id], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Ok(false);
            }
            tx.execute("DELETE FROM sla_clocks WHERE ticket_id = ?1", [id])?;
            for c in clocks {
                tx.execute(
                    "INSERT INTO sla_clocks (ticket_id, target, due, met_at, breached_at, at_risk)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, c.target, c.due, c.met_at, c.breached_at, c.at_risk],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    /// Records `rec` for ticket `id` unless it was recorded before; returns
    /// whether it was new.
    pub fn record_sla(&self, id: i64, rec: &SlaRecord) -> Result<bool, StoreError> {
        let (kind, hook) = rec.what.kinds();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
            let seen = tx
                .query_row(
                    "SELECT 1 FROM events WHERE ticket_id = ?1 AND kind = ?2 AND detail = ?3",
                    params![id, kind.as_str(), rec.target],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if seen {
                return Ok(false);
            }
            Self::add_event(&tx, id, kind, rec.target, &rec.at)?;
            let level = if rec.what == SlaEvent::SecondLevel {
                2
            } else {
                1
            };
            let sla = serde_json::json!({
                "target": rec.target, "due": rec.due, "at": rec.at, "level": level,
            });
            self.enqueue_webhook(&tx, hook, id, Some(("sla", sla)))?;
            match rec.what {
                SlaEvent::AtRisk => {}
                SlaEvent::Breached => self.breach(&tx, id, rec)?,
                SlaEvent::SecondLevel => {
                    let ctx =
                        serde_json::json!({ "target": rec.target, "due": rec.due, "level": 2 });
                    for addr in admin_addresses(&tx)? {
                        self.enqueue_mail(&tx, MailKind::Breached, id, &addr, ctx.clone())?;
                    }
                }
            }
            tx.commit()?;
            Ok(true)
        })
    }

    /// A miss: the ticket is escalated (unless it is already, or resolved),
    /// goes to the policy's group, and its assignee (or the admins) are
    /// mailed.
    fn breach(&self, tx: &Transaction, id: i64, rec: &SlaRecord) -> Result<(), StoreError> {
        let now = clock::now();
        let (status, assignee): (String, Option<String>) = tx.query_row(
            "SELECT status, assignee FROM tickets WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let why = format!("service level missed: {}", rec.target.replace('_', " "));
        if status != Status::Escalated.as_str() && status != Status::Resolved.as_str() {
            tx.execute(
                "UPDATE tickets SET status = 'Escalated', updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            desk::record_change(
                tx,
                id,
                "status",
                Some(&status),
                Some(Status::Escalated.as_str()),
                "sla",
                &now,
            )?;
            self.event(tx, id, EventKind::Escalated, &why, &now)?;
        }
        let assignee = match least_busy(tx, rec.group, assignee.as_deref())? {
            Some(to) => {
                tx.execute(
                    "UPDATE tickets SET assignee = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, to, now],
                )?;
                desk::record_change(
                    tx,
                    id,
                    "assignee",
                    assignee.as_deref(),
                    Some(&to),
                    "sla",
                    &now,
                )?;
                self.enqueue_webhook(tx, EventType::TicketAssigned, id, None)?;
                Some(to)
            }
            None => assignee,
        };
        let ctx = serde_json::json!({ "target": rec.target, "due": rec.due, "level": 1 });
        let to: Vec<String> = match assignee {
            Some(user) => tx
                .query_row("SELECT email FROM users WHERE name = ?1", [user], |r| {
                    r.get(0)
                })
                .optional()?
                .flatten()
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        let to = if to.is_empty() {
            admin_addresses(tx)?
        } else {
            to
        };
        for addr in to {
            self.enqueue_mail(tx, MailKind::Breached, id, &addr, ctx.clone())?;
        }
        Ok(())
    }

    /// Per week and priority, from `since` (a date): tickets with clocks
    /// whose outcome is known, and how many of them missed a target.
    pub fn sla_compliance(&self, since: &str) -> Result<Vec<Compliance>, StoreError> {
        let conn = self.reader();
        // The Monday of the week of creation (UTC).
        let week = match conn.backend() {
            Backend::Sqlite => "date(t.created_at, '-6 days', 'weekday 1')",
            Backend::Postgres => {
                "to_char(date_trunc('week', t.created_at::timestamp), 'YYYY-MM-DD')"
            }
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {week} AS week, t.priority,
                    SUM(CASE WHEN m.missed = 1 OR m.running = 0 THEN 1 ELSE 0 END),
                    SUM(m.missed)
             FROM tickets t
             JOIN (SELECT c.ticket_id,
                          CASE WHEN EXISTS (SELECT 1 FROM events e WHERE e.ticket_id = c.ticket_id
                                  AND e.kind = 'sla_breached') THEN 1 ELSE 0 END AS missed,
                          MAX(CASE WHEN c.met_at IS NULL AND c.breached_at IS NULL
                              THEN 1 ELSE 0 END) AS running
                   FROM sla_clocks c GROUP BY c.ticket_id) m ON m.ticket_id = t.id
             WHERE t.created_at >= ?1 AND t.priority IS NOT NULL
             GROUP BY week, t.priority ORDER BY week, t.priority"
        ))?;
        let rows = stmt
            .query_map([since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(week, p, decided, missed)| {
                Some(Compliance {
                    week,
                    priority: p.parse().ok()?,
                    decided,
                    missed,
                })
            })
            .collect())
    }
}

/// The active admins' addresses.
fn admin_addresses(tx: &Transaction) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT email FROM users WHERE role = 'admin' AND active = 1 AND email IS NOT NULL
         ORDER BY name",
    )?;
    let v = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(v)
}

/// The active member of `group` with the fewest unresolved tickets (then by
/// name), or `None` when the group is empty, has no active member, or
/// `current` already belongs to it.
fn least_busy(
    tx: &Transaction,
    group: &[String],
    current: Option<&str>,
) -> Result<Option<String>, StoreError> {
    if group.is_empty() || current.is_some_and(|c| group.iter().any(|g| g.eq_ignore_ascii_case(c)))
    {
        return Ok(None);
    }
    let mut stmt = tx.prepare_cached(
        "SELECT (SELECT COUNT(*) FROM tickets t WHERE t.assignee = u.name
                 AND t.status != 'Resolved')
         FROM users u WHERE u.name = ?1 COLLATE NOCASE AND u.active = 1",
    )?;
    let mut best: Option<(i64, String)> = None;
    for name in group {
        let load: Option<(i64, String)> = stmt
            .query_row([name], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|n| (n, name.clone()));
        if let Some(candidate) = load
            && best.as_ref().is_none_or(|b| candidate < *b)
        {
            best = Some(candidate);
        }
    }
    // The user's own spelling of the name, as stored.
    match best {
        Some((_, name)) => Ok(tx
            .query_row(
                "SELECT name FROM users WHERE name = ?1 COLLATE NOCASE",
                [name],
                |r| r.get(0),
            )
            .optional()?),
        None => Ok(None),
    }
}

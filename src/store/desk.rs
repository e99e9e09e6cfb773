//! The support desk's records: the conversation on a ticket (public and
//! internal messages), the history of staff changes (who changed which field
//! from what to what, when), and the assignee.

use super::sql::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::{Store, StoreError};
use crate::clock;
use crate::notify::webhook::EventType;
use crate::ticket::{Category, EventKind, Priority, Status};

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    Customer,
    /// A staff user (or `api`, the API token).
    Staff(String),
    Ai,
    System,
}

impl Author {
    fn kind(&self) -> &'static str {
        match self {
            Author::Customer => "customer",
            Author::Staff(_) => "staff",
            Author::Ai => "ai",
            Author::System => "system",
        }
    }

    /// The `author` field: `customer`, `ai`, `system` or the staff user's name.
    fn label(&self) -> String {
        match self {
            Author::Staff(name) => name.clone(),
            other => other.kind().to_string(),
        }
    }
}

/// One message of a ticket's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub id: i64,
    /// `customer`, `ai`, `system` or the staff user's name.
    pub author: String,
    /// `customer`, `staff`, `ai` or `system`.
    pub author_kind: String,
    pub internal: bool,
    pub ai_assisted: bool,
    pub body: String,
    pub created_at: String,
}

/// One change: `field` went `from` → `to`, by whom, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub by: String,
    pub at: String,
}

/// How often staff kept the AI's decisions, for one AI category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agreement {
    pub category: String,
    pub tickets: i64,
    pub category_kept: i64,
    pub priority_kept: i64,
}

/// One staff correction of the AI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Override {
    pub ticket_id: i64,
    pub subject: String,
    pub description: String,
    pub field: String,
    pub ai_value: Option<String>,
    pub staff_value: Option<String>,
    pub by: String,
    pub at: String,
}

/// A reply template staff insert into the editor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CannedReply {
    pub id: i64,
    /// `None`: offered on every ticket.
    pub category: Option<Category>,
    pub title: String,
    pub body: String,
}

/// What staff may change on a ticket; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TicketChanges {
    pub category: Option<Category>,
    pub priority: Option<Priority>,
    pub status: Option<Status>,
}

/// A new message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub author: Author,
    pub internal: bool,
    pub ai_assisted: bool,
    pub body: String,
}

pub(super) fn record_change(
    tx: &Transaction,
    id: i64,
    field: &str,
    from: Option<&str>,
    to: Option<&str>,
    by: &str,
    at: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO history (ticket_id, field, from_value, to_value, by, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, field, from, to, by, at],
    )?;
    Store::add_event(tx, id, EventKind::Changed, field, at)
}

/// A ticket's fields that desk changes read before they write.
struct Current {
    status: String,
    category: Option<String>,
    priority: Option<String>,
    assignee: Option<String>,
    updated_at: String,
}

fn current(tx: &Transaction, id: i64) -> Result<Current, StoreError> {
    tx.query_row(
        "SELECT status, category, priority, assignee, updated_at FROM tickets WHERE id = ?1",
        [id],
        |r| {
            Ok(Current {
                status: r.get(0)?,
                category: r.get(1)?,
                priority: r.get(2)?,
                assignee: r.get(3)?,
                updated_at: r.get(4)?,
            })
        },
    )
    .optional()?
    .ok_or(StoreError::NotFound)
}

/// The AI's answer as one message: the text, then the numbered steps.
pub fn answer_text(s: &crate::ticket::Solution) -> String {
    let steps: Vec<String> = s
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| format!("{}. {step}", i + 1))
        .collect();
    if steps.is_empty() {
        s.message.clone()
    } else {
        format!("{}\n\n{}", s.message, steps.join("\n"))
    }
}

/// Records the AI's answer as a public message by `ai`.
pub(super) fn add_ai_message(
    tx: &Transaction,
    id: i64,
    body: &str,
    at: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO messages (ticket_id, author_kind, author_name, internal, ai_assisted, body, created_at)
         VALUES (?1, 'ai', 'ai', 0, 0, ?2, ?3)",
        params![id, body, at],
    )?;
    Ok(())
}

/// Days between two RFC 3339 times (0 when either does not parse).
fn days_between(earlier: &str, later: &str) -> i64 {
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    match (parse(earlier), parse(later)) {
        (Some(a), Some(b)) => (b - a).whole_days(),
        _ => 0,
    }
}

impl Store {
    /// Adds a message. A customer's reply to a resolved ticket reopens it
    /// when it was resolved at most `reopen_days` ago; later it is refused
    /// (the customer is asked to open a new ticket). Returns the message and
    /// the ticket's status after it.
    pub fn add_message(
        &self,
        id: i64,
        m: &NewMessage,
        reopen_days: u32,
    ) -> Result<(Message, Status), StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Current {
                status, updated_at, ..
            } = current(&tx, id)?;
            let mut status: Status = status.parse().unwrap_or(Status::Open);
            if m.author == Author::Customer && status == Status::Resolved {
                if days_between(&updated_at, &now) > i64::from(reopen_days) {
                    return Err(StoreError::Conflict(format!(
                        "this ticket was resolved more than {reopen_days} days ago; please open a new ticket"
                    )));
                }
                tx.execute(
                    "UPDATE tickets SET status = 'Open' WHERE id = ?1",
                    [id],
                )?;
                record_change(&tx, id, "status", Some(Status::Resolved.as_str()), Some(Status::Open.as_str()), "customer", &now)?;
                self.event(&tx, id, EventKind::Reopened, "by the customer's reply", &now)?;
                status = Status::Open;
            } else if m.author == Author::Customer && status == Status::Pending {
                // The customer answered: the ticket is the team's again.
                tx.execute("UPDATE tickets SET status = 'Open' WHERE id = ?1", [id])?;
                record_change(&tx, id, "status", Some(Status::Pending.as_str()), Some(Status::Open.as_str()), "customer", &now)?;
                status = Status::Open;
            }
            let msg_id: i64 = tx.query_row(
                "INSERT INTO messages (ticket_id, author_kind, author_name, internal, ai_assisted, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
                params![id, m.author.kind(), m.author.label(), m.internal, m.ai_assisted, m.body, now],
                |r| r.get(0),
            )?;
            Self::add_event(&tx, id, EventKind::Message, &msg_id.to_string(), &now)?;
            tx.execute("UPDATE tickets SET updated_at = ?2 WHERE id = ?1", params![id, now])?;
            if !m.internal {
                let message = serde_json::json!({
                    "author": m.author.label(),
                    "author_kind": m.author.kind(),
                    "body": m.body,
                    "created_at": now,
                });
                self.enqueue_webhook(&tx, EventType::TicketMessage, id, Some(("message", message)))?;
                if let Author::Staff(name) = &m.author {
                    let ctx = serde_json::json!({ "author": name, "body": m.body });
                    self.mail_customer(&tx, super::mail::MailKind::Reply, id, ctx)?;
                }
            }
            tx.commit()?;
            Ok((
                Message {
                    id: msg_id,
                    author: m.author.label(),
                    author_kind: m.author.kind().into(),
                    internal: m.internal,
                    ai_assisted: m.ai_assisted,
                    body: m.body.clone(),
                    created_at: now.clone(),
                },
                status,
            ))
        })
    }

    /// Applies staff changes to category, priority and status; each real
    /// change is a history entry. Returns the status after the change.
    pub fn change_ticket(
        &self,
        id: i64,
        changes: &TicketChanges,
        by: &str,
    ) -> Result<Status, StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Current {
                status,
                category,
                priority,
                ..
            } = current(&tx, id)?;
            let fields = [
                ("category", category, changes.category.map(|c| c.as_str())),
                ("priority", priority, changes.priority.map(|p| p.as_str())),
                (
                    "status",
                    Some(status.clone()),
                    changes.status.map(|s| s.as_str()),
                ),
            ];
            for (field, from, to) in fields {
                let Some(to) = to.filter(|to| from.as_deref() != Some(*to)) else {
                    continue;
                };
                tx.execute(
                    &format!("UPDATE tickets SET {field} = ?2, updated_at = ?3 WHERE id = ?1"),
                    params![id, to, now],
                )?;
                record_change(&tx, id, field, from.as_deref(), Some(to), by, &now)?;
                if field == "status" && to == Status::Resolved.as_str() {
                    self.event(&tx, id, EventKind::Resolved, &format!("by {by}"), &now)?;
                } else if field == "status" && from.as_deref() == Some(Status::Resolved.as_str()) {
                    self.event(&tx, id, EventKind::Reopened, &format!("by {by}"), &now)?;
                }
            }
            let status = current(&tx, id)?.status;
            tx.commit()?;
            Ok(status.parse().unwrap_or(Status::Open))
        })
    }

    /// Assigns the ticket to an active user (or to nobody); a history entry
    /// when it changes.
    pub fn assign(
        &self,
        id: i64,
        user: Option<&str>,
        by: &str,
    ) -> Result<Option<String>, StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let from = current(&tx, id)?.assignee;
            let to = match user {
                None => None,
                Some(name) => Some(
                    tx.query_row(
                        "SELECT name FROM users WHERE name = ?1 AND active = 1",
                        [name],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()?
                    .ok_or(StoreError::UserNotFound)?,
                ),
            };
            if from != to {
                tx.execute(
                    "UPDATE tickets SET assignee = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, to, now],
                )?;
                record_change(
                    &tx,
                    id,
                    "assignee",
                    from.as_deref(),
                    to.as_deref(),
                    by,
                    &now,
                )?;
                if let Some(user) = &to {
                    self.enqueue_webhook(&tx, EventType::TicketAssigned, id, None)?;
                    self.mail_assignee(&tx, id, user)?;
                }
            }
            tx.commit()?;
            Ok(to)
        })
    }

    /// Assigns the ticket to the next active agent after the one who got
    /// the last automatic assignment, in name order (round-robin); `None`
    /// when there is no active agent. Recorded as a change by `system`.
    pub fn assign_round_robin(&self, id: i64) -> Result<Option<String>, StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let agents: Vec<String> = tx
                .prepare(
                    "SELECT name FROM users WHERE role = 'agent' AND active = 1 ORDER BY name COLLATE NOCASE",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let last: Option<String> = tx
                .query_row("SELECT value FROM settings WHERE key = 'round_robin_last'", [], |r| r.get(0))
                .optional()?;
            let next = match last {
                Some(last) => agents
                    .iter()
                    .find(|a| a.to_lowercase() > last.to_lowercase())
                    .or(agents.first()),
                None => agents.first(),
            };
            let Some(next) = next.cloned() else {
                return Ok(None);
            };
            let from = current(&tx, id)?.assignee;
            tx.execute(
                "UPDATE tickets SET assignee = ?2 WHERE id = ?1",
                params![id, next],
            )?;
            record_change(&tx, id, "assignee", from.as_deref(), Some(&next), "system", &now)?;
            self.enqueue_webhook(&tx, EventType::TicketAssigned, id, None)?;
            self.mail_assignee(&tx, id, &next)?;
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('round_robin_last', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [&next],
            )?;
            tx.commit()?;
            Ok(Some(next))
        })
    }

    /// Per AI category: processed tickets, and how many still have the AI's
    /// category and priority (staff kept them).
    pub fn ai_agreement(&self) -> Result<Vec<Agreement>, StoreError> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(
            "SELECT c.to_value, COUNT(*),
                    SUM(CASE WHEN t.category = c.to_value THEN 1 ELSE 0 END),
                    SUM(CASE WHEN t.priority = p.to_value THEN 1 ELSE 0 END)
             FROM history c
             JOIN history p ON p.ticket_id = c.ticket_id AND p.field = 'priority' AND p.by = 'ai'
             JOIN tickets t ON t.id = c.ticket_id
             WHERE c.field = 'category' AND c.by = 'ai'
             GROUP BY c.to_value ORDER BY c.to_value",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(Agreement {
                    category: r.get(0)?,
                    tickets: r.get(1)?,
                    category_kept: r.get(2)?,
                    priority_kept: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Staff corrections of the AI's category and priority, with the
    /// ticket's text: labelled data for tuning models. Oldest first.
    pub fn overrides(&self, limit: usize) -> Result<Vec<Override>, StoreError> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(
            "SELECT h.ticket_id, t.subject, t.description, h.field, a.to_value, h.to_value, h.by, h.at
             FROM history h
             JOIN tickets t ON t.id = h.ticket_id
             JOIN history a ON a.ticket_id = h.ticket_id AND a.field = h.field AND a.by = 'ai'
             WHERE h.field IN ('category', 'priority') AND h.by != 'ai'
             ORDER BY h.id LIMIT ?1",
        )?;
        let rows = st
            .query_map([limit as i64], |r| {
                Ok(Override {
                    ticket_id: r.get(0)?,
                    subject: r.get(1)?,
                    description: r.get(2)?,
                    field: r.get(3)?,
                    ai_value: r.get(4)?,
                    staff_value: r.get(5)?,
                    by: r.get(6)?,
                    at: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Canned replies: those of `category` and those for every category
    /// (all of them when `category` is `None`), by title.
    pub fn canned_replies(
        &self,
        category: Option<Category>,
    ) -> Result<Vec<CannedReply>, StoreError> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(
            "SELECT id, category, title, body FROM canned_replies
             WHERE CAST(?1 AS TEXT) IS NULL OR category IS NULL OR category = ?1
             ORDER BY title COLLATE NOCASE, id",
        )?;
        let rows = st
            .query_map([category.map(|c| c.as_str())], |r| {
                Ok(CannedReply {
                    id: r.get(0)?,
                    category: r.get::<_, Option<String>>(1)?.and_then(|c| c.parse().ok()),
                    title: r.get(2)?,
                    body: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn add_canned_reply(
        &self,
        category: Option<Category>,
        title: &str,
        body: &str,
    ) -> Result<i64, StoreError> {
        let now = clock::now();
        self.write(|c| {
            Ok(c.query_row(
                "INSERT INTO canned_replies (category, title, body, created_at)
                 VALUES (?1, ?2, ?3, ?4) RETURNING id",
                params![category.map(|c| c.as_str()), title, body, now],
                |r| r.get(0),
            )?)
        })
    }

    pub fn delete_canned_reply(&self, id: i64) -> Result<(), StoreError> {
        self.write(
            |c| match c.execute("DELETE FROM canned_replies WHERE id = ?1", [id])? {
                0 => Err(StoreError::Conflict("no such canned reply".into())),
                _ => Ok(()),
            },
        )
    }

    pub(super) fn messages_of(conn: &Connection, id: i64) -> Result<Vec<Message>, StoreError> {
        let mut st = conn.prepare_cached(
            "SELECT id, author_name, author_kind, internal, ai_assisted, body, created_at
             FROM messages WHERE ticket_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([id], |r| {
                Ok(Message {
                    id: r.get(0)?,
                    author: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    author_kind: r.get(2)?,
                    internal: r.get(3)?,
                    ai_assisted: r.get(4)?,
                    body: r.get(5)?,
                    created_at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub(super) fn history_of(conn: &Connection, id: i64) -> Result<Vec<Change>, StoreError> {
        let mut st = conn.prepare_cached(
            "SELECT field, from_value, to_value, by, at FROM history WHERE ticket_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([id], |r| {
                Ok(Change {
                    field: r.get(0)?,
                    from: r.get(1)?,
                    to: r.get(2)?,
                    by: r.get(3)?,
                    at: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

//! The webhook outbox. A message is written in the same transaction as the
//! change it reports (a ticket created, classified, escalated, resolved,
//! assigned, a public message), so a change is never committed without its
//! message nor reported without being committed. The delivery task then
//! fans each message out to the endpoints that subscribe to it (one
//! delivery row each) and works the deliveries (`crate::notify`). Nothing
//! is written while no endpoint is configured.

use super::sql::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::{Store, StoreError};
use crate::clock;
use crate::notify::webhook::{Endpoint, EventType};
use crate::ticket::EventKind;

/// The webhook event a ticket event is, if any.
fn webhook_event(kind: EventKind) -> Option<EventType> {
    match kind {
        EventKind::Submitted => Some(EventType::TicketCreated),
        EventKind::AiCompleted => Some(EventType::TicketClassified),
        EventKind::Escalated => Some(EventType::TicketEscalated),
        EventKind::Resolved => Some(EventType::TicketResolved),
        _ => None,
    }
}

/// A delivery due now, with its message.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub endpoint: String,
    pub msg_id: String,
    pub body: String,
    pub attempts: u32,
}

/// A row of the delivery log on `/admin/webhooks`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryLog {
    pub id: i64,
    pub msg_id: String,
    pub event: String,
    pub ticket_id: i64,
    pub endpoint: String,
    pub state: String,
    pub attempts: u32,
    pub next_at: String,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub updated_at: String,
}

/// An endpoint's standing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointState {
    pub failures: u32,
    pub disabled_at: Option<String>,
    pub disabled_reason: Option<String>,
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// The webhook body's view of a ticket: no tracking token, no internal notes.
fn ticket_json(tx: &Transaction, id: i64) -> Result<serde_json::Value, StoreError> {
    tx.query_row(
        "SELECT id, subject, status, category, priority, assignee, created_at, updated_at
         FROM tickets WHERE id = ?1",
        [id],
        |r| {
            Ok(serde_json::json!({
                "id": r.get::<_, i64>(0)?,
                "subject": r.get::<_, String>(1)?,
                "status": r.get::<_, String>(2)?,
                "category": r.get::<_, Option<String>>(3)?,
                "priority": r.get::<_, Option<String>>(4)?,
                "assignee": r.get::<_, Option<String>>(5)?,
                "created_at": r.get::<_, String>(6)?,
                "updated_at": r.get::<_, String>(7)?,
            }))
        },
    )
    .map_err(StoreError::from)
}

impl Store {
    /// Records ticket event `kind` and, when it is one a webhook reports,
    /// its outbox message (and the customer's mail when it resolves the
    /// ticket), in the caller's transaction.
    pub(super) fn event(
        &self,
        tx: &Transaction,
        id: i64,
        kind: EventKind,
        detail: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        Self::add_event(tx, id, kind, detail, at)?;
        if kind == EventKind::Resolved {
            self.mail_customer(
                tx,
                super::mail::MailKind::Resolved,
                id,
                serde_json::json!({}),
            )?;
        }
        if let Some(event) = webhook_event(kind) {
            let extra = (kind == EventKind::Escalated)
                .then(|| ("reason", serde_json::Value::String(detail.to_string())));
            self.enqueue_webhook(tx, event, id, extra)?;
        }
        Ok(())
    }

    /// Whether changes write webhook messages (an endpoint is configured).
    pub fn set_webhooks(&self, on: bool) {
        self.webhooks_on
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes a message of type `event` about ticket `id` into the outbox,
    /// inside the caller's transaction; `extra` goes into `data` beside the
    /// ticket (the message of `ticket.message`, the reason of an escalation).
    pub(super) fn enqueue_webhook(
        &self,
        tx: &Transaction,
        event: EventType,
        id: i64,
        extra: Option<(&str, serde_json::Value)>,
    ) -> Result<(), StoreError> {
        if !self.webhooks_on.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let now = clock::now();
        let mut data = serde_json::Map::new();
        data.insert("ticket".into(), ticket_json(tx, id)?);
        if let Some((k, v)) = extra {
            data.insert(k.into(), v);
        }
        let body = serde_json::json!({
            "type": event.as_str(),
            "timestamp": now,
            "data": data,
        });
        let msg_id = format!("msg_{}", super::new_token());
        tx.execute(
            "INSERT INTO webhook_messages (msg_id, type, ticket_id, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![msg_id, event.as_str(), id, body.to_string(), now],
        )?;
        Ok(())
    }

    /// Gives each new message one delivery per endpoint whose subscription
    /// `wants` it, in message order; returns how many were created.
    pub fn fan_out_webhooks(&self, endpoints: &[Endpoint]) -> Result<usize, StoreError> {
        // The task polls twice a second: look on a reader first, so that an
        // idle outbox never takes the write lock.
        let waiting: bool = self.reader().query_row(
            "SELECT EXISTS (SELECT 1 FROM webhook_messages WHERE fanned_out = 0)",
            [],
            |r| r.get(0),
        )?;
        if !waiting {
            return Ok(0);
        }
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let fresh: Vec<(i64, String, i64)> = {
                let mut stmt = tx.prepare(
                    "SELECT id, type, ticket_id FROM webhook_messages
                     WHERE fanned_out = 0 ORDER BY id LIMIT 500",
                )?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?
            };
            let mut created = 0;
            for (id, kind, ticket) in &fresh {
                let Some(event) = EventType::parse(kind) else {
                    continue;
                };
                for e in endpoints {
                    if e.events.wants(event) {
                        tx.execute(
                            "INSERT INTO webhook_deliveries
                               (message_id, endpoint, ticket_id, state, next_at, updated_at)
                             VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
                            params![id, e.url, ticket, now],
                        )?;
                        created += 1;
                    }
                }
                tx.execute(
                    "UPDATE webhook_messages SET fanned_out = 1 WHERE id = ?1",
                    [id],
                )?;
            }
            tx.commit()?;
            Ok(created)
        })
    }

    /// Deliveries due now to enabled endpoints, oldest first, each the
    /// earliest pending one of its ticket and endpoint (order per ticket).
    pub fn due_webhooks(&self, limit: usize) -> Result<Vec<DueDelivery>, StoreError> {
        let now = clock::now();
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.endpoint, m.msg_id, m.body, d.attempts
             FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
             WHERE d.state = 'pending' AND d.next_at <= ?1
               AND NOT EXISTS (SELECT 1 FROM webhook_endpoints e
                               WHERE e.url = d.endpoint AND e.disabled_at IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                               WHERE p.endpoint = d.endpoint AND p.ticket_id = d.ticket_id
                                 AND p.state = 'pending' AND p.id < d.id)
             ORDER BY d.id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![now, limit as i64], |r| {
                Ok(DueDelivery {
                    id: r.get(0)?,
                    endpoint: r.get(1)?,
                    msg_id: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records a delivered try; the endpoint's failure run ends.
    pub fn webhook_delivered(
        &self,
        id: i64,
        endpoint: &str,
        status: u16,
    ) -> Result<(), StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1,
                   last_status = ?2, last_error = NULL, updated_at = ?3 WHERE id = ?1",
                params![id, status, now],
            )?;
            tx.execute(
                "INSERT INTO webhook_endpoints (url, failures) VALUES (?1, 0)
                 ON CONFLICT(url) DO UPDATE SET failures = 0",
                [endpoint],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Records a failed try: retried at `retry_at`, or failed for good when
    /// `None`; the endpoint is disabled once it has failed `disable_after`
    /// times in a row. Returns whether this disabled it.
    pub fn webhook_failed(
        &self,
        id: i64,
        endpoint: &str,
        status: Option<u16>,
        error: &str,
        retry_at: Option<String>,
        disable_after: u32,
    ) -> Result<bool, StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let state = if retry_at.is_some() {
                "pending"
            } else {
                "failed"
            };
            tx.execute(
                "UPDATE webhook_deliveries SET state = ?2, attempts = attempts + 1,
                   next_at = COALESCE(?3, next_at), last_status = ?4, last_error = ?5,
                   updated_at = ?6 WHERE id = ?1",
                params![id, state, retry_at, status, error, now],
            )?;
            let failures: u32 = tx.query_row(
                "INSERT INTO webhook_endpoints (url, failures) VALUES (?1, 1)
                 ON CONFLICT(url) DO UPDATE SET failures = webhook_endpoints.failures + 1
                 RETURNING failures",
                [endpoint],
                |r| r.get(0),
            )?;
            let disable = disable_after > 0 && failures >= disable_after;
            let disabled = disable
                && tx.execute(
                    "UPDATE webhook_endpoints SET disabled_at = ?2, disabled_reason = ?3
                     WHERE url = ?1 AND disabled_at IS NULL",
                    params![
                        endpoint,
                        now,
                        format!("{failures} failures in a row; the last: {error}")
                    ],
                )? > 0;
            tx.commit()?;
            Ok(disabled)
        })
    }

    /// Enables an endpoint again; its waiting deliveries are due at once.
    pub fn enable_webhook_endpoint(&self, url: &str) -> Result<(), StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL,
                   failures = 0 WHERE url = ?1",
                [url],
            )?;
            tx.execute(
                "UPDATE webhook_deliveries SET next_at = ?2
                 WHERE endpoint = ?1 AND state = 'pending'",
                params![url, now],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Sends a delivery again (failed or delivered): pending, due now, its
    /// tries counted afresh, the same `webhook-id`.
    pub fn replay_webhook(&self, id: i64) -> Result<(), StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let n = conn.execute(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_at = ?2,
                   updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }

    /// The newest `limit` deliveries, for the log.
    pub fn webhook_log(&self, limit: usize) -> Result<Vec<DeliveryLog>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, m.msg_id, m.type, d.ticket_id, d.endpoint, d.state, d.attempts,
                    d.next_at, d.last_status, d.last_error, d.updated_at
             FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
             ORDER BY d.id DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(DeliveryLog {
                    id: r.get(0)?,
                    msg_id: r.get(1)?,
                    event: r.get(2)?,
                    ticket_id: r.get(3)?,
                    endpoint: r.get(4)?,
                    state: r.get(5)?,
                    attempts: r.get(6)?,
                    next_at: r.get(7)?,
                    last_status: r.get(8)?,
                    last_error: r.get(9)?,
                    updated_at: r.get(10)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// An endpoint's failures, whether it is disabled, and its deliveries.
    pub fn webhook_endpoint_state(&self, url: &str) -> Result<EndpointState, StoreError> {
        let conn = self.reader();
        let mut s: EndpointState = conn
            .query_row(
                "SELECT failures, disabled_at, disabled_reason FROM webhook_endpoints WHERE url = ?1",
                [url],
                |r| {
                    Ok(EndpointState {
                        failures: r.get(0)?,
                        disabled_at: r.get(1)?,
                        disabled_reason: r.get(2)?,
                        ..Default::default()
                    })
                },
            )
            .optional()?
            .unwrap_or_default();
        let mut stmt = conn.prepare_cached(
            "SELECT state, COUNT(*) FROM webhook_deliveries WHERE endpoint = ?1 GROUP BY state",
        )?;
        for row in stmt.query_map([url], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            match state.as_str() {
                "pending" => s.pending = n,
                "delivered" => s.delivered = n,
                _ => s.failed = n,
            }
        }
        Ok(s)
    }
}

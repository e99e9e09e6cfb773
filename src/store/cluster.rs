//! What several processes on one database share besides the tickets: the
//! change feed (`events`, read by id), the leases of the jobs that one node
//! at a time does (webhook and mail deliveries, timers, maintenance), and
//! the nodes that are alive.
//!
//! The feed is correct because ids grow in commit order: every write runs
//! in `BEGIN IMMEDIATE` (one writer at a time across processes), and the
//! ids are AUTOINCREMENT (never handed out twice), so a reader that saw id
//! N has seen every change before it.

use std::time::Duration;

use super::sql::{OptionalExtension, params};
use serde::Serialize;

use super::{Store, StoreError};
use crate::ticket::{EventKind, Status};

/// A change to a ticket, as the feed reads it: the event and the ticket's
/// status now.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    pub id: i64,
    pub ticket_id: i64,
    pub kind: EventKind,
    pub status: Status,
}

/// A process on the database, as its last heartbeat left it.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub role: String,
    pub started_at: String,
    pub seen_at: String,
    /// What it runs (a worker's engines, as its `/health` names them).
    pub engines: serde_json::Value,
}

impl Store {
    /// Events after `after`, oldest first, at most `limit`.
    pub fn feed_after(&self, after: i64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT e.id, e.ticket_id, e.kind, t.status FROM events e
             JOIN tickets t ON t.id = e.ticket_id
             WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // A kind this version does not know (a newer node wrote it) is
        // skipped, not an error: the next snapshot shows its effect.
        Ok(rows
            .into_iter()
            .filter_map(|(id, ticket_id, kind, status)| {
                Some(FeedEvent {
                    id,
                    ticket_id,
                    kind: EventKind::parse(&kind)?,
                    status: status.parse().unwrap_or(Status::Open),
                })
            })
            .collect())
    }

    /// The newest event's id (0 when there is none).
    pub fn last_event_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .reader()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// The newest event's id on ticket `id` (0 when there is none).
    pub fn last_event_of(&self, id: i64) -> Result<i64, StoreError> {
        Ok(self.reader().query_row(
            "SELECT COALESCE(MAX(id), 0) FROM events WHERE ticket_id = ?1",
            [id],
            |r| r.get(0),
        )?)
    }

    /// Takes or renews the lease `name` for `owner` until `ttl` from now;
    /// `false` while another owner's lease runs.
    pub fn hold_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (now, expires) = (self.db_now(), self.db_after(ttl));
        self.write(|c| {
            let changed = c.execute(
                "INSERT INTO leases (name, owner, expires) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
                 WHERE leases.owner = excluded.owner OR leases.expires < ?4",
                params![name, owner, expires, now],
            )?;
            Ok(changed == 1)
        })
    }

    /// Gives the lease `name` up when `owner` holds it (at shutdown, so
    /// another node takes the job at once).
    pub fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
                params![name, owner],
            )?;
            Ok(())
        })
    }

    /// Who holds the lease `name` now, if anyone.
    pub fn lease_holder(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                "SELECT owner FROM leases WHERE name = ?1 AND expires >= ?2",
                params![name, self.db_now()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records that node `name` (in `role`, running `engines`) is alive now.
    pub fn node_seen(
        &self,
        name: &str,
        role: &str,
        started_at: &str,
        engines: &serde_json::Value,
    ) -> Result<(), StoreError> {
        // The heartbeat also keeps this machine's reading of the server's
        // clock fresh (leases are written in the server's time).
        self.read_server_clock()?;
        let now = self.db_now();
        let engines = engines.to_string();
        self.write(|c| {
            c.execute(
                "INSERT INTO nodes (name, role, started_at, seen_at, engines)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET role = excluded.role,
                     seen_at = excluded.seen_at, engines = excluded.engines",
                params![name, role, started_at, now, engines],
            )?;
            Ok(())
        })
    }

    /// Forgets node `name` (it stopped cleanly).
    pub fn node_gone(&self, name: &str) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute("DELETE FROM nodes WHERE name = ?1", [name])?;
            Ok(())
        })
    }

    /// Nodes seen in the last `within`, by name.
    pub fn nodes_seen(&self, within: Duration) -> Result<Vec<Node>, StoreError> {
        let since = self.db_ago(within);
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT name, role, started_at, seen_at, engines FROM nodes
             WHERE seen_at >= ?1 ORDER BY name",
        )?;
        let nodes = stmt
            .query_map([&since], |r| {
                Ok(Node {
                    name: r.get(0)?,
                    role: r.get(1)?,
                    started_at: r.get(2)?,
                    seen_at: r.get(3)?,
                    engines: serde_json::from_str(&r.get::<_, String>(4)?)
                        .unwrap_or(serde_json::Value::Null),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(nodes)
    }

    /// Removes nodes not seen for `older`: a process killed without a
    /// goodbye leaves its row behind.
    pub fn forget_nodes(&self, older: Duration) -> Result<usize, StoreError> {
        let before = self.db_ago(older);
        self.write(|c| Ok(c.execute("DELETE FROM nodes WHERE seen_at < ?1", [before])?))
    }
}

//! The processing queue with leases. A worker claims the oldest ticket that
//! is waiting, or whose lease expired, and holds it under a lease: a random
//! token, the worker's name and an expiry, committed at once, so no
//! transaction stays open while the models run. It renews the lease while
//! it works; its result is stored only under its token (`complete_with`),
//! so a worker that lost its lease (it hung past the expiry and another took
//! the ticket) cannot overwrite the other's result. Every claim counts as an
//! attempt; past the allowed number the worker answers with the rules alone
//! and records why (`Claim::exhausted`), so a ticket that kills the models
//! is never retried forever. A shutdown hands its tickets back without
//! counting the attempt.
//!
//! On SQLite one process owns the file (`DB.lock`), so at start every lease
//! in it belongs to a process that is gone and is expired at once
//! (`expire_leases`); the claim is the statement shape a shared database
//! runs with `FOR UPDATE SKIP LOCKED`, here inside `BEGIN IMMEDIATE`.

use std::time::Duration;

use super::sql::{Backend, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Store, StoreError, new_token};
use crate::ticket::{EventKind, TicketInput};

/// A ticket held under a lease.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: i64,
    /// The lease's token: renewal, completion and release need it.
    pub token: String,
    pub input: TicketInput,
    /// This claim's number (1 for the first).
    pub attempt: i64,
    /// Why the last attempt did not finish, when one did not.
    pub last_error: Option<String>,
}

impl Claim {
    /// Whether the attempts are used up: past `max_attempts` the models are
    /// not run again.
    pub fn exhausted(&self, max_attempts: u32) -> bool {
        self.attempt > i64::from(max_attempts.max(1))
    }
}

/// Waiting, or held under a lease that expired at `now`.
const CLAIMABLE: &str = "processing = 'accepted'
     OR (processing = 'processing' AND (lease_expires IS NULL OR lease_expires < ?1))";

impl Store {
    /// Tickets waiting or held under an expired lease, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<i64>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id FROM tickets WHERE {CLAIMABLE} ORDER BY id LIMIT ?2"
        ))?;
        let ids = stmt
            .query_map(params![self.db_now(), limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Tickets not yet done (waiting or being processed).
    pub fn backlog(&self) -> Result<i64, StoreError> {
        Ok(self.reader().query_row(
            "SELECT COUNT(*) FROM tickets WHERE processing != 'done'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Expires every lease (at start, on a file only this process opens:
    /// their holders are gone); returns how many there were.
    pub fn expire_leases(&self) -> Result<usize, StoreError> {
        self.write(|c| {
            Ok(c.execute(
                "UPDATE tickets SET lease_expires = NULL,
                     last_error = 'the service stopped while processing it'
                 WHERE processing = 'processing'",
                [],
            )?)
        })
    }

    /// Expires the leases whose owner is not a node seen alive in the last
    /// `within` (it died without handing them back): on a shared database
    /// a node that starts, or one that waits for work, frees them at once
    /// instead of waiting each lease out. Returns how many.
    pub fn expire_orphaned_leases(&self, within: Duration) -> Result<usize, StoreError> {
        let since = self.db_ago(within);
        self.write(|c| {
            Ok(c.execute(
                "UPDATE tickets SET lease_expires = NULL,
                     last_error = 'the service stopped while processing it (node '
                         || COALESCE(lease_owner, '?') || ')'
                 WHERE processing = 'processing' AND lease_expires IS NOT NULL
                   AND (lease_owner IS NULL
                        OR lease_owner NOT IN (SELECT name FROM nodes WHERE seen_at >= ?1))",
                [since],
            )?)
        })
    }

    /// Claims the oldest claimable ticket for `owner` for `lease`.
    pub fn claim_next(&self, owner: &str, lease: Duration) -> Result<Option<Claim>, StoreError> {
        self.claim_where(None, owner, lease)
    }

    /// Claims ticket `id` when it is claimable (tests and tools).
    pub fn claim(
        &self,
        id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        self.claim_where(Some(id), owner, lease)
    }

    fn claim_where(
        &self,
        only: Option<i64>,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        let now = self.db_now();
        let expires = self.db_after(lease);
        let token = new_token();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Under the write lock on both backends; on PostgreSQL the row
            // lock also keeps any other claimant off it.
            let skip_locked = match tx.backend() {
                Backend::Sqlite => "",
                Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            };
            let found: Option<(i64, String, Option<String>, Option<String>)> = tx
                .query_row(
                    &format!(
                        "SELECT id, processing, lease_owner, last_error FROM tickets
                         WHERE ({CLAIMABLE}) AND (CAST(?2 AS BIGINT) IS NULL OR id = ?2)
                         ORDER BY id LIMIT 1{skip_locked}"
                    ),
                    params![now, only],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((id, processing, old_owner, last_error)) = found else {
                return Ok(None);
            };
            // Held before and not handed back: that attempt did not finish.
            let last_error = match (processing.as_str(), last_error) {
                ("processing", Some(e)) => Some(e),
                ("processing", None) => Some(format!(
                    "the lease of {} expired",
                    old_owner.as_deref().unwrap_or("a worker")
                )),
                _ => None,
            };
            let claim = take(&tx, id, &token, owner, &expires, &now, last_error)?;
            self.event(&tx, id, EventKind::ProcessingStarted, "", &now)?;
            tx.commit()?;
            Ok(Some(claim))
        })
    }

    /// Extends the lease by `lease` from now; `false` when it is no longer
    /// held (expired and taken, or the ticket is done).
    pub fn renew(&self, claim: &Claim, lease: Duration) -> Result<bool, StoreError> {
        let expires = self.db_after(lease);
        self.write(|c| {
            Ok(c.execute(
                "UPDATE tickets SET lease_expires = ?3
                 WHERE id = ?1 AND lease_token = ?2 AND processing = 'processing'",
                params![claim.id, claim.token, expires],
            )? > 0)
        })
    }

    /// Gives the ticket up after a failed attempt (`why`): it can be
    /// claimed again at once, and the attempt counts; `false` when the
    /// lease was no longer held.
    pub fn abandon(&self, claim: &Claim, why: &str) -> Result<bool, StoreError> {
        self.write(|c| {
            Ok(c.execute(
                "UPDATE tickets SET lease_expires = NULL, lease_token = NULL, last_error = ?3
                 WHERE id = ?1 AND lease_token = ?2 AND processing = 'processing'",
                params![claim.id, claim.token, why],
            )? > 0)
        })
    }

    /// Hands the ticket back to the queue (a shutdown, or a result that
    /// could not be stored before it), not counting the attempt; `false`
    /// when the lease was no longer held.
    pub fn release(&self, claim: &Claim) -> Result<bool, StoreError> {
        self.write(|c| {
            Ok(c.execute(
                "UPDATE tickets SET processing = 'accepted', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
                     lease_token = NULL, lease_owner = NULL, lease_expires = NULL
                 WHERE id = ?1 AND lease_token = ?2 AND processing = 'processing'",
                params![claim.id, claim.token],
            )? > 0)
        })
    }
}

/// Takes ticket `id` under the lease and reads what the worker needs.
fn take(
    tx: &Transaction,
    id: i64,
    token: &str,
    owner: &str,
    expires: &str,
    now: &str,
    last_error: Option<String>,
) -> Result<Claim, StoreError> {
    let (attempt, subject, description): (i64, String, String) = tx.query_row(
        "UPDATE tickets SET processing = 'processing', pipeline_runs = pipeline_runs + 1,
             attempts = attempts + 1, lease_token = ?2, lease_owner = ?3, lease_expires = ?4,
             last_error = ?6,
             status = CASE status WHEN 'Open' THEN 'In Progress' ELSE status END, updated_at = ?5
         WHERE id = ?1 RETURNING attempts, subject, description",
        params![id, token, owner, expires, now, last_error],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(Claim {
        id,
        token: token.to_string(),
        input: TicketInput {
            subject,
            description,
        },
        attempt,
        last_error,
    })
}

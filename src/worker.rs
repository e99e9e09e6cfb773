//! The background worker: claims tickets from the store under a lease
//! (`store::queue`), runs the pipeline once for each, renews the lease
//! meanwhile, and stores the result under it. The store is the queue, so
//! nothing is lost when the process stops: on start, the leases of the
//! last run are expired and their tickets claimed again with the waiting
//! ones; a ticket whose attempts are used up is answered by the rules.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, broadcast};

use crate::shutdown::Shutdown;

use crate::pipeline::Pipeline;
use crate::store::queue::Claim;
use crate::store::{Store, StoreError};
use crate::ticket::{Analysis, EventKind, Status, TicketInput};

/// Something changed on a ticket; the wait API (and live pages) listen.
/// The feed follower (`crate::feed`) sends them, one per stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketUpdate {
    pub id: i64,
    pub kind: EventKind,
    /// The ticket's status when the event was read.
    pub status: Status,
    /// The event's id: server-sent events carry it.
    pub event: i64,
}

/// Handles the web layer holds to talk to the worker.
///
/// Updates go out twice: on `updates` (every ticket: dashboards, the wait
/// API) and on the ticket's own channel (its trackers). A tracker listens to
/// its ticket only, so thousands of open trackers are not all woken by every
/// new ticket.
#[derive(Clone)]
pub struct WorkerHandle {
    pub wake: Arc<Notify>,
    /// Something was written here: the feed follower reads at once instead
    /// of at its next poll.
    pub changed: Arc<Notify>,
    pub updates: broadcast::Sender<TicketUpdate>,
    per_ticket: Arc<std::sync::Mutex<HashMap<i64, broadcast::Sender<TicketUpdate>>>>,
}

/// A subscription to one ticket's updates; its channel goes away with the
/// last subscription.
pub struct TicketSubscription {
    pub rx: broadcast::Receiver<TicketUpdate>,
    id: i64,
    channels: Arc<std::sync::Mutex<HashMap<i64, broadcast::Sender<TicketUpdate>>>>,
}

impl Drop for TicketSubscription {
    fn drop(&mut self) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        // Ours is the last receiver: nobody listens to this ticket any more.
        if map.get(&self.id).is_some_and(|tx| tx.receiver_count() <= 1) {
            map.remove(&self.id);
        }
    }
}

impl WorkerHandle {
    pub fn new() -> Self {
        WorkerHandle {
            wake: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
            updates: broadcast::channel(1024).0,
            per_ticket: Arc::default(),
        }
    }

    /// A new ticket is in the store.
    pub fn notify_new_ticket(&self) {
        self.wake.notify_one();
        self.changed();
    }

    /// This process stored a change: its listeners hear of it through the
    /// feed, which reads it now.
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// Tells this process's listeners (the feed follower's job).
    pub fn publish(&self, update: TicketUpdate) {
        // No listener is fine: nobody is waiting.
        if let Some(tx) = self
            .per_ticket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&update.id)
        {
            let _ = tx.send(update.clone());
        }
        let _ = self.updates.send(update);
    }

    /// Listens to one ticket's updates.
    pub fn subscribe_ticket(&self, id: i64) -> TicketSubscription {
        let mut map = self.per_ticket.lock().unwrap_or_else(|p| p.into_inner());
        let rx = map
            .entry(id)
            .or_insert_with(|| broadcast::channel(64).0)
            .subscribe();
        TicketSubscription {
            rx,
            id,
            channels: self.per_ticket.clone(),
        }
    }

    /// Open per-ticket subscriptions (trackers), and the tickets they watch.
    pub fn ticket_subscribers(&self) -> (usize, usize) {
        let map = self.per_ticket.lock().unwrap_or_else(|p| p.into_inner());
        (map.values().map(|tx| tx.receiver_count()).sum(), map.len())
    }
}

impl Default for WorkerHandle {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the pipeline, turning a panic in any agent into a rules-only result
/// that records the failure, so a ticket always gets an answer.
pub fn run_guarded(pipeline: &Pipeline, input: &TicketInput) -> Analysis {
    match catch_unwind(AssertUnwindSafe(|| pipeline.run(input))) {
        Ok(a) => a,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(%why, "pipeline panicked; using the rules-only pipeline");
            let mut a = Pipeline::rules_only().run(input);
            a.agents.classifier.error = Some(format!("pipeline failed, rules used: {why}"));
            a
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Conflict(format!("store task failed: {e}"))))
}

/// First and longest wait between attempts to store a result.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(250);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Stores a result, retrying with backoff while the store fails (a full
/// disk, an I/O error): the answer is kept in memory meanwhile, and the
/// ticket is never left `processing`. On shutdown it goes back to the queue.
async fn store_result(
    store: &Arc<Store>,
    shutdown: &Shutdown,
    claim: &Arc<Claim>,
    analysis: Arc<Analysis>,
    ai_message: bool,
    failure: Option<Arc<str>>,
) -> Option<Status> {
    let id = claim.id;
    let mut wait = STORE_RETRY_FIRST;
    loop {
        let (s, a, c, f) = (
            store.clone(),
            analysis.clone(),
            claim.clone(),
            failure.clone(),
        );
        match blocking(move || s.complete_with(&c, &a, ai_message, f.as_deref())).await {
            Ok(status) => return Some(status),
            // Not ours any more (the lease expired and another worker took
            // the ticket, or a shutdown handed it back): nothing to store.
            Err(StoreError::Conflict(m)) => {
                tracing::warn!(ticket = id, reason = %m, "result not stored");
                return None;
            }
            Err(e) => {
                tracing::error!(ticket = id, error = %e, retry_in_ms = wait.as_millis() as u64,
                    "could not store the result; retrying");
                metrics::counter!("store_retries_total").increment(1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => {
                let (s, c) = (store.clone(), claim.clone());
                let requeued = blocking(move || s.release(&c)).await;
                tracing::warn!(ticket = id, requeued = requeued.is_ok(),
                    "shutting down before the result could be stored; the ticket stays queued");
                return None;
            }
        }
        wait = (wait * 2).min(STORE_RETRY_MAX);
    }
}

/// Renews `claim` every third of the lease until dropped (aborted).
fn keep_lease(ctx: &Ctx, claim: &Arc<Claim>) -> tokio::task::JoinHandle<()> {
    let (store, claim, lease) = (ctx.store.clone(), claim.clone(), ctx.config.lease);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            let (s, c) = (store.clone(), claim.clone());
            match blocking(move || s.renew(&c, lease)).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        ticket = claim.id,
                        "lease lost; the result will not be stored"
                    );
                    return;
                }
                Err(e) => {
                    tracing::error!(ticket = claim.id, error = %e, "could not renew the lease")
                }
            }
        }
    })
}

/// Runs the pipeline on a claimed ticket: the models, or past the allowed
/// attempts the rules alone, with the reason to keep.
async fn analyse(ctx: &Ctx, claim: &Claim) -> Option<(Analysis, Option<Arc<str>>)> {
    let input = claim.input.clone();
    if claim.exhausted(ctx.config.max_attempts) {
        let why = format!(
            "processing did not finish in {} attempts (last: {}); answered by the rules alone",
            claim.attempt - 1,
            claim.last_error.as_deref().unwrap_or("unknown")
        );
        tracing::error!(ticket = claim.id, reason = %why, "giving up on the models for this ticket");
        let mut a = Pipeline::rules_only().run(&input);
        a.agents.classifier.error = Some(why.clone());
        return Some((a, Some(why.into())));
    }
    let pipeline = ctx.pipeline.clone();
    match tokio::task::spawn_blocking(move || run_guarded(&pipeline, &input)).await {
        Ok(a) => Some((a, None)),
        Err(e) => {
            tracing::error!(ticket = claim.id, error = %e, "pipeline task failed; the ticket goes back to the queue");
            let (s, c, why) = (
                ctx.store.clone(),
                claim.clone(),
                format!("the pipeline task failed: {e}"),
            );
            // The attempt counts: a ticket that keeps failing is not
            // retried forever.
            let _ = blocking(move || s.abandon(&c, &why)).await;
            None
        }
    }
}

/// Processes one claimed ticket to the end.
async fn process(ctx: Ctx, claim: Claim) {
    let id = claim.id;
    let claim = Arc::new(claim);
    ctx.handle.changed();
    let renewal = keep_lease(&ctx, &claim);
    let Some((analysis, failure)) = analyse(&ctx, &claim).await else {
        renewal.abort();
        return;
    };
    let escalated = analysis.escalation.is_some();
    crate::observe::record_analysis(&analysis);
    let ai_message = crate::desk::customer_sees_ai_answer(&analysis.solution);
    let stored = store_result(
        &ctx.store,
        &ctx.shutdown,
        &claim,
        Arc::new(analysis),
        ai_message,
        failure,
    )
    .await;
    renewal.abort();
    let Some(status) = stored else {
        return;
    };
    tracing::info!(ticket = id, status = %status, escalated, "ticket processed");
    ctx.handle.changed();
}

/// What every ticket task needs.
#[derive(Clone)]
struct Ctx {
    store: Arc<Store>,
    pipeline: Arc<Pipeline>,
    handle: WorkerHandle,
    shutdown: Shutdown,
    config: WorkerConfig,
    /// This worker's name on its leases.
    owner: Arc<str>,
    /// When it last freed the leases of stopped nodes.
    reaped: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How the worker runs.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Tickets in the pipeline at once.
    pub concurrency: usize,
    /// How long a shutdown waits for running tickets.
    pub grace: Duration,
    /// How long a claim holds a ticket without renewal.
    pub lease: Duration,
    /// Claims after which the models are not run again.
    pub max_attempts: u32,
    /// This process owns the database alone (`--role all` on SQLite): every
    /// lease in it at start is a dead process's, expired at once.
    pub owns_database: bool,
}

/// Starts the worker. It stops claiming tickets at `shutdown`, waits up to
/// the grace period for running ones, puts unfinished ones back in the queue
/// and then ends.
pub fn spawn(
    store: Arc<Store>,
    pipeline: Arc<Pipeline>,
    handle: WorkerHandle,
    config: WorkerConfig,
    owner: Arc<str>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let ctx = Ctx {
        store,
        pipeline,
        handle,
        shutdown,
        config,
        owner,
        reaped: Arc::default(),
    };
    tokio::spawn(async move {
        let s = ctx.store.clone();
        // Alone on the file, every lease is a dead process's; on a shared
        // database, those of nodes that stopped saying they are alive.
        match blocking(move || match config.owns_database {
            true => s.expire_leases(),
            false => s.expire_orphaned_leases(crate::cluster::HEARTBEAT * 3),
        })
        .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                tickets = n,
                "tickets interrupted by the last shutdown are claimed again"
            ),
            Err(e) => tracing::error!(error = %e, "could not expire the last run's leases"),
        }
        let concurrency = config.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let running = Arc::new(std::sync::Mutex::new(HashMap::new()));
        run_queue(&ctx, &slots, &running).await;
        drain(&ctx, &slots, &running, concurrency, config.grace).await;
    })
}

/// Claims and starts tickets until shutdown, one per free slot.
async fn run_queue(ctx: &Ctx, slots: &Arc<Semaphore>, running: &Running) {
    while !ctx.shutdown.is_triggered() {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = ctx.shutdown.wait() => return,
        };
        let (s, owner, lease) = (ctx.store.clone(), ctx.owner.clone(), ctx.config.lease);
        match blocking(move || s.claim_next(&owner, lease)).await {
            Ok(Some(claim)) => {
                lock(running).insert(claim.id, claim.clone());
                let (ctx, running) = (ctx.clone(), running.clone());
                tokio::spawn(async move {
                    let id = claim.id;
                    process(ctx, claim).await;
                    lock(&running).remove(&id);
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                reap_orphans(ctx).await;
                // The timeout is a safety net (and picks up expired leases);
                // intake wakes us at once.
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_secs(5), ctx.handle.wake.notified()) => {}
                    _ = ctx.shutdown.wait() => {}
                }
            }
            Err(e) => {
                drop(permit);
                tracing::error!(error = %e, "could not claim from the queue; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = ctx.shutdown.wait() => {}
                }
            }
        }
    }
}

/// While it waits for work, a worker on a shared database frees the leases
/// of nodes that died (at most once per heartbeat).
async fn reap_orphans(ctx: &Ctx) {
    if ctx.config.owns_database {
        return;
    }
    {
        let mut last = ctx.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < crate::cluster::HEARTBEAT) {
            return;
        }
        *last = Some(std::time::Instant::now());
    }
    let s = ctx.store.clone();
    match blocking(move || s.expire_orphaned_leases(crate::cluster::HEARTBEAT * 3)).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(tickets = n, "freed the tickets of a node that stopped"),
        Err(e) => tracing::warn!(error = %e, "could not free the tickets of stopped nodes"),
    }
}

type Running = Arc<std::sync::Mutex<HashMap<i64, Claim>>>;

fn lock(r: &Running) -> std::sync::MutexGuard<'_, HashMap<i64, Claim>> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for running tickets up to `grace`; what is still running then goes
/// back to the queue for the next start.
async fn drain(
    ctx: &Ctx,
    slots: &Arc<Semaphore>,
    running: &Running,
    concurrency: usize,
    grace: Duration,
) {
    let n = lock(running).len();
    if n > 0 {
        tracing::info!(
            tickets = n,
            grace_secs = grace.as_secs(),
            "waiting for running tickets"
        );
    }
    let all = tokio::time::timeout(grace, slots.acquire_many(concurrency as u32)).await;
    if all.is_ok() {
        return;
    }
    let left: Vec<Claim> = lock(running).values().cloned().collect();
    for claim in left {
        let (s, id) = (ctx.store.clone(), claim.id);
        match blocking(move || s.release(&claim)).await {
            Ok(_) => tracing::warn!(
                ticket = id,
                "still running at the shutdown deadline; it stays queued"
            ),
            Err(e) => {
                tracing::error!(ticket = id, error = %e, "could not requeue; the next start will")
            }
        }
    }
}

/// Housekeeping once an hour (and at start): forget old idempotency keys and,
/// when configured, apply the retention period.
/// One node at a time does it (the `maintenance` turn; both jobs are
/// idempotent, so nodes that take turns across the hours do no harm).
pub fn spawn_maintenance(
    store: Arc<Store>,
    retention: Option<(u32, crate::config::RetentionMode)>,
    turn: crate::cluster::Turn,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let turn = Arc::new(turn);
    tokio::spawn(async move {
        loop {
            let (s, t) = (store.clone(), turn.clone());
            let done = blocking(move || {
                if !t.mine() {
                    return Ok((0, 0));
                }
                let keys =
                    s.prune_idempotency_keys(&crate::clock::ago(Duration::from_secs(24 * 3600)))?;
                let old = match retention {
                    Some((days, mode)) => s.apply_retention(
                        &crate::clock::ago(Duration::from_secs(days as u64 * 86_400)),
                        mode,
                    )?,
                    None => 0,
                };
                Ok((keys, old))
            })
            .await;
            match done {
                Ok((_, 0)) => {}
                Ok((_, n)) => tracing::info!(tickets = n, "retention applied"),
                Err(e) => tracing::error!(error = %e, "maintenance failed; retrying in an hour"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = shutdown.wait() => break,
            }
        }
        let _ = blocking(move || {
            turn.give_up();
            Ok(())
        })
        .await;
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::agents::EngineError;
    use crate::agents::classifier::{Classifier, ZeroShotModel};
    use crate::ticket::{Category, LabelScore};

    struct Panicking;
    impl ZeroShotModel for Panicking {
        fn name(&self) -> String {
            "panicking".into()
        }
        fn classify(&self, _: &str, _: &[String]) -> Result<Vec<LabelScore>, EngineError> {
            panic!("model exploded")
        }
    }

    #[test]
    fn a_panicking_agent_still_yields_a_rules_result_that_records_why() {
        let mut pipeline = Pipeline::rules_only();
        pipeline.classifier = Classifier::with_model(Arc::new(Panicking));
        let input = TicketInput {
            subject: "Refund".into(),
            description: "Please refund my order".into(),
        };
        let a = run_guarded(&pipeline, &input);
        assert_eq!(a.category, Category::Refund);
        assert_eq!(a.agents.classifier.engine, "rules");
        let err = a.agents.classifier.error.unwrap_or_default();
        assert!(err.contains("model exploded"), "{err}");
    }
}

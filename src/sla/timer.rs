//! The service-level timer. Each ticket's clocks are evaluated again after
//! every change to it (the worker's update stream) and every `check_every`
//! for all open tickets (and at once at start, so that a breach that
//! happened while the service was down is recorded with its real time).
//! An evaluation stores the clocks (the dashboard reads them) and records
//! what is new (`Store::record_sla`): at risk; missed, which escalates and
//! reassigns; still missed after `second_level_after`, which tells the
//! admins. Live pages hear of each recorded event.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast::error::RecvError;

use super::SlaConfig;
use super::report::{clocks_of, stored};
use crate::cluster::Turn;
use crate::shutdown::Shutdown;
use crate::store::sla::{SlaEvent, SlaRecord};
use crate::store::{Store, StoreError};
use crate::worker::{TicketUpdate, WorkerHandle};

/// Evaluates ticket `id` at `now`: stores its clocks and records what is
/// new; returns the events recorded.
pub fn evaluate(
    store: &Store,
    cfg: &SlaConfig,
    id: i64,
    now: Timestamp,
) -> Result<Vec<SlaEvent>, StoreError> {
    let rec = match store.get(id) {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let clocks = clocks_of(cfg, &rec, now).unwrap_or_default();
    store.save_sla_clocks(id, &stored(&clocks))?;
    let esc = rec
        .priority
        .and_then(|p| cfg.escalation.get(&p))
        .cloned()
        .unwrap_or_default();
    let mut recorded = Vec::new();
    for c in &clocks {
        let due = crate::clock::format_ts(c.due);
        let target = c.target.as_str();
        let mut wanted = Vec::new();
        match c.breached_at {
            Some(at) => {
                wanted.push((SlaEvent::Breached, at));
                let second = esc
                    .second_level_after
                    .and_then(|d| jiff::SignedDuration::try_from(d).ok())
                    .and_then(|d| at.checked_add(d).ok());
                if let Some(second) = second.filter(|s| c.met.is_none() && *s <= now) {
                    wanted.push((SlaEvent::SecondLevel, second));
                }
            }
            None if c.at_risk => wanted.push((SlaEvent::AtRisk, now)),
            None => {}
        }
        for (what, at) in wanted {
            let rec = SlaRecord {
                what,
                target,
                at: crate::clock::format_ts(at),
                due: due.clone(),
                group: &esc.group,
            };
            if store.record_sla(id, &rec)? {
                tracing::info!(ticket = id, target, event = ?what, "service level event");
                recorded.push(what);
            }
        }
    }
    Ok(recorded)
}

/// Evaluates every open ticket at `now`; calls `on_event` for each event
/// recorded. Returns how many were.
pub fn round(
    store: &Store,
    cfg: &SlaConfig,
    now: Timestamp,
    on_event: &dyn Fn(i64, SlaEvent),
) -> Result<usize, StoreError> {
    let mut recorded = 0;
    let priorities: Vec<_> = cfg.policies.keys().copied().collect();
    for id in store.sla_open_tickets(&priorities)? {
        for what in evaluate(store, cfg, id, now)? {
            on_event(id, what);
            recorded += 1;
        }
    }
    Ok(recorded)
}

/// What the timer does next.
enum Wake {
    Round,
    Ticket(i64),
    Stop,
}

/// Runs `round` every `check_every` and `evaluate` after each change until
/// shutdown.
/// Only the node with the `sla` turn evaluates (the records are idempotent,
/// so a turn that changes hands records nothing twice).
pub fn spawn(
    store: Arc<Store>,
    cfg: Arc<SlaConfig>,
    handle: WorkerHandle,
    turn: Turn,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let mut changes = handle.updates.subscribe();
    let turn = Arc::new(turn);
    tokio::spawn(async move {
        let mut next_round = tokio::time::Instant::now();
        loop {
            let wake = tokio::select! {
                _ = tokio::time::sleep_until(next_round) => Wake::Round,
                u = changes.recv() => match u {
                    // Our own events change nothing more.
                    Ok(u) if is_ours(&u) => continue,
                    Ok(u) => Wake::Ticket(u.id),
                    Err(RecvError::Lagged(_)) => Wake::Round,
                    Err(RecvError::Closed) => Wake::Stop,
                },
                _ = shutdown.wait() => Wake::Stop,
            };
            let (s, c, h, t) = (store.clone(), cfg.clone(), handle.clone(), turn.clone());
            let job = match wake {
                Wake::Stop => {
                    let _ = tokio::task::spawn_blocking(move || t.give_up()).await;
                    return;
                }
                Wake::Round => {
                    next_round = tokio::time::Instant::now() + cfg.check_every;
                    tokio::task::spawn_blocking(move || {
                        if !t.mine() {
                            return Ok(());
                        }
                        // Live pages hear of what is recorded through the feed.
                        round(&s, &c, Timestamp::now(), &|_, _| h.changed()).map(|_| ())
                    })
                }
                Wake::Ticket(id) => tokio::task::spawn_blocking(move || {
                    if t.mine() && !evaluate(&s, &c, id, Timestamp::now())?.is_empty() {
                        h.changed();
                    }
                    Ok(())
                }),
            };
            match job.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "service levels: the store failed"),
                Err(e) => tracing::error!(error = %e, "service-level timer panicked"),
            }
        }
    })
}

fn is_ours(u: &TicketUpdate) -> bool {
    use crate::ticket::EventKind;
    matches!(
        u.kind,
        EventKind::SlaAtRisk | EventKind::SlaBreached | EventKind::SlaSecondLevel
    )
}

/// The pause between rounds when `[sla_options] check_every` is not set.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(30);

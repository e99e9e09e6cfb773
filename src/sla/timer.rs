//! The service-level timer: every `check_every` (and at once at start, so
//! that a breach that happened while the service was down is recorded with
//! its real time), each open ticket's clocks are evaluated and what is new
//! is recorded (`Store::record_sla`): at risk, and missed, which escalates.

use std::sync::Arc;
use std::time::Duration;

use super::SlaConfig;
use super::report::clocks_of;
use crate::shutdown::Shutdown;
use crate::store::sla::SlaEvent;
use crate::store::{Store, StoreError};

/// One pass over the open tickets at `now`; returns what was newly recorded.
pub fn round(store: &Store, cfg: &SlaConfig, now: jiff::Timestamp) -> Result<usize, StoreError> {
    let mut recorded = 0;
    let priorities: Vec<_> = cfg.policies.keys().copied().collect();
    for id in store.sla_open_tickets(&priorities)? {
        let rec = match store.get(id) {
            Ok(r) => r,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        for c in clocks_of(cfg, &rec, now).unwrap_or_default() {
            let due = crate::clock::format_ts(c.due);
            let target = c.target.as_str();
            let new = match c.breached_at {
                Some(at) => store.record_sla(
                    id,
                    SlaEvent::Breached,
                    target,
                    &crate::clock::format_ts(at),
                    &due,
                )?,
                None if c.at_risk => store.record_sla(
                    id,
                    SlaEvent::AtRisk,
                    target,
                    &crate::clock::format_ts(now),
                    &due,
                )?,
                None => false,
            };
            if new {
                tracing::info!(
                    ticket = id,
                    target,
                    breached = c.breached_at.is_some(),
                    "service level event"
                );
                recorded += 1;
            }
        }
    }
    Ok(recorded)
}

/// Runs `round` every `every` until shutdown.
pub fn spawn(
    store: Arc<Store>,
    cfg: Arc<SlaConfig>,
    every: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (s, c) = (store.clone(), cfg.clone());
            match tokio::task::spawn_blocking(move || round(&s, &c, jiff::Timestamp::now())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "service levels: the store failed"),
                Err(e) => tracing::error!(error = %e, "service-level timer panicked"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait() => return,
            }
        }
    })
}

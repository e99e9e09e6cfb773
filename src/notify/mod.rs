//! Telling the outside world: webhooks (`webhook`) and e-mail (`mail`).
//!
//! Changes write their messages into an outbox in the store, in the same
//! transaction as the change (`store::outbox`); this task delivers them.
//! Because the outbox is the database, a restart, a crash or an endpoint
//! that is down for a day loses nothing: the task picks up where the rows
//! say it was, and a message keeps its `webhook-id` on every try.

pub mod mail;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;

use crate::cluster::Turn;
use crate::shutdown::Shutdown;
use crate::store::outbox::DueDelivery;
use crate::store::{Store, StoreError};
use webhook::{Delivery, Endpoint, Outcome};

/// The configured endpoints and how they are retried.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    pub endpoints: Vec<Endpoint>,
    pub delivery: Delivery,
}

/// How often the task looks for new messages and due retries.
const POLL: Duration = Duration::from_millis(500);

/// Starts delivering; with no endpoint configured, nothing is written to
/// the outbox and the task is not started.
/// Delivers webhook messages until shutdown, while this node has the
/// `deliveries` turn (one node at a time delivers, in order).
pub fn spawn(
    store: Arc<Store>,
    hooks: Webhooks,
    turn: Turn,
    shutdown: Shutdown,
) -> Option<tokio::task::JoinHandle<()>> {
    if hooks.endpoints.is_empty() {
        return None;
    }
    let hooks = Arc::new(hooks);
    let agent = webhook::agent(hooks.delivery.timeout);
    let turn = Arc::new(turn);
    Some(tokio::spawn(async move {
        while !shutdown.is_triggered() {
            let (s, h, a) = (store.clone(), hooks.clone(), agent.clone());
            let (sd, t) = (shutdown.clone(), turn.clone());
            let run = tokio::task::spawn_blocking(move || {
                if !t.mine() {
                    return Ok(0);
                }
                round(&s, &h, &a, &sd)
            })
            .await;
            match run {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "webhook delivery: the store failed"),
                Err(e) => tracing::error!(error = %e, "webhook delivery task panicked"),
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.wait() => break,
            }
        }
        let _ = tokio::task::spawn_blocking(move || turn.give_up()).await;
    }))
}

/// One round: fan new messages out, then try every delivery due now.
/// Returns how many tries were made.
pub fn round(
    store: &Store,
    hooks: &Webhooks,
    agent: &ureq::Agent,
    shutdown: &Shutdown,
) -> Result<usize, StoreError> {
    store.fan_out_webhooks(&hooks.endpoints)?;
    let mut tries = 0;
    loop {
        let due = store.due_webhooks(32)?;
        if due.is_empty() || shutdown.is_triggered() {
            return Ok(tries);
        }
        for d in due {
            if shutdown.is_triggered() {
                return Ok(tries);
            }
            attempt(store, hooks, agent, &d)?;
            tries += 1;
        }
    }
}

/// Tries one delivery and records what happened.
fn attempt(
    store: &Store,
    hooks: &Webhooks,
    agent: &ureq::Agent,
    d: &DueDelivery,
) -> Result<(), StoreError> {
    let Some(endpoint) = hooks.endpoints.iter().find(|e| e.url == d.endpoint) else {
        // The endpoint left the configuration: its messages fail (and can be
        // replayed should it come back).
        store.webhook_failed(
            d.id,
            &d.endpoint,
            None,
            "the endpoint is no longer configured",
            None,
            0,
        )?;
        return Ok(());
    };
    let outcome = webhook::send(agent, endpoint, &d.msg_id, &d.body);
    let (status, error, retry_after) = match outcome {
        Outcome::Delivered(code) => {
            tracing::debug!(msg_id = %d.msg_id, endpoint = %d.endpoint, code, "webhook delivered");
            return store.webhook_delivered(d.id, &d.endpoint, code);
        }
        Outcome::Refused(code, ra) => (Some(code), format!("HTTP {code}"), ra),
        Outcome::Unreachable(e) => (None, e, None),
    };
    let attempts = d.attempts + 1;
    let jitter: f64 = rand::rng().random();
    let retry_at = hooks
        .delivery
        .next_delay(attempts, jitter, retry_after)
        .map(crate::clock::after);
    let disabled = store.webhook_failed(
        d.id,
        &d.endpoint,
        status,
        &error,
        retry_at.clone(),
        hooks.delivery.disable_after,
    )?;
    match &retry_at {
        Some(at) => {
            tracing::warn!(msg_id = %d.msg_id, endpoint = %d.endpoint, %error, attempts, retry_at = %at, "webhook try failed")
        }
        None => {
            tracing::error!(msg_id = %d.msg_id, endpoint = %d.endpoint, %error, attempts, "webhook failed for good; replay it from /admin/webhooks")
        }
    }
    if disabled {
        tracing::error!(endpoint = %d.endpoint, "webhook endpoint disabled after repeated failures; enable it at /admin/webhooks");
    }
    Ok(())
}

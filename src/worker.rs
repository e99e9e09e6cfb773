//! The background worker: takes accepted tickets from the store, runs the
//! pipeline once for each, and stores the result. The store is the queue, so
//! nothing is lost when the process stops: on start, interrupted tickets are
//! requeued and every accepted ticket is processed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, broadcast};

use crate::pipeline::Pipeline;
use crate::store::{Store, StoreError};
use crate::ticket::{Analysis, EventKind, Status, TicketInput};

/// Something changed on a ticket; the wait API (and live pages) listen.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketUpdate {
    pub id: i64,
    pub kind: EventKind,
    pub status: Status,
}

/// Handles the web layer holds to talk to the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    pub wake: Arc<Notify>,
    pub updates: broadcast::Sender<TicketUpdate>,
}

impl WorkerHandle {
    pub fn new() -> Self {
        WorkerHandle {
            wake: Arc::new(Notify::new()),
            updates: broadcast::channel(1024).0,
        }
    }

    /// A new ticket is in the store.
    pub fn notify_new_ticket(&self) {
        self.wake.notify_one();
    }

    pub fn publish(&self, update: TicketUpdate) {
        // No listener is fine: nobody is waiting.
        let _ = self.updates.send(update);
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

/// Processes one claimed ticket to the end.
async fn process(
    store: Arc<Store>,
    pipeline: Arc<Pipeline>,
    handle: WorkerHandle,
    id: i64,
    input: TicketInput,
) {
    handle.publish(TicketUpdate {
        id,
        kind: EventKind::ProcessingStarted,
        status: Status::InProgress,
    });
    let analysis = match tokio::task::spawn_blocking(move || run_guarded(&pipeline, &input)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(ticket = id, error = %e, "pipeline task failed; ticket stays queued for restart");
            return;
        }
    };
    let escalated = analysis.escalation.is_some();
    crate::observe::record_analysis(&analysis);
    let s = store.clone();
    match blocking(move || s.complete(id, &analysis)).await {
        Ok(status) => {
            tracing::info!(ticket = id, status = %status, "ticket processed");
            if escalated {
                handle.publish(TicketUpdate {
                    id,
                    kind: EventKind::Escalated,
                    status,
                });
            }
            handle.publish(TicketUpdate {
                id,
                kind: EventKind::AiCompleted,
                status,
            });
        }
        Err(e) => {
            tracing::error!(ticket = id, error = %e, "could not store the result; ticket stays queued")
        }
    }
}

/// Starts the worker; `concurrency` tickets run through the pipeline at once.
pub fn spawn(
    store: Arc<Store>,
    pipeline: Arc<Pipeline>,
    handle: WorkerHandle,
    concurrency: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let s = store.clone();
        match blocking(move || s.requeue_interrupted()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                tickets = n,
                "requeued tickets interrupted by the last shutdown"
            ),
            Err(e) => tracing::error!(error = %e, "could not requeue interrupted tickets"),
        }
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        loop {
            let s = store.clone();
            let ids = match blocking(move || s.pending(64)).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(error = %e, "could not read the queue; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if ids.is_empty() {
                // The timeout is a safety net; intake wakes us at once.
                let _ = tokio::time::timeout(Duration::from_secs(5), handle.wake.notified()).await;
                continue;
            }
            for id in ids {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let s = store.clone();
                match blocking(move || s.claim(id)).await {
                    Ok(Some(input)) => {
                        let (store, pipeline, handle) =
                            (store.clone(), pipeline.clone(), handle.clone());
                        tokio::spawn(async move {
                            process(store, pipeline, handle, id, input).await;
                            drop(permit);
                        });
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(ticket = id, error = %e, "could not claim ticket"),
                }
            }
        }
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

//! Training the learned classifier from what the desk knows: the labelled
//! tickets shipped with the project, the knowledge base's articles and the
//! staff's category corrections (counted twice: they are this team's own
//! tickets). Retrained in the background when any of them changes.

use std::sync::Arc;
use std::time::Duration;

use crate::agents::classifier::LearnedHandle;
use crate::agents::learned::{self, Labelled, NaiveBayes};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};
use crate::ticket::Category;

/// How often the background task looks for new corrections.
const RETRAIN_EVERY: Duration = Duration::from_secs(60);

/// Staff corrections of the category: the latest per ticket.
pub fn corrections(store: &Store) -> Result<Vec<Labelled>, StoreError> {
    let mut latest: std::collections::BTreeMap<i64, Labelled> = Default::default();
    for o in store.overrides(100_000)? {
        if o.field != "category" {
            continue;
        }
        let Some(category) = o
            .staff_value
            .as_deref()
            .and_then(|v| v.parse::<Category>().ok())
        else {
            continue;
        };
        latest.insert(
            o.ticket_id,
            Labelled {
                text: format!("{}\n{}", o.subject, o.description),
                category,
            },
        );
    }
    Ok(latest.into_values().collect())
}

/// Everything the classifier learns from.
pub fn training_set(store: &Store) -> Result<Vec<Labelled>, StoreError> {
    let mut data = learned::parse_jsonl(learned::SHIPPED).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the shipped training tickets do not parse");
        Vec::new()
    });
    let articles: Vec<_> = store
        .kb_articles(false)?
        .into_iter()
        .map(|r| r.article)
        .collect();
    data.extend(learned::from_articles(&articles));
    for c in corrections(store)? {
        data.push(c.clone());
        data.push(c);
    }
    Ok(data)
}

/// Trains on the current set and puts the model in use; returns the set.
pub fn retrain(store: &Store, handle: &LearnedHandle) -> Result<Vec<Labelled>, StoreError> {
    let data = training_set(store)?;
    let model = NaiveBayes::train(&data).map(Arc::new);
    *handle.write().unwrap_or_else(|p| p.into_inner()) = model;
    Ok(data)
}

/// Retrains every minute when the training set changed since `trained_on`
/// (a correction, an article), until shutdown.
pub fn spawn_retrainer(
    store: Arc<Store>,
    handle: LearnedHandle,
    trained_on: Vec<Labelled>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = Some(trained_on);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RETRAIN_EVERY) => {}
                _ = shutdown.wait() => return,
            }
            let (s, h, prev) = (store.clone(), handle.clone(), last.take());
            let done = tokio::task::spawn_blocking(move || {
                let data = training_set(&s)?;
                if prev.as_ref() != Some(&data) {
                    let model = NaiveBayes::train(&data).map(Arc::new);
                    *h.write().unwrap_or_else(|p| p.into_inner()) = model;
                    tracing::info!(examples = data.len(), "classifier trained");
                }
                Ok::<_, StoreError>(data)
            })
            .await;
            match done {
                Ok(Ok(data)) => last = Some(data),
                Ok(Err(e)) => tracing::error!(error = %e, "classifier training failed; retrying"),
                Err(e) => tracing::error!(error = %e, "classifier training task failed"),
            }
        }
    })
}

//! The change feed: every change to a ticket is an `events` row committed
//! with it (`store::cluster`). One follower per process reads the new rows
//! by id and tells the process's listeners (live pages, the wait API, the
//! service-level timer), so a page served by one node sees what another
//! node did. A write in this process wakes the follower at once
//! (`WorkerHandle::changed`); on PostgreSQL, so does another process's
//! commit (`LISTEN`/`NOTIFY`, `Store::listen_for_changes`), and the poll is
//! the backstop for a notification lost while the listening session was
//! down (on SQLite the poll is how other processes' writes are seen).
//! New tickets also wake this process's worker, wherever they came in.

use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::ticket::EventKind;
use crate::worker::{TicketUpdate, WorkerHandle};

/// How often the feed is read when nothing here woke it: how late a change
/// made by another process can show.
pub const POLL: Duration = Duration::from_millis(250);

/// Rows read at once; a full batch is followed at once by the next.
const BATCH: usize = 500;

/// Follows the feed from its current end until shutdown.
pub fn spawn(
    store: Arc<Store>,
    handle: WorkerHandle,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let remote = store
        .listen_for_changes()
        .unwrap_or_else(|| Arc::new(tokio::sync::Notify::new()));
    tokio::spawn(async move {
        let mut last = loop {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.last_event_id()).await {
                Ok(Ok(id)) => break id,
                Ok(Err(e)) => tracing::warn!(error = %e, "the change feed cannot be read yet"),
                Err(e) => tracing::error!(error = %e, "the change feed task failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait() => return,
            }
        };
        loop {
            let read = read(&store, &handle, last).await;
            let full = read.is_some_and(|(_, n)| n == BATCH);
            if let Some((to, _)) = read {
                last = to;
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = handle.changed.notified() => {}
                _ = remote.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.wait() => return,
            }
        }
    })
}

/// Reads and announces the events after `last`; returns the new last id
/// and how many were read (`None` when the store failed: read again later).
async fn read(store: &Arc<Store>, handle: &WorkerHandle, last: i64) -> Option<(i64, usize)> {
    let s = store.clone();
    let events = match tokio::task::spawn_blocking(move || s.feed_after(last, BATCH)).await {
        Ok(Ok(events)) => events,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not read the change feed; retrying");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "the change feed task failed");
            return None;
        }
    };
    let n = events.len();
    let mut to = last;
    for e in events {
        to = e.id;
        if e.kind == EventKind::Submitted {
            handle.wake.notify_one();
        }
        handle.publish(TicketUpdate {
            id: e.ticket_id,
            kind: e.kind,
            status: e.status,
            event: e.id,
        });
    }
    Some((to, n))
}

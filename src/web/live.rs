//! Server-sent events: the tracker's stream for one ticket and the admin
//! dashboard's stream for all of them.
//!
//! Every event carries the full current state (the status endpoint's JSON for
//! a ticket), and every (re)connection starts with a snapshot, so a client that
//! reconnects — with or without `Last-Event-ID` — never misses an update. A
//! stream holds one broadcast receiver and nothing else; when the client goes
//! away axum drops the stream and the receiver with it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};

use super::SharedState;
use super::api::id_for_token;
use super::auth::AdminApi;
use super::error::ApiError;
use super::view::status_json;
use crate::worker::TicketUpdate;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn event(name: &str, seq: u64, data: &Value) -> Event {
    Event::default()
        .event(name)
        .id(seq.to_string())
        .data(data.to_string())
}

async fn ticket_state(state: &SharedState, id: i64) -> Option<Value> {
    state
        .db(move |s| s.status(id))
        .await
        .ok()
        .map(|st| status_json(&st))
}

struct TicketStream {
    state: SharedState,
    id: i64,
    rx: broadcast::Receiver<TicketUpdate>,
    seq: u64,
    first: bool,
}

/// `GET /api/t/{token}/events`: `status` events for one ticket.
pub async fn customer_events(
    State(state): State<SharedState>,
    Path(token): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = id_for_token(&state, token).await?;
    // Subscribe before the snapshot so nothing falls between the two.
    let rx = state.worker.updates.subscribe();
    let init = TicketStream {
        state,
        id,
        rx,
        seq: 0,
        first: true,
    };
    let s = stream::unfold(init, |mut st| async move {
        if st.first {
            st.first = false;
        } else {
            loop {
                match st.rx.recv().await {
                    Ok(u) if u.id == st.id => break,
                    Ok(_) => continue,
                    // Fell behind: the next snapshot covers what was missed.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return None,
                }
            }
        }
        let data = ticket_state(&st.state, st.id).await?;
        st.seq += 1;
        Some((Ok(event("status", st.seq, &data)), st))
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

struct AdminStream {
    state: SharedState,
    rx: broadcast::Receiver<TicketUpdate>,
    seq: u64,
    first: bool,
}

async fn counts(state: &SharedState) -> Value {
    match state.db(|s| s.status_counts()).await {
        Ok(c) => serde_json::to_value(c).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// `GET /api/admin/events` (admin): a `hello` event with the status counts,
/// then a `ticket` event `{id, kind, status, counts}` for every change.
pub async fn admin_events(
    _: AdminApi,
    State(state): State<SharedState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.worker.updates.subscribe();
    let init = AdminStream {
        state,
        rx,
        seq: 0,
        first: true,
    };
    let s = stream::unfold(init, |mut st| async move {
        let (name, mut data) = if st.first {
            st.first = false;
            ("hello", json!({}))
        } else {
            match st.rx.recv().await {
                Ok(u) => (
                    "ticket",
                    json!({"id": u.id, "kind": u.kind, "status": u.status}),
                ),
                Err(RecvError::Lagged(n)) => ("resync", json!({"missed": n})),
                Err(RecvError::Closed) => return None,
            }
        };
        data["counts"] = counts(&st.state).await;
        st.seq += 1;
        Some((Ok(event(name, st.seq, &data)), st))
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

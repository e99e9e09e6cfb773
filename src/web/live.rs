//! Server-sent events: the tracker's stream for one ticket and the admin
//! dashboard's stream for all of them.
//!
//! Every event carries the full current state (the status endpoint's JSON for
//! a ticket), and every (re)connection starts with a snapshot, so a client that
//! reconnects — with or without `Last-Event-ID` — never misses an update. A
//! stream holds one broadcast receiver and nothing else; when the client goes
//! away axum drops the stream and the receiver with it.
//!
//! Streams are capped, in total and per ticket ([`StreamSlots`]): past a cap
//! the request gets 503 with `Retry-After` (the pages fall back to polling).
//! On shutdown every stream sends a final `shutdown` event and ends, so open
//! trackers never hold the process up.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};

use super::SharedState;
use super::api::id_for_token;
use super::auth::AdminApi;
use super::error::ApiError;
use super::view::status_json;
use crate::desk::presence::PresenceUpdate;
use crate::guard::LogEvery;
use crate::shutdown::Shutdown;
use crate::worker::{TicketSubscription, TicketUpdate};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// An event named `name`; `id` is the change feed's event id it reflects
/// (a browser that reconnects, to this node or another, sends the last one
/// back as `Last-Event-ID`). Events that reflect no stored change (presence,
/// shutdown) carry none, so the browser keeps the last.
fn event(name: &str, id: Option<i64>, data: &Value) -> Event {
    let e = Event::default().event(name).data(data.to_string());
    match id {
        Some(id) => e.id(id.to_string()),
        None => e,
    }
}

async fn ticket_state(state: &SharedState, id: i64) -> Option<Value> {
    state
        .db(move |s| s.status(id))
        .await
        .ok()
        .map(|st| status_json(&st))
}

/// Counts open streams; a [`StreamSlot`] gives its place back when dropped.
pub struct StreamSlots {
    max_total: usize,
    max_per_ticket: usize,
    inner: Arc<Mutex<SlotCounts>>,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    per_ticket: HashMap<i64, usize>,
}

pub struct StreamSlot {
    ticket: Option<i64>,
    inner: Arc<Mutex<SlotCounts>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(id) = self.ticket
            && let Some(n) = c.per_ticket.get_mut(&id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ticket.remove(&id);
            }
        }
    }
}

impl StreamSlots {
    pub fn new(max_total: usize, max_per_ticket: usize) -> Self {
        StreamSlots {
            max_total,
            max_per_ticket,
            inner: Arc::default(),
        }
    }

    /// A place for one more stream (on `ticket`, for a tracker), or 503.
    pub fn acquire(&self, ticket: Option<i64>) -> Result<StreamSlot, ApiError> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let refuse = |reason: &'static str, message: &str| {
            static LOG: LogEvery = LogEvery::new();
            metrics::counter!("sse_streams_rejected_total", "reason" => reason).increment(1);
            if let Some(n) = LOG.due(Duration::from_secs(10)) {
                tracing::warn!(reason, refused = n, "live streams refused");
            }
            Err(ApiError::unavailable("too_many_streams", 10, message))
        };
        if c.total >= self.max_total {
            return refuse(
                "total",
                "too many live streams are open; the page updates by polling instead",
            );
        }
        if let Some(id) = ticket
            && c.per_ticket.get(&id).copied().unwrap_or(0) >= self.max_per_ticket
        {
            return refuse(
                "per_ticket",
                "too many live streams are open on this ticket; close other tabs or reload later",
            );
        }
        c.total += 1;
        if let Some(id) = ticket {
            *c.per_ticket.entry(id).or_insert(0) += 1;
        }
        Ok(StreamSlot {
            ticket,
            inner: self.inner.clone(),
        })
    }

    pub fn snapshot(&self) -> Value {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        json!({"open": c.total, "max": self.max_total, "max_per_ticket": self.max_per_ticket})
    }
}

/// What a stream does next.
enum Next<T> {
    Update(T),
    Lagged(u64),
    Shutdown,
    Closed,
}

/// The next broadcast update, or the shutdown.
async fn next_update(
    rx: &mut broadcast::Receiver<TicketUpdate>,
    shutdown: &Shutdown,
) -> Next<TicketUpdate> {
    tokio::select! {
        r = rx.recv() => match r {
            Ok(u) => Next::Update(u),
            Err(RecvError::Lagged(n)) => Next::Lagged(n),
            Err(RecvError::Closed) => Next::Closed,
        },
        _ = shutdown.wait() => Next::Shutdown,
    }
}

fn shutdown_event() -> Event {
    event(
        "shutdown",
        None,
        &json!({"message": "the service is restarting; this page reconnects by itself"}),
    )
}

struct TicketStream {
    state: SharedState,
    id: i64,
    sub: TicketSubscription,
    /// The feed id of the last change sent.
    seen: i64,
    first: bool,
    done: bool,
    _slot: StreamSlot,
}

/// `GET /api/t/{token}/events`: `status` events for one ticket.
pub async fn customer_events(
    State(state): State<SharedState>,
    Path(token): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = id_for_token(&state, token).await?;
    let slot = state.streams.acquire(Some(id))?;
    // Subscribe before the snapshot so nothing falls between the two.
    let sub = state.worker.subscribe_ticket(id);
    let init = TicketStream {
        state,
        id,
        sub,
        seen: 0,
        first: true,
        done: false,
        _slot: slot,
    };
    let s = stream::unfold(init, |mut st| async move {
        if st.done {
            return None;
        }
        if st.first {
            // The snapshot reflects every change so far.
            st.first = false;
            let id = st.id;
            st.seen = st.state.db(move |s| s.last_event_of(id)).await.ok()?;
        } else {
            loop {
                match next_update(&mut st.sub.rx, &st.state.shutdown).await {
                    // Already in what was sent (the snapshot read it).
                    Next::Update(u) if u.id == st.id && u.event <= st.seen => continue,
                    Next::Update(u) if u.id == st.id => {
                        st.seen = u.event;
                        // One snapshot covers the changes already queued.
                        while let Ok(u) = st.sub.rx.try_recv() {
                            st.seen = st.seen.max(u.event);
                        }
                        break;
                    }
                    Next::Update(_) => continue,
                    // Fell behind: the next snapshot covers what was missed.
                    Next::Lagged(_) => break,
                    Next::Shutdown => {
                        st.done = true;
                        return Some((Ok(shutdown_event()), st));
                    }
                    Next::Closed => return None,
                }
            }
        }
        let data = ticket_state(&st.state, st.id).await?;
        Some((Ok(event("status", Some(st.seen), &data)), st))
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

struct AdminStream {
    state: SharedState,
    rx: broadcast::Receiver<TicketUpdate>,
    presence: broadcast::Receiver<PresenceUpdate>,
    /// Changes the client missed while it was away (`Last-Event-ID`), sent
    /// before the live ones.
    replay: std::collections::VecDeque<TicketUpdate>,
    /// The feed id of the last change sent.
    seen: i64,
    first: bool,
    done: bool,
    _slot: StreamSlot,
}

async fn counts(state: &SharedState) -> Value {
    match state.db(|s| s.status_counts()).await {
        Ok(c) => serde_json::to_value(c).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// The most changes a reconnecting dashboard is sent again; past it, it
/// gets `resync` (reload everything).
const MAX_REPLAY: usize = 500;

/// The `Last-Event-ID` a reconnecting browser sent, when it is a feed id.
fn last_event_id(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|id| *id >= 0)
}

/// What a dashboard that connects sees first: the changes after
/// `Last-Event-ID` (or `None` when there are too many to send: resync), and
/// where the feed ends now.
async fn missed(
    state: &SharedState,
    after: Option<i64>,
) -> Result<(Option<Vec<TicketUpdate>>, i64), ApiError> {
    let now = state.db(|s| s.last_event_id()).await?;
    let Some(after) = after.filter(|a| *a < now) else {
        return Ok((Some(Vec::new()), now));
    };
    let events = state
        .db(move |s| s.feed_after(after, MAX_REPLAY + 1))
        .await?;
    if events.len() > MAX_REPLAY {
        return Ok((None, now));
    }
    let updates = events
        .into_iter()
        .map(|e| TicketUpdate {
            id: e.ticket_id,
            kind: e.kind,
            status: e.status,
            event: e.id,
        })
        .collect();
    Ok((Some(updates), now))
}

/// `GET /api/admin/events` (admin): a `hello` event with the status counts,
/// then a `ticket` event `{id, kind, status, counts}` for every change, with
/// the change's feed id as the event id. A browser that reconnects with
/// `Last-Event-ID` (to this node or another) is first sent the changes it
/// missed, or `resync` when they are too many.
pub async fn admin_events(
    _: AdminApi,
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let slot = state.streams.acquire(None)?;
    // Subscribe before reading the feed's end, so nothing falls between.
    let rx = state.worker.updates.subscribe();
    let presence = state.presence.updates.subscribe();
    let (replay, seen) = missed(&state, last_event_id(&headers)).await?;
    let resync = replay.is_none();
    let init = AdminStream {
        state,
        rx,
        presence,
        replay: replay.unwrap_or_default().into(),
        seen,
        first: true,
        done: false,
        _slot: slot,
    };
    let s = stream::unfold(init, move |mut st| async move {
        if st.done {
            return None;
        }
        let (name, id, mut data) = if st.first {
            st.first = false;
            let name = if resync { "resync" } else { "hello" };
            (name, Some(st.seen), json!({}))
        } else if let Some(u) = st.replay.pop_front() {
            ("ticket", Some(u.event), ticket_json(&u))
        } else {
            match next_admin_update(&mut st).await {
                AdminNext::Send(name, id, data) => (name, id, data),
                AdminNext::Presence(data) => {
                    return Some((Ok(event("presence", None, &data)), st));
                }
                AdminNext::Stop(Some(e)) => {
                    st.done = true;
                    return Some((Ok(e), st));
                }
                AdminNext::Stop(None) => return None,
            }
        };
        data["counts"] = counts(&st.state).await;
        Some((Ok(event(name, id, &data)), st))
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn ticket_json(u: &TicketUpdate) -> Value {
    json!({"id": u.id, "kind": u.kind, "status": u.status})
}

enum AdminNext {
    Send(&'static str, Option<i64>, Value),
    Presence(Value),
    Stop(Option<Event>),
}

/// The dashboard stream's next live event.
async fn next_admin_update(st: &mut AdminStream) -> AdminNext {
    loop {
        // Who has which ticket open: sent as it is, without counts.
        let update = tokio::select! {
            p = st.presence.recv() => match p {
                Ok(p) => return AdminNext::Presence(json!(p)),
                Err(_) => Next::Lagged(0),
            },
            u = next_update(&mut st.rx, &st.state.shutdown) => u,
        };
        return match update {
            // Sent already (replayed, or before the stream's start).
            Next::Update(u) if u.event <= st.seen => continue,
            Next::Update(u) => {
                st.seen = u.event;
                AdminNext::Send("ticket", Some(u.event), ticket_json(&u))
            }
            Next::Lagged(n) => AdminNext::Send("resync", None, json!({"missed": n})),
            Next::Shutdown => AdminNext::Stop(Some(shutdown_event())),
            Next::Closed => AdminNext::Stop(None),
        };
    }
}

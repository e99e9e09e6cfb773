//! Who has a ticket open, and who is typing a reply: the collision hint that
//! keeps two agents from answering the same customer at once. In memory
//! only (it is worth nothing after a restart); an entry lasts
//! [`PRESENCE_TTL`] after the page's last heartbeat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

/// How long a viewer counts after their page's last heartbeat.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Viewer {
    pub name: String,
    pub typing: bool,
}

/// The viewers of one ticket, sent to staff pages when they change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceUpdate {
    pub id: i64,
    pub viewers: Vec<Viewer>,
}

/// A ticket's viewers: name → (last heartbeat, typing).
type Viewers = HashMap<String, (Instant, bool)>;

pub struct Presence {
    seen: Mutex<HashMap<i64, Viewers>>,
    pub updates: broadcast::Sender<PresenceUpdate>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            seen: Mutex::new(HashMap::new()),
            updates: broadcast::channel(256).0,
        }
    }
}

impl Presence {
    /// Records that `name` has ticket `id` open (and whether they are
    /// typing); returns the ticket's viewers, and tells staff pages when the
    /// list changed.
    pub fn heartbeat(&self, id: i64, name: &str, typing: bool) -> Vec<Viewer> {
        self.heartbeat_at(id, name, typing, Instant::now())
    }

    fn heartbeat_at(&self, id: i64, name: &str, typing: bool, now: Instant) -> Vec<Viewer> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, v| {
            v.retain(|_, (at, _)| now.duration_since(*at) < PRESENCE_TTL);
            !v.is_empty()
        });
        let before = viewers(seen.get(&id));
        seen.entry(id)
            .or_default()
            .insert(name.to_string(), (now, typing));
        let after = viewers(seen.get(&id));
        if after != before {
            let _ = self.updates.send(PresenceUpdate {
                id,
                viewers: after.clone(),
            });
        }
        after
    }

    /// `name` left the ticket page.
    pub fn leave(&self, id: i64, name: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = seen.get_mut(&id)
            && v.remove(name).is_some()
        {
            let _ = self.updates.send(PresenceUpdate {
                id,
                viewers: viewers(Some(v)),
            });
        }
    }
}

fn viewers(v: Option<&Viewers>) -> Vec<Viewer> {
    let mut out: Vec<Viewer> = v
        .into_iter()
        .flatten()
        .map(|(name, (_, typing))| Viewer {
            name: name.clone(),
            typing: *typing,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_come_and_go() {
        let p = Presence::default();
        let mut rx = p.updates.subscribe();
        let t0 = Instant::now();
        assert_eq!(p.heartbeat_at(1, "ann", false, t0).len(), 1);
        let both = p.heartbeat_at(1, "bob", true, t0);
        assert_eq!(
            both,
            vec![
                Viewer {
                    name: "ann".into(),
                    typing: false
                },
                Viewer {
                    name: "bob".into(),
                    typing: true
                }
            ]
        );
        assert_eq!(rx.try_recv().map(|u| u.viewers.len()).ok(), Some(1));
        assert_eq!(rx.try_recv().map(|u| u.viewers.len()).ok(), Some(2));
        // The same heartbeat again changes nothing and sends nothing.
        p.heartbeat_at(1, "bob", true, t0);
        assert!(rx.try_recv().is_err());
        // Past the TTL ann is gone.
        let later = p.heartbeat_at(1, "bob", false, t0 + PRESENCE_TTL + Duration::from_secs(1));
        assert_eq!(
            later,
            vec![Viewer {
                name: "bob".into(),
                typing: false
            }]
        );
        p.leave(1, "bob");
        assert_eq!(rx.try_recv().ok().map(|u| u.viewers.len()), Some(1));
        assert_eq!(rx.try_recv().ok().map(|u| u.viewers.len()), Some(0));
    }
}

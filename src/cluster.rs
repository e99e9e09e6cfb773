//! Several processes on one database: what each one does (its role), its
//! name, its heartbeat, and the turns of the jobs that one node at a time
//! must do.
//!
//! Tickets are shared out by the queue's per-ticket leases
//! (`store::queue`). The background jobs (webhook and mail deliveries, the
//! service-level timer, maintenance) are not per ticket: two nodes running
//! one would send a message twice. Each is a named lease in the database
//! ([`Turn`]): the node that holds it does the job and renews it as it
//! goes; when that node dies, its lease runs out and another worker node
//! takes the job over.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use crate::store::Store;

/// What a process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything in one process: the web service, the models, the queue
    /// and the background jobs (the only role that owns a SQLite file
    /// alone).
    All,
    /// The web service only: loads no models; tickets wait for a worker.
    Web,
    /// Loads the models, processes tickets and runs the background jobs;
    /// serves `/health` and `/metrics` only.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Web => "web",
            Role::Worker => "worker",
        }
    }

    /// Whether it serves the web pages and the API.
    pub fn serves_web(self) -> bool {
        self != Role::Worker
    }

    /// Whether it loads models and processes tickets (and the jobs).
    pub fn works(self) -> bool {
        self != Role::Web
    }
}

/// How often a node says it is alive; one not seen for three of these
/// counts as gone.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// This process on the database.
#[derive(Debug, Clone)]
pub struct Node {
    /// host:pid:random, also the owner of its leases.
    pub name: Arc<str>,
    pub role: Role,
    pub started_at: String,
}

impl Node {
    pub fn new(role: Role) -> Self {
        Node {
            name: node_name().into(),
            role,
            started_at: crate::clock::now(),
        }
    }
}

/// Host, process id and a random part: unique across restarts and hosts.
fn node_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let salt: u32 = rand::random();
    format!("{host}:{}:{salt:08x}", std::process::id())
}

/// Records the node as alive (with what it runs) every [`HEARTBEAT`], and
/// as gone at shutdown.
pub fn spawn_heartbeat(
    store: Arc<Store>,
    node: Node,
    engines: serde_json::Value,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let engines = Arc::new(engines);
    tokio::spawn(async move {
        loop {
            let (s, n, e) = (store.clone(), node.clone(), engines.clone());
            let beat = tokio::task::spawn_blocking(move || {
                s.node_seen(&n.name, n.role.as_str(), &n.started_at, &e)?;
                s.forget_nodes(HEARTBEAT * 60)
            })
            .await;
            if let Ok(Err(e)) = beat {
                tracing::warn!(error = %e, "could not record this node's heartbeat");
            }
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT) => {}
                _ = shutdown.wait() => break,
            }
        }
        let _ = tokio::task::spawn_blocking(move || store.node_gone(&node.name)).await;
    })
}

/// One node at a time does job `name`: [`Turn::mine`] says whether this
/// one does it now (taking the turn when it is free, renewing it when held).
pub struct Turn {
    store: Arc<Store>,
    name: &'static str,
    owner: Arc<str>,
    ttl: Duration,
    /// When this node last renewed the turn, while it holds it.
    renewed: Mutex<Option<Instant>>,
}

impl Turn {
    /// How long a turn lasts without renewal: the time a job stands still
    /// after its node died.
    pub const TTL: Duration = Duration::from_secs(30);

    pub fn new(store: Arc<Store>, name: &'static str, node: &Node) -> Self {
        Turn {
            store,
            name,
            owner: node.name.clone(),
            ttl: Self::TTL,
            renewed: Mutex::new(None),
        }
    }

    /// Whether this node does the job now. Blocking (it may write): call it
    /// from the job's blocking part. A renewal is written at most every
    /// third of the lease; a store error counts as not ours.
    pub fn mine(&self) -> bool {
        let mut renewed = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        if renewed.is_some_and(|at| at.elapsed() < self.ttl / 3) {
            return true;
        }
        let held = match self.store.hold_lease(self.name, &self.owner, self.ttl) {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(job = self.name, error = %e, "could not take or renew a job's turn");
                false
            }
        };
        match (held, renewed.is_some()) {
            (true, false) => tracing::info!(job = self.name, "this node does the job now"),
            (false, true) => tracing::warn!(job = self.name, "another node took the job over"),
            _ => {}
        }
        *renewed = held.then(Instant::now);
        held
    }

    /// Gives the turn up (at shutdown), so another node takes it at once.
    pub fn give_up(&self) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        if renewed.take().is_some()
            && let Err(e) = self.store.release_lease(self.name, &self.owner)
        {
            tracing::warn!(job = self.name, error = %e, "could not give a job's turn up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_at_a_time_holds_a_turn_and_another_takes_it_when_given_up() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("t.db")).expect("open"));
        let (a, b) = (Node::new(Role::Worker), Node::new(Role::Worker));
        let ta = Turn::new(store.clone(), "deliveries", &a);
        let tb = Turn::new(store.clone(), "deliveries", &b);
        assert!(ta.mine());
        assert!(!tb.mine(), "held by a");
        assert!(ta.mine(), "a keeps it");
        ta.give_up();
        assert!(tb.mine(), "free again");
        assert!(!ta.mine());
        assert_eq!(
            store.lease_holder("deliveries").expect("holder").as_deref(),
            Some(&*b.name)
        );
    }

    #[test]
    fn an_expired_turn_goes_to_the_next_node() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        let short = Duration::from_millis(50);
        assert!(store.hold_lease("timer", "a", short).expect("a"));
        assert!(!store.hold_lease("timer", "b", short).expect("b"));
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            store
                .hold_lease("timer", "b", short)
                .expect("b after expiry")
        );
        assert!(!store.hold_lease("timer", "a", short).expect("a lost it"));
    }
}

//! Protection against abuse and overload, kept out of the handlers.
//!
//! Why a module of its own: every limit here is a promise to the operator
//! ("one attacker cannot take the service down or lock the team out"), and
//! each needs the same few building blocks — who the client really is
//! ([`client`]), keyed token buckets ([`rate`]) and the login throttle with
//! its bounded password-hashing cost ([`login`]). The web layer only asks
//! "may this go ahead?" and turns a refusal into 429 + `Retry-After`.

pub mod client;
pub mod login;
pub mod rate;

pub use client::{Cidr, ClientIp, TrustedProxies};
pub use login::{LoginGuard, LoginLimits, Refusal};
pub use rate::KeyedLimiter;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Logs a repeated warning at most once per interval, with how many
/// occurrences were folded into it: under attack, refusals must be visible
/// in the log without flooding it.
pub struct LogEvery {
    /// Milliseconds since the process epoch of the last log, plus one.
    last: AtomicU64,
    folded: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogEvery {
    pub const fn new() -> Self {
        LogEvery {
            last: AtomicU64::new(0),
            folded: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when it is time to log (n occurrences since the last log).
    pub fn due(&self, every: Duration) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let n = self.folded.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let every = every.as_millis() as u64;
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.folded.store(0, Ordering::Relaxed);
            Some(n)
        } else {
            None
        }
    }
}

impl Default for LogEvery {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_interval_with_a_count() {
        let l = LogEvery::new();
        assert_eq!(l.due(Duration::from_secs(60)), Some(1));
        for _ in 0..5 {
            assert_eq!(l.due(Duration::from_secs(60)), None);
        }
        let quick = LogEvery::new();
        assert_eq!(quick.due(Duration::ZERO), Some(1));
        assert_eq!(quick.due(Duration::ZERO).map(|n| n >= 1), Some(true));
    }
}

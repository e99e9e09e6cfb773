//! The login throttle and the cost bound on password checks.
//!
//! An argon2 check holds ~19 MiB for tens of milliseconds, so unbounded
//! parallel guesses are a memory attack, not only a guessing one. Two rules:
//!
//! * **Cost**: at most `concurrency` checks run at once (a semaphore); a
//!   request that cannot get a slot within [`PERMIT_WAIT`] gets 503.
//! * **Guessing**: an attempt is recorded as a failure *before* the check
//!   runs (and forgiven on success), so simultaneous attempts cannot slip past
//!   the count. Failures are counted per address and per account; past a few
//!   free ones each further attempt waits twice as long as the last (up to 15
//!   minutes). All addresses together get `guesses_per_minute`. An address
//!   with no recent failures is exempt from the account's delay and has a
//!   small reserve of its own under the global ceiling, so an attacker
//!   elsewhere cannot lock the real owner out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request waits for a password-check slot before 503.
pub const PERMIT_WAIT: Duration = Duration::from_secs(3);
/// Failures are forgotten this long after the last one.
const WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_DELAY_SECS: u64 = 15 * 60;
const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Password checks that may run at once.
    pub concurrency: usize,
    /// Guesses admitted per minute over all addresses.
    pub guesses_per_minute: u32,
    /// Failures from one address before delays start.
    pub free_per_address: u32,
    /// Failures on one account before its delays start.
    pub free_per_account: u32,
}

impl LoginLimits {
    pub fn new(concurrency: usize, guesses_per_minute: u32) -> Self {
        LoginLimits {
            concurrency: concurrency.max(1),
            guesses_per_minute: guesses_per_minute.max(1),
            free_per_address: 3,
            free_per_account: 10,
        }
    }

    /// Attempts a minute from addresses with no recent failures once the
    /// global ceiling is reached.
    fn clean_reserve(&self) -> usize {
        (self.guesses_per_minute as usize / 6).max(5)
    }
}

/// Why an attempt may not go ahead now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures: 429.
    Throttled { retry_after: u64 },
    /// Every password-check slot is busy: 503.
    Busy { retry_after: u64 },
}

impl Refusal {
    pub fn retry_after(&self) -> u64 {
        match self {
            Refusal::Throttled { retry_after } | Refusal::Busy { retry_after } => *retry_after,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Default)]
struct Ledger {
    by_addr: HashMap<String, Failures>,
    by_account: HashMap<String, Failures>,
    /// Admitted guesses in the last minute.
    recent: VecDeque<Instant>,
    /// Of those, the ones admitted from the clean reserve, with the network
    /// (/24 or /64) each came from: one a minute per network, so an attacker
    /// rotating addresses in one network cannot use up the owner's reserve.
    reserve: VecDeque<(Instant, String)>,
}

/// The network an address belongs to: its /24 (IPv4) or /64 (IPv6).
fn network(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Err(_) => addr.to_string(),
    }
}

/// Delay after `count` failures with `free` of them free.
fn delay(count: u32, free: u32) -> Option<Duration> {
    (count >= free).then(|| {
        let exp = (count - free).min(20);
        Duration::from_secs((1u64 << exp).min(MAX_DELAY_SECS))
    })
}

fn wait_until(f: Option<&Failures>, free: u32, now: Instant) -> Option<u64> {
    let f = f?;
    let until = f.last + delay(f.count, free)?;
    (until > now).then(|| until.duration_since(now).as_secs().max(1))
}

impl Ledger {
    fn prune(&mut self, now: Instant) {
        let minute = Duration::from_secs(60);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= minute)
        {
            self.recent.pop_front();
        }
        while self
            .reserve
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= minute)
        {
            self.reserve.pop_front();
        }
        for map in [&mut self.by_addr, &mut self.by_account] {
            if map.len() > MAX_TRACKED / 2 {
                map.retain(|_, f| now.duration_since(f.last) < WINDOW);
            }
            if map.len() > MAX_TRACKED {
                // Unreachable under the global ceiling within the window, but
                // never grow without bound.
                map.clear();
            }
        }
    }

    fn failures(map: &HashMap<String, Failures>, key: &str, now: Instant) -> Option<Failures> {
        map.get(key)
            .filter(|f| now.duration_since(f.last) < WINDOW && f.count > 0)
            .copied()
    }

    fn bump(map: &mut HashMap<String, Failures>, key: &str, now: Instant, by: i32) {
        let f = map.entry(key.to_string()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(f.last) >= WINDOW {
            f.count = 0;
        }
        f.count = f.count.saturating_add_signed(by);
        if by > 0 {
            f.last = now;
        }
    }
}

/// A guess admitted by [`LoginGuard::begin`], counted as a failure until
/// [`LoginGuard::succeeded`] or [`LoginGuard::cancel`] says otherwise.
#[derive(Debug)]
pub struct Attempt {
    addr: String,
    account: String,
    at: Instant,
    from_reserve: bool,
}

type Check = Box<dyn FnOnce() -> bool + Send>;

pub struct LoginGuard {
    limits: LoginLimits,
    slots: Arc<Semaphore>,
    ledger: Mutex<Ledger>,
    /// Jobs for the password-check threads (each reply on its oneshot).
    checks: flume::Sender<(Check, tokio::sync::oneshot::Sender<bool>)>,
}

/// `n` long-lived threads for password checks. Dedicated threads rather than
/// the blocking pool: each malloc arena keeps the ~19 MiB an argon2 check
/// used, so checks spread over many pool threads would hold that much per
/// thread long after they end; `n` threads hold at most `n` times it.
fn spawn_checkers(n: usize) -> flume::Sender<(Check, tokio::sync::oneshot::Sender<bool>)> {
    let (tx, rx) = flume::unbounded::<(Check, tokio::sync::oneshot::Sender<bool>)>();
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("password-check-{i}"))
            .spawn(move || {
                // Ends when the guard (the sender) is dropped.
                while let Ok((check, reply)) = rx.recv() {
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check))
                        .unwrap_or(false);
                    let _ = reply.send(ok);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password-check thread");
        }
    }
    tx
}

impl LoginGuard {
    pub fn new(limits: LoginLimits) -> Self {
        LoginGuard {
            limits,
            slots: Arc::new(Semaphore::new(limits.concurrency)),
            ledger: Mutex::new(Ledger::default()),
            checks: spawn_checkers(limits.concurrency),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `addr` may try `account` now; `Ok(true)` when the address has
    /// no recent failures. Records nothing.
    pub fn check(&self, addr: &str, account: &str) -> Result<bool, Refusal> {
        let now = Instant::now();
        let mut l = self.ledger();
        l.prune(now);
        self.check_locked(&l, addr, account, now)
            .map(|(clean, _)| clean)
    }

    /// (clean, admitted from the reserve)
    fn check_locked(
        &self,
        l: &Ledger,
        addr: &str,
        account: &str,
        now: Instant,
    ) -> Result<(bool, bool), Refusal> {
        let throttled = |retry_after| Err(Refusal::Throttled { retry_after });
        let by_addr = Ledger::failures(&l.by_addr, addr, now);
        if let Some(s) = wait_until(by_addr.as_ref(), self.limits.free_per_address, now) {
            return throttled(s);
        }
        let clean = by_addr.is_none();
        let by_account = Ledger::failures(&l.by_account, account, now);
        if !clean
            && let Some(s) = wait_until(by_account.as_ref(), self.limits.free_per_account, now)
        {
            return throttled(s);
        }
        if l.recent.len() < self.limits.guesses_per_minute as usize {
            return Ok((clean, false));
        }
        let net = network(addr);
        if clean
            && l.reserve.len() < self.limits.clean_reserve()
            && !l.reserve.iter().any(|(_, n)| *n == net)
        {
            return Ok((clean, true));
        }
        let oldest = l
            .reserve
            .front()
            .map(|(t, _)| *t)
            .or(l.recent.front().copied())
            .unwrap_or(now);
        throttled(
            60u64
                .saturating_sub(now.duration_since(oldest).as_secs())
                .max(1),
        )
    }

    /// Admits one guess and counts it as a failure until told otherwise.
    pub fn begin(&self, addr: &str, account: &str) -> Result<Attempt, Refusal> {
        let now = Instant::now();
        let mut l = self.ledger();
        l.prune(now);
        let (_, from_reserve) = self.check_locked(&l, addr, account, now)?;
        Ledger::bump(&mut l.by_addr, addr, now, 1);
        Ledger::bump(&mut l.by_account, account, now, 1);
        l.recent.push_back(now);
        if from_reserve {
            l.reserve.push_back((now, network(addr)));
        }
        Ok(Attempt {
            addr: addr.to_string(),
            account: account.to_string(),
            at: now,
            from_reserve,
        })
    }

    fn undo(&self, a: &Attempt, forgive_addr: bool) {
        let mut l = self.ledger();
        let now = Instant::now();
        if forgive_addr {
            l.by_addr.remove(&a.addr);
        } else {
            Ledger::bump(&mut l.by_addr, &a.addr, now, -1);
        }
        Ledger::bump(&mut l.by_account, &a.account, now, -1);
        if let Some(i) = l.recent.iter().position(|t| *t == a.at) {
            l.recent.remove(i);
        }
        if a.from_reserve
            && let Some(i) = l.reserve.iter().position(|(t, _)| *t == a.at)
        {
            l.reserve.remove(i);
        }
    }

    /// The password was right: the address's failures are forgiven.
    pub fn succeeded(&self, a: Attempt) {
        self.undo(&a, true);
    }

    /// The check never ran (no slot): the attempt does not count.
    pub fn cancel(&self, a: Attempt) {
        self.undo(&a, false);
    }

    /// A wrong password: the failure stays counted.
    pub fn failed(&self, a: Attempt) {
        drop(a);
    }

    /// A failure of a cheap check (a wrong bearer token), recorded afterwards.
    pub fn record_failure(&self, addr: &str, account: &str) {
        let now = Instant::now();
        let mut l = self.ledger();
        l.prune(now);
        Ledger::bump(&mut l.by_addr, addr, now, 1);
        Ledger::bump(&mut l.by_account, account, now, 1);
        l.recent.push_back(now);
    }

    /// Forgets an address's failures (a right bearer token).
    pub fn forgive(&self, addr: &str) {
        self.ledger().by_addr.remove(addr);
    }

    /// A slot for one password check; 503 when none frees up in time.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        match tokio::time::timeout(PERMIT_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Refusal::Busy { retry_after: 2 }),
        }
    }

    /// Runs an expensive check (argon2) on the password-check threads, at
    /// most `concurrency` at once; `Busy` when no slot frees up in time.
    pub async fn run_check(
        &self,
        check: impl FnOnce() -> bool + Send + 'static,
    ) -> Result<bool, Refusal> {
        let _slot = self.slot().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.checks.send((Box::new(check), tx)).is_err() {
            return Ok(false);
        }
        Ok(rx.await.unwrap_or(false))
    }

    pub fn limits(&self) -> LoginLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(gpm: u32) -> LoginGuard {
        LoginGuard::new(LoginLimits::new(2, gpm))
    }

    #[test]
    fn delays_grow_per_address_and_success_forgives() {
        let g = guard(1000);
        for _ in 0..3 {
            let a = g.begin("1.1.1.1", "admin").expect("free tries");
            g.failed(a);
        }
        assert_eq!(
            g.begin("1.1.1.1", "admin").err(),
            Some(Refusal::Throttled { retry_after: 1 })
        );
        // Another address is not affected, and a success clears its own record.
        let a = g.begin("2.2.2.2", "admin").expect("clean address");
        g.succeeded(a);
        assert_eq!(g.check("2.2.2.2", "admin"), Ok(true));
        assert_eq!(delay(3, 3), Some(Duration::from_secs(1)));
        assert_eq!(delay(6, 3), Some(Duration::from_secs(8)));
        assert_eq!(delay(40, 3), Some(Duration::from_secs(MAX_DELAY_SECS)));
        assert_eq!(delay(2, 3), None);
    }

    #[test]
    fn simultaneous_attempts_are_counted_before_they_finish() {
        let g = guard(1000);
        let admitted: Vec<_> = (0..10).filter_map(|_| g.begin("a", "admin").ok()).collect();
        assert_eq!(admitted.len(), 3, "only the free tries go ahead at once");
    }

    #[test]
    fn account_delay_spares_clean_addresses_and_the_global_ceiling_keeps_a_reserve() {
        let g = guard(20);
        // Twenty addresses, one failure each: the account is over its free tries
        // and the minute's ceiling is used up.
        for i in 0..20 {
            let a = g.begin(&format!("10.0.0.{i}"), "admin").expect("admitted");
            g.failed(a);
        }
        assert!(matches!(
            g.begin("10.0.0.1", "admin"),
            Err(Refusal::Throttled { .. })
        ));
        // The owner, from an address with no failures, still gets to try.
        let a = g.begin("192.168.1.5", "admin").expect("clean reserve");
        g.succeeded(a);
        // Fresh addresses in one network share one reserve place a minute…
        let same_net: usize = (0..50)
            .filter(|i| g.begin(&format!("172.16.0.{i}"), "admin").is_ok())
            .count();
        assert_eq!(same_net, 1);
        // …and the reserve is small: addresses in many networks run out of it.
        let fresh: usize = (0..50)
            .filter(|i| g.begin(&format!("172.17.{i}.1"), "admin").is_ok())
            .count();
        assert_eq!(fresh, LoginLimits::new(2, 20).clean_reserve() - 1);
    }

    #[test]
    fn cancelled_attempts_do_not_count() {
        let g = guard(1000);
        for _ in 0..10 {
            let a = g.begin("a", "admin").expect("admitted");
            g.cancel(a);
        }
        assert_eq!(g.check("a", "admin"), Ok(true));
    }
}

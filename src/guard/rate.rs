//! Keyed token buckets: `per_minute` requests a minute per key, in bursts of
//! up to `burst`. Idle keys are dropped, so an attacker who rotates addresses
//! grows the map only up to a fixed size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Keys kept before idle ones are pruned (and, past twice this, before new
/// keys share one bucket).
const MAX_KEYS: usize = 50_000;
const OVERFLOW_KEY: &str = "\0overflow";

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct KeyedLimiter {
    per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl KeyedLimiter {
    /// `per_minute == 0` turns the limit off.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        KeyedLimiter {
            per_minute,
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn rate_per_sec(&self) -> f64 {
        self.per_minute as f64 / 60.0
    }

    /// Takes one token for `key`; `Err(seconds)` says when one is free again.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            self.prune(&mut map, now);
        }
        let key = if map.len() >= 2 * MAX_KEYS && !map.contains_key(key) {
            OVERFLOW_KEY
        } else {
            key
        };
        let burst = self.burst as f64;
        let rate = self.rate_per_sec();
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Drops buckets that have refilled: they hold no information.
    fn prune(&self, map: &mut HashMap<String, Bucket>, now: Instant) {
        let (burst, rate) = (self.burst as f64, self.rate_per_sec());
        map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
    }

    pub fn keys(&self) -> usize {
        self.buckets.lock().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let l = KeyedLimiter::new(60, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at("a", t0), Ok(()));
        }
        assert_eq!(l.check_at("a", t0), Err(1));
        assert_eq!(l.check_at("b", t0), Ok(()), "keys are independent");
        assert_eq!(l.check_at("a", t0 + Duration::from_millis(1100)), Ok(()));
        assert!(l.check_at("a", t0 + Duration::from_millis(1200)).is_err());
    }

    #[test]
    fn zero_means_unlimited_and_idle_keys_are_pruned() {
        let off = KeyedLimiter::new(0, 1);
        for _ in 0..1000 {
            assert!(off.check("x").is_ok());
        }
        let l = KeyedLimiter::new(600, 1);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            let _ = l.check_at(&i.to_string(), t0);
        }
        // A minute later every bucket is full again: the next new key prunes them.
        let _ = l.check_at("new", t0 + Duration::from_secs(60));
        assert_eq!(l.keys(), 1);
    }
}

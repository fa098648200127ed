//! Failed logins, counted per user name and per client address: past a
//! limit within a window, logins are refused (429 with `Retry-After`)
//! before any password is checked, so that guessing is slow and a flood of
//! attempts costs no argon2 work. Counters live in memory, bounded in
//! number; a restart forgets them.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters kept at most, per kind (the least recently used go first).
const TRACKED: usize = 10_000;

/// The limits, from `[web]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_user: usize,
    pub per_address: usize,
    pub window: Duration,
}

/// The failures of one key within the window, oldest first.
type Failures = Arc<Mutex<VecDeque<Instant>>>;

pub struct LoginThrottle {
    limits: Limits,
    users: quick_cache::sync::Cache<String, Failures>,
    addresses: quick_cache::sync::Cache<IpAddr, Failures>,
}

/// A login refused for now; it may be tried after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

impl LoginThrottle {
    pub fn new(limits: Limits) -> LoginThrottle {
        LoginThrottle {
            limits,
            users: quick_cache::sync::Cache::new(TRACKED),
            addresses: quick_cache::sync::Cache::new(TRACKED),
        }
    }

    /// Whether a login for `user` from `address` may be tried now.
    pub fn check(&self, user: &str, address: Option<IpAddr>) -> Result<(), Throttled> {
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        if let Some(failures) = self.users.get(user) {
            wait = wait.max(self.wait(&failures, self.limits.per_user, now));
        }
        if let Some(failures) = address.and_then(|a| self.addresses.get(&a)) {
            wait = wait.max(self.wait(&failures, self.limits.per_address, now));
        }
        if wait.is_zero() { Ok(()) } else { Err(Throttled { retry_after: wait }) }
    }

    /// Counts a failed login.
    pub fn failed(&self, user: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let user_failures =
            self.users.get_or_insert_with(user, || Ok::<_, ()>(Failures::default())).unwrap_or_default();
        self.record(&user_failures, self.limits.per_user, now);
        if let Some(address) = address {
            let failures =
                self.addresses.get_or_insert_with(&address, || Ok::<_, ()>(Failures::default())).unwrap_or_default();
            self.record(&failures, self.limits.per_address, now);
        }
    }

    /// A successful login clears its user's failures (not its address's).
    pub fn succeeded(&self, user: &str) {
        self.users.remove(user);
    }

    fn record(&self, failures: &Failures, limit: usize, now: Instant) {
        let mut failures = failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|t| now.duration_since(*t) < self.limits.window);
        failures.push_back(now);
        // Only the newest `limit` matter.
        while failures.len() > limit.max(1) {
            failures.pop_front();
        }
    }

    /// How long until fewer than `limit` failures are in the window.
    fn wait(&self, failures: &Failures, limit: usize, now: Instant) -> Duration {
        let failures = failures.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<&Instant> = failures.iter().filter(|t| now.duration_since(**t) < self.limits.window).collect();
        if recent.len() < limit.max(1) {
            return Duration::ZERO;
        }
        // The oldest counted failure leaving the window frees one attempt.
        let oldest = recent[recent.len() - limit.max(1)];
        self.limits.window.saturating_sub(now.duration_since(*oldest)).max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_wait_for_the_window() {
        let throttle = LoginThrottle::new(Limits { per_user: 3, per_address: 5, window: Duration::from_secs(60) });
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let there: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(throttle.check("ann", Some(here)).is_ok());
            throttle.failed("ann", Some(here));
        }
        let refused = throttle.check("ann", Some(there)).unwrap_err();
        assert!(refused.retry_after > Duration::from_secs(50), "{refused:?}");
        // Another user from the same address still may, up to its own limit.
        assert!(throttle.check("bob", Some(here)).is_ok());
        throttle.failed("bob", Some(here));
        throttle.failed("bob", Some(here));
        assert!(throttle.check("carol", Some(here)).is_err(), "five failures from one address");
        assert!(throttle.check("carol", Some(there)).is_ok());
        throttle.succeeded("ann");
        assert!(throttle.check("ann", Some(there)).is_ok(), "a success clears the user's failures");
    }
}

//! Upstream health: a circuit breaker per upstream, and a short memory of what it does not have.
//!
//! **Breaker.** A hung or dead upstream made every request wait for its own timeout (30 s),
//! even for tags served from cache. After `breaker_threshold` failures in a row (timeouts,
//! refused connections, 5xx) the breaker opens: requests fail at once with
//! [`UpstreamError::Down`], which is transient, so cached tags are served stale at once and the
//! rest is 503. After `breaker_cooldown` one request goes through as a probe (half-open); its
//! success closes the breaker, its failure opens it for another cool-down. Any answer that is
//! not a 5xx (a 404, a 401) shows upstream alive.
//!
//! **Not found.** Upstream's 404 for a manifest or blob is remembered for `not_found_ttl` per
//! path and identity, so a flood of requests for things that do not exist costs the site one
//! upstream request each (Docker Hub counts them against its pull quota).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::auth::Identity;
use super::error::UpstreamError;
use crate::clock::Clock;
use crate::metrics::UpstreamHealth;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else waits for its outcome by failing fast.
    HalfOpen,
}

/// What a finished upstream call says about upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Upstream answered (whatever it said, unless it was a 5xx).
    Alive,
    /// Timed out, refused, reset, or a 5xx.
    Failed,
}

impl Outcome {
    pub fn of_error(e: &UpstreamError) -> Self {
        match e {
            UpstreamError::Unreachable { .. } | UpstreamError::Timeout { .. } => Outcome::Failed,
            UpstreamError::Status { status, .. } if *status >= 500 => Outcome::Failed,
            _ => Outcome::Alive,
        }
    }

    pub fn of_status(status: u16) -> Self {
        if status >= 500 {
            Outcome::Failed
        } else {
            Outcome::Alive
        }
    }
}

pub struct Breaker {
    upstream: String,
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
    clock: Clock,
    health: Arc<UpstreamHealth>,
}

impl Breaker {
    pub fn new(upstream: &str, threshold: u32, cooldown: Duration, clock: Clock) -> Self {
        Breaker {
            upstream: upstream.to_owned(),
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            clock,
            health: Arc::new(UpstreamHealth::new(upstream)),
        }
    }

    /// What `/metrics` shows of this breaker.
    pub fn health(&self) -> &Arc<UpstreamHealth> {
        &self.health
    }

    /// Lets a call through (possibly as the half-open probe), or fails it at once.
    pub fn admit(&self) -> Result<Permit<'_>, UpstreamError> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if self.clock.now() >= until => {
                self.set(&mut state, State::HalfOpen);
                true
            }
            State::Open { until } => {
                return Err(self.refuse(until.saturating_duration_since(self.clock.now())))
            }
            State::HalfOpen => return Err(self.refuse(self.cooldown)),
        };
        Ok(Permit {
            breaker: self,
            probe,
            done: false,
        })
    }

    fn refuse(&self, retry_in: Duration) -> UpstreamError {
        self.health.rejected.fetch_add(1, Ordering::Relaxed);
        UpstreamError::Down {
            upstream: self.upstream.clone(),
            // Whole seconds, at least one: what `Retry-After` can say.
            retry_after: Duration::from_secs(retry_in.as_secs().max(1)),
        }
    }

    fn record(&self, outcome: Outcome, probe: bool) {
        let mut state = self.lock();
        let next = match (outcome, *state) {
            (Outcome::Alive, State::HalfOpen) if probe => {
                tracing::info!(upstream = %self.upstream, "upstream answers again");
                State::Closed { failures: 0 }
            }
            (Outcome::Alive, State::Closed { .. }) => State::Closed { failures: 0 },
            (Outcome::Failed, State::HalfOpen) if probe => self.trip(),
            (Outcome::Failed, State::Closed { failures }) if failures + 1 >= self.threshold => {
                self.trip()
            }
            (Outcome::Failed, State::Closed { failures }) => State::Closed {
                failures: failures + 1,
            },
            // A call admitted before the breaker opened: the probe decides.
            (_, other) => other,
        };
        self.set(&mut state, next);
    }

    fn trip(&self) -> State {
        tracing::warn!(
            upstream = %self.upstream,
            cooldown = ?self.cooldown,
            "upstream is failing; not waiting for it until a probe succeeds"
        );
        self.health.trips.fetch_add(1, Ordering::Relaxed);
        State::Open {
            until: self.clock.now() + self.cooldown,
        }
    }

    /// A probe whose caller went away before the outcome: the next request probes again.
    fn abandon_probe(&self) {
        let mut state = self.lock();
        if *state == State::HalfOpen {
            let now = self.clock.now();
            self.set(&mut state, State::Open { until: now });
        }
    }

    fn set(&self, state: &mut State, next: State) {
        *state = next;
        let code = match next {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen => 2,
        };
        self.health.state.store(code, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }
}

/// A call let through; report its outcome with [`Permit::record`].
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker.record(outcome, self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.abandon_probe();
        }
    }
}

/// Upstream 404s, remembered per (path, identity) for a short while.
pub struct NotFound {
    remembered: Option<moka::sync::Cache<(String, Identity), Arc<str>>>,
    hits: Arc<UpstreamHealth>,
}

/// Memory for remembered 404s: a path and a short reason each.
const NOT_FOUND_BYTES: u64 = 8 << 20;

impl NotFound {
    pub fn new(ttl: Duration, health: &Arc<UpstreamHealth>) -> Self {
        let remembered = (!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(NOT_FOUND_BYTES)
                .weigher(|(path, _): &(String, Identity), reason: &Arc<str>| {
                    crate::memory::weight(path.len() + 64 + reason.len())
                })
                .time_to_live(ttl)
                .build()
        });
        NotFound {
            remembered,
            hits: Arc::clone(health),
        }
    }

    /// Upstream's 404 for `path`, if it said so within the TTL.
    pub fn recall(
        &self,
        upstream: &str,
        path: &str,
        what: &str,
        identity: &Identity,
    ) -> Option<UpstreamError> {
        let reason = self
            .remembered
            .as_ref()?
            .get(&(path.to_owned(), identity.clone()))?;
        self.hits.not_found_hits.fetch_add(1, Ordering::Relaxed);
        Some(UpstreamError::NotFound {
            upstream: upstream.to_owned(),
            what: what.to_owned(),
            reason: reason.to_string(),
        })
    }

    pub fn remember(&self, path: &str, identity: &Identity, error: &UpstreamError) {
        if let (Some(remembered), UpstreamError::NotFound { reason, .. }) =
            (&self.remembered, error)
        {
            let reason: String = reason.chars().take(200).collect();
            remembered.insert((path.to_owned(), identity.clone()), Arc::from(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn state_code(health: &UpstreamHealth) -> u64 {
        health.state.load(Ordering::Relaxed)
    }

    /// A clock the test moves by hand.
    fn manual_clock() -> (Clock, ManualClock) {
        let hand = ManualClock::new();
        (hand.clock(), hand)
    }

    fn fail(breaker: &Breaker) {
        breaker.admit().unwrap().record(Outcome::Failed);
    }

    #[test]
    fn opens_after_the_threshold_and_fails_fast() {
        let (clock, _) = manual_clock();
        let breaker = Breaker::new("up", 3, Duration::from_secs(30), clock);
        fail(&breaker);
        fail(&breaker);
        assert!(!breaker.is_open());
        // A success in between starts the count again.
        breaker.admit().unwrap().record(Outcome::Alive);
        fail(&breaker);
        fail(&breaker);
        assert!(!breaker.is_open());
        fail(&breaker);
        assert!(breaker.is_open());
        let Err(UpstreamError::Down { retry_after, .. }) = breaker.admit() else {
            panic!("an open breaker let a call through");
        };
        assert_eq!(retry_after, Duration::from_secs(30));
        assert!(breaker.admit().is_err_and(|e| e.is_transient()));
        assert_eq!(breaker.health().trips.load(Ordering::Relaxed), 1);
        assert_eq!(breaker.health().rejected.load(Ordering::Relaxed), 2);
        assert_eq!(state_code(breaker.health()), 1);
    }

    #[test]
    fn one_probe_after_the_cooldown_decides() {
        let (clock, now) = manual_clock();
        let breaker = Breaker::new("up", 1, Duration::from_secs(10), clock);
        fail(&breaker);
        now.advance(Duration::from_secs(9));
        assert!(breaker.admit().is_err(), "let through before the cool-down");
        now.advance(Duration::from_secs(1));
        let probe = breaker.admit().expect("no probe after the cool-down");
        assert_eq!(state_code(breaker.health()), 2);
        // While the probe is out, everyone else still fails fast.
        assert!(breaker.admit().is_err());
        probe.record(Outcome::Failed);
        assert!(breaker.admit().is_err(), "a failed probe must reopen");

        now.advance(Duration::from_secs(10));
        breaker.admit().unwrap().record(Outcome::Alive);
        assert!(!breaker.is_open());
        assert_eq!(state_code(breaker.health()), 0);
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_request_probe() {
        let (clock, now) = manual_clock();
        let breaker = Breaker::new("up", 1, Duration::from_secs(5), clock);
        fail(&breaker);
        now.advance(Duration::from_secs(5));
        drop(breaker.admit().unwrap());
        let probe = breaker.admit().expect("the breaker stayed half-open");
        probe.record(Outcome::Alive);
        assert!(!breaker.is_open());
    }

    #[test]
    fn late_outcomes_do_not_override_the_probe() {
        let (clock, now) = manual_clock();
        let breaker = Breaker::new("up", 1, Duration::from_secs(5), clock);
        let slow = breaker.admit().unwrap();
        fail(&breaker);
        // A call admitted while closed finishes after the breaker opened: it changes nothing.
        slow.record(Outcome::Alive);
        assert!(breaker.is_open());
        now.advance(Duration::from_secs(5));
        breaker.admit().unwrap().record(Outcome::Alive);
        assert!(!breaker.is_open());
    }

    #[test]
    fn outcomes_of_errors() {
        let status = |status| UpstreamError::Status {
            upstream: "u".into(),
            status,
            retry_after: None,
            reason: String::new(),
        };
        assert_eq!(Outcome::of_error(&status(503)), Outcome::Failed);
        assert_eq!(Outcome::of_error(&status(400)), Outcome::Alive);
        let timeout = UpstreamError::Timeout {
            upstream: "u".into(),
        };
        assert_eq!(Outcome::of_error(&timeout), Outcome::Failed);
        let not_found = UpstreamError::NotFound {
            upstream: "u".into(),
            what: "x".into(),
            reason: String::new(),
        };
        assert_eq!(Outcome::of_error(&not_found), Outcome::Alive);
        assert_eq!(Outcome::of_status(502), Outcome::Failed);
        assert_eq!(Outcome::of_status(404), Outcome::Alive);
    }

    #[test]
    fn not_found_is_remembered_per_identity_and_not_at_all_with_ttl_zero() {
        let health = Arc::new(UpstreamHealth::new("u"));
        let not_found = NotFound::new(Duration::from_secs(30), &health);
        let error = UpstreamError::NotFound {
            upstream: "u".into(),
            what: "manifest x".into(),
            reason: "MANIFEST_UNKNOWN".into(),
        };
        let path = "/v2/library/x/manifests/nope";
        assert!(not_found
            .recall("u", path, "m", &Identity::Anonymous)
            .is_none());
        not_found.remember(path, &Identity::Anonymous, &error);
        let recalled = not_found
            .recall("u", path, "m", &Identity::Anonymous)
            .unwrap();
        assert!(recalled.is_not_found());
        // Another identity may see what anonymous does not.
        assert!(not_found.recall("u", path, "m", &Identity::Site).is_none());
        // Only 404s are remembered.
        let other = "/v2/library/x/manifests/other";
        let timeout = UpstreamError::Timeout {
            upstream: "u".into(),
        };
        not_found.remember(other, &Identity::Anonymous, &timeout);
        assert!(not_found
            .recall("u", other, "m", &Identity::Anonymous)
            .is_none());
        assert_eq!(health.not_found_hits.load(Ordering::Relaxed), 1);

        let off = NotFound::new(Duration::ZERO, &health);
        off.remember(path, &Identity::Anonymous, &error);
        assert!(off.recall("u", path, "m", &Identity::Anonymous).is_none());
    }
}

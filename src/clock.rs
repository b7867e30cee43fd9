//! Time, for the rules that compare it: tag freshness, the guard's re-checks, the upstream
//! breaker. Production reads the system clock; tests hold a [`ManualClock`] and move it by
//! hand, so a TTL is tested by advancing time rather than by sleeping.
//!
//! Caches whose expiry is only memory hygiene keep moka's own clock (remembered upstream 404s,
//! upstream tokens, prefetch's recently walked manifests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The system clock, or a manual one a test moves. Cheap to clone and to read.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

struct Manual {
    start: Instant,
    start_unix_ms: u64,
    /// How far the test has moved the clock, in nanoseconds.
    advanced_ns: AtomicU64,
}

impl Manual {
    fn advanced(&self) -> Duration {
        Duration::from_nanos(self.advanced_ns.load(Ordering::Acquire))
    }
}

impl Clock {
    pub fn system() -> Self {
        Clock::default()
    }

    /// Monotonic time, for intervals.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(manual) => manual.start + manual.advanced(),
        }
    }

    /// Milliseconds since the Unix epoch, for times kept in the index across restarts.
    pub fn unix_ms(&self) -> u64 {
        match &self.manual {
            None => system_unix_ms(),
            Some(manual) => manual.start_unix_ms + manual.advanced().as_millis() as u64,
        }
    }
}

fn system_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A clock that stands still until [`ManualClock::advance`] moves it.
#[derive(Clone)]
pub struct ManualClock(Arc<Manual>);

impl ManualClock {
    /// Starts at the current time.
    pub fn new() -> Self {
        ManualClock(Arc::new(Manual {
            start: Instant::now(),
            start_unix_ms: system_unix_ms(),
            advanced_ns: AtomicU64::new(0),
        }))
    }

    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(Arc::clone(&self.0)),
        }
    }

    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.advanced_ns.fetch_add(ns, Ordering::AcqRel);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let hand = ManualClock::new();
        let clock = hand.clock();
        let (t0, ms0) = (clock.now(), clock.unix_ms());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), t0);
        assert_eq!(clock.unix_ms(), ms0);
        hand.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - t0, Duration::from_secs(90));
        assert_eq!(clock.unix_ms() - ms0, 90_000);
        // Clones share the hand.
        assert_eq!(hand.clone().clock().now(), clock.now());
    }

    #[test]
    fn the_system_clock_runs() {
        let clock = Clock::system();
        let t0 = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now() > t0);
        assert!(clock.unix_ms() > 1_600_000_000_000);
    }
}

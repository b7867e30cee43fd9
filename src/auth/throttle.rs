//! Pacing of password guessing: failed logins are counted per user name and per client
//! address in a fixed window that starts with the first failure; past the limit, further
//! attempts are refused (429 with `Retry-After`) until the window ends, before any bcrypt runs.
//!
//! Anyone can make a login fail, so the counters are bounded: user names are kept as a keyed
//! 16-byte hash (a flood of long random names costs what short ones do), addresses as their
//! IPv4 address or IPv6 /64 (whoever holds a /64 holds all of it), and each table holds at most
//! [`MAX_ENTRIES`] counters of fixed size (a few hundred bytes each with moka's bookkeeping, so a
//! few MiB in all). When full, moka's TinyLFU admission keeps the counters being hit, so a flood
//! of one-off names does not push out the one under attack.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use ring::hmac;

use crate::config::LoginSettings;

/// Counters kept per table (user names, addresses).
pub const MAX_ENTRIES: u64 = 20_000;

pub struct LoginThrottle {
    users: Cache<[u8; 16], Arc<Window>>,
    addresses: Cache<IpAddr, Arc<Window>>,
    per_user: u32,
    per_address: u32,
    window: Duration,
    /// Keys the user-name hash, so nobody can pick names that collide.
    secret: hmac::Key,
}

/// Failures since `started`; the entry expires with the window.
struct Window {
    started: Instant,
    failures: AtomicU32,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("per_user", &self.per_user)
            .field("per_address", &self.per_address)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl LoginThrottle {
    pub fn new(settings: &LoginSettings, secret: hmac::Key) -> Self {
        LoginThrottle {
            users: table(settings.failure_window),
            addresses: table(settings.failure_window),
            per_user: settings.failures_per_user,
            per_address: settings.failures_per_address,
            window: settings.failure_window,
            secret,
        }
    }

    /// `Err(retry_after)` when `user` or `address` has used up its failures in this window.
    pub fn check(&self, user: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        let by_user = self.users.get(&self.user_key(user));
        let by_address = address.and_then(|a| self.addresses.get(&address_key(a)));
        let wait = [(by_user, self.per_user), (by_address, self.per_address)]
            .into_iter()
            .filter_map(|(window, limit)| window.filter(|w| w.count() >= limit))
            .map(|window| self.remaining(&window))
            .max();
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a failed login against `user` and `address`.
    pub fn failed(&self, user: &str, address: Option<IpAddr>) {
        let fresh = || Arc::new(Window::new());
        self.users.get_with(self.user_key(user), fresh).bump();
        if let Some(address) = address {
            self.addresses.get_with(address_key(address), fresh).bump();
        }
    }

    /// A successful login clears its user name's failures (not its address's: one good
    /// account must not reset a guesser's count for the others).
    pub fn succeeded(&self, user: &str) {
        self.users.invalidate(&self.user_key(user));
    }

    /// How long until `window` ends, rounded up to whole seconds for `Retry-After`.
    fn remaining(&self, window: &Window) -> Duration {
        let left = self.window.saturating_sub(window.started.elapsed());
        Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(ONE_SECOND)
    }

    fn user_key(&self, user: &str) -> [u8; 16] {
        let tag = hmac::sign(&self.secret, user.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&tag.as_ref()[..16]);
        key
    }
}

const ONE_SECOND: Duration = Duration::from_secs(1);

fn table<K>(window: Duration) -> Cache<K, Arc<Window>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(MAX_ENTRIES)
        .time_to_live(window)
        .build()
}

impl Window {
    fn new() -> Self {
        Window {
            started: Instant::now(),
            failures: AtomicU32::new(0),
        }
    }

    fn count(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// An IPv4 address as it is; an IPv6 address cut to its /64.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_user: u32, per_address: u32, window: Duration) -> LoginThrottle {
        let settings = LoginSettings {
            failures_per_user: per_user,
            failures_per_address: per_address,
            failure_window: window,
            ..LoginSettings::default()
        };
        LoginThrottle::new(&settings, hmac::Key::new(hmac::HMAC_SHA256, b"test"))
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn a_user_is_refused_after_its_failures_until_the_window_ends() {
        let t = throttle(3, 100, Duration::from_secs(60));
        for n in 0..3 {
            assert!(t.check("alice", ip("10.0.0.1")).is_ok(), "attempt {n}");
            t.failed("alice", ip(&format!("10.0.0.{n}")));
        }
        let wait = t.check("alice", ip("10.9.9.9")).unwrap_err();
        assert!(
            wait > Duration::from_secs(58) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        // Other users are not affected, and a success clears the user's count.
        assert!(t.check("bob", ip("10.0.0.1")).is_ok());
        t.succeeded("alice");
        assert!(t.check("alice", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn an_address_is_refused_whatever_names_it_tries() {
        let t = throttle(100, 4, Duration::from_secs(60));
        for n in 0..4 {
            t.failed(&format!("user{n}"), ip("192.0.2.7"));
        }
        assert!(t.check("someone-new", ip("192.0.2.7")).is_err());
        assert!(t.check("someone-new", ip("192.0.2.8")).is_ok());
        // Without a known address only the user name counts.
        assert!(t.check("someone-new", None).is_ok());
        // A success by one account does not clear the address.
        t.succeeded("user0");
        assert!(t.check("user0", ip("192.0.2.7")).is_err());
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address() {
        let t = throttle(100, 2, Duration::from_secs(60));
        t.failed("a", ip("2001:db8:1:2::1"));
        t.failed("b", ip("2001:db8:1:2:ffff::9"));
        assert!(t.check("c", ip("2001:db8:1:2::42")).is_err());
        assert!(t.check("c", ip("2001:db8:1:3::42")).is_ok());
        // IPv4 peers of a dual-stack listener count as their IPv4 address.
        t.failed("a", ip("::ffff:192.0.2.1"));
        t.failed("b", ip("192.0.2.1"));
        assert!(t.check("c", ip("192.0.2.1")).is_err());
    }

    #[test]
    fn windows_expire() {
        let t = throttle(1, 1, Duration::from_millis(200));
        t.failed("alice", ip("10.0.0.1"));
        let wait = t.check("alice", ip("10.0.0.1")).unwrap_err();
        // Never less than a second: Retry-After has whole seconds.
        assert_eq!(wait, Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(300));
        assert!(t.check("alice", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn a_flood_of_random_names_stays_bounded() {
        let t = throttle(5, u32::MAX, Duration::from_secs(60));
        for _ in 0..5 {
            t.failed("alice", ip("10.0.0.2"));
        }
        for n in 0..3 * MAX_ENTRIES {
            t.failed(&format!("random-{n}-{}", "x".repeat(200)), ip("10.0.0.1"));
            // The guesser keeps trying alice meanwhile: her counter stays hot, and stays.
            if n % 64 == 0 {
                assert!(t.check("alice", ip("10.0.0.2")).is_err(), "after {n}");
            }
        }
        t.users.run_pending_tasks();
        assert!(
            t.users.entry_count() <= MAX_ENTRIES,
            "{}",
            t.users.entry_count()
        );
        assert_eq!(t.addresses.entry_count(), 2);
    }
}

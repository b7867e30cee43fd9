//! Logins verified lately, so that a client repeating its credentials (docker asks for a token
//! per repository and per pull) pays bcrypt once a minute rather than every time.
//!
//! The cache holds no password: an entry's key is an HMAC of user and password under a secret
//! drawn at start, and its value the htpasswd generation it was verified against. Entries from
//! an older generation never count, and the whole cache is dropped when the file changes, so a
//! changed or removed password stops working at once. Only credentials that verified are kept,
//! so an unauthenticated client cannot grow it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use ring::hmac;

/// Verified logins kept at once: a 32-byte key and a number each.
const MAX_ENTRIES: u64 = 10_000;

pub struct VerifiedLogins {
    cache: Option<Cache<[u8; 32], u64>>,
    secret: hmac::Key,
    /// The newest htpasswd generation the cache has seen.
    generation: AtomicU64,
}

impl std::fmt::Debug for VerifiedLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedLogins")
            .field("enabled", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

/// Where a lookup found `user`+`password`, to be passed back to [`VerifiedLogins::remember`].
pub struct CredentialKey([u8; 32]);

impl VerifiedLogins {
    /// `ttl` zero turns the cache off.
    pub fn new(ttl: Duration, secret: hmac::Key) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build()
        });
        VerifiedLogins {
            cache,
            secret,
            generation: AtomicU64::new(0),
        }
    }

    /// The key for `user`+`password`, and whether they verified against this `generation` of
    /// the htpasswd file lately. A newer generation drops everything remembered.
    pub fn lookup(&self, user: &str, password: &str, generation: u64) -> (CredentialKey, bool) {
        let key = self.key(user, password);
        let Some(cache) = &self.cache else {
            return (key, false);
        };
        if self.generation.fetch_max(generation, Ordering::AcqRel) < generation {
            cache.invalidate_all();
        }
        let hit = cache.get(&key.0) == Some(generation);
        (key, hit)
    }

    /// Remembers credentials that verified against `generation`.
    pub fn remember(&self, key: CredentialKey, generation: u64) {
        if let Some(cache) = &self.cache {
            cache.insert(key.0, generation);
        }
    }

    /// Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
    fn key(&self, user: &str, password: &str) -> CredentialKey {
        let mut context = hmac::Context::with_key(&self.secret);
        context.update(&(user.len() as u64).to_le_bytes());
        context.update(user.as_bytes());
        context.update(password.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(context.sign().as_ref());
        CredentialKey(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl: Duration) -> VerifiedLogins {
        VerifiedLogins::new(ttl, hmac::Key::new(hmac::HMAC_SHA256, b"test"))
    }

    #[test]
    fn remembered_credentials_hit_and_nothing_else_does() {
        let c = cache(Duration::from_secs(60));
        let (key, hit) = c.lookup("alice", "pw", 1);
        assert!(!hit);
        c.remember(key, 1);
        assert!(c.lookup("alice", "pw", 1).1);
        assert!(!c.lookup("alice", "pW", 1).1);
        assert!(!c.lookup("alicep", "w", 1).1);
        assert!(!c.lookup("alic", "epw", 1).1);
        assert!(!c.lookup("bob", "pw", 1).1);
    }

    #[test]
    fn a_new_generation_drops_everything() {
        let c = cache(Duration::from_secs(60));
        let (key, _) = c.lookup("alice", "pw", 1);
        c.remember(key, 1);
        let (key, _) = c.lookup("bob", "pw", 1);
        c.remember(key, 1);
        assert!(!c.lookup("alice", "pw", 2).1);
        // Back at the old generation (a stale reader), the entries are gone for good.
        assert!(!c.lookup("bob", "pw", 1).1);
        // An entry verified against an older generation never counts for a newer one.
        let (key, _) = c.lookup("carol", "pw", 2);
        c.remember(key, 1);
        assert!(!c.lookup("carol", "pw", 2).1);
    }

    #[test]
    fn entries_expire_and_a_zero_ttl_keeps_nothing() {
        let c = cache(Duration::from_millis(100));
        let (key, _) = c.lookup("alice", "pw", 1);
        c.remember(key, 1);
        assert!(c.lookup("alice", "pw", 1).1);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!c.lookup("alice", "pw", 1).1);

        let off = cache(Duration::ZERO);
        let (key, _) = off.lookup("alice", "pw", 1);
        off.remember(key, 1);
        assert!(!off.lookup("alice", "pw", 1).1);
    }

    #[test]
    fn keys_depend_on_the_secret() {
        let a = cache(Duration::from_secs(60)).key("alice", "pw").0;
        let b = VerifiedLogins::new(
            Duration::from_secs(60),
            hmac::Key::new(hmac::HMAC_SHA256, b"other"),
        )
        .key("alice", "pw")
        .0;
        assert_ne!(a, b);
        assert_ne!(&a[..8], b"alicepw\0");
    }
}

//! Checking a user's password, in the order that keeps guessing cheap for berth and slow for
//! the guesser:
//!
//! 1. the [throttle](super::throttle): a user name or address that failed too often lately is
//!    refused before anything else runs;
//! 2. the htpasswd file is consulted (a `stat`, on the blocking pool);
//! 3. [verified logins](super::verified): credentials that verified against this version of the
//!    file within the last minute pass without bcrypt;
//! 4. bcrypt, on the [bounded hashing pool](super::hashing), for known and unknown users alike.
//!
//! Failures are counted by the caller ([`Logins::failed`]) once it knows the attempt failed
//! for good: credentials that are not a local user's may still be an upstream's (passthrough).

use std::net::IpAddr;
use std::sync::Arc;

use ring::hmac;
use ring::rand::SystemRandom;

use super::hashing::HashPool;
use super::throttle::LoginThrottle;
use super::users::{check_password, Htpasswd};
use super::verified::VerifiedLogins;
use super::AuthError;
use crate::config::LoginSettings;

pub struct Logins {
    users: Option<Arc<Htpasswd>>,
    throttle: LoginThrottle,
    verified: VerifiedLogins,
    pool: HashPool,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins")
            .field("users", &self.users)
            .field("throttle", &self.throttle)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Logins {
    /// Without `users` nobody logs in (and nothing is counted: there is nothing to guess).
    pub fn new(
        users: Option<Htpasswd>,
        settings: &LoginSettings,
        rng: &SystemRandom,
    ) -> Result<Self, AuthError> {
        let secret = || {
            hmac::Key::generate(hmac::HMAC_SHA256, rng)
                .map_err(|_| AuthError::Crypto("no randomness available".into()))
        };
        Ok(Logins {
            users: users.map(Arc::new),
            throttle: LoginThrottle::new(settings, secret()?),
            verified: VerifiedLogins::new(settings.cache_ttl, secret()?),
            pool: HashPool::new(settings.hash_threads, settings.hash_queue),
        })
    }

    pub fn users(&self) -> Option<&Htpasswd> {
        self.users.as_deref()
    }

    /// Whether `password` is `user`'s. Unknown users and wrong passwords are the same
    /// [`AuthError::InvalidCredentials`], after the same work; [`AuthError::Throttled`] and
    /// [`AuthError::Busy`] come before any.
    pub async fn check(
        &self,
        user: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let Some(users) = &self.users else {
            return Err(AuthError::InvalidCredentials);
        };
        self.throttle
            .check(user, address)
            .map_err(|retry_after| AuthError::Throttled { retry_after })?;
        if user.is_empty() {
            return Err(AuthError::InvalidCredentials);
        }
        let entry = {
            let (users, user) = (Arc::clone(users), user.to_owned());
            tokio::task::spawn_blocking(move || users.entry(&user))
                .await
                .map_err(|e| AuthError::Crypto(format!("htpasswd lookup failed: {e}")))??
        };
        let (key, hit) = self.verified.lookup(user, password, entry.generation);
        if hit {
            return Ok(());
        }
        let (secret, hash) = (password.to_owned(), entry.hash);
        if self
            .pool
            .run(move || check_password(&secret, hash.as_deref()))
            .await?
        {
            self.verified.remember(key, entry.generation);
            self.throttle.succeeded(user);
            Ok(())
        } else {
            Err(AuthError::InvalidCredentials)
        }
    }

    /// Counts a login that failed for good against `user` and `address`.
    pub fn failed(&self, user: &str, address: Option<IpAddr>) {
        if self.users.is_some() {
            self.throttle.failed(user, address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn logins(file: &tempfile::NamedTempFile, settings: LoginSettings) -> Logins {
        let users = Htpasswd::open(file.path()).unwrap();
        Logins::new(Some(users), &settings, &SystemRandom::new()).unwrap()
    }

    fn htpasswd(password: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "dave:{}", bcrypt::hash(password, 4).unwrap()).unwrap();
        file
    }

    fn address() -> Option<IpAddr> {
        Some("192.0.2.1".parse().unwrap())
    }

    #[tokio::test]
    async fn a_cached_login_survives_until_the_file_changes() {
        let file = htpasswd("dev");
        let l = logins(&file, LoginSettings::default());
        l.check("dave", "dev", address()).await.unwrap();
        // The second check is a cache hit: no bcrypt.
        let (_, hit) = l.verified.lookup("dave", "dev", 1);
        assert!(hit);
        l.check("dave", "dev", address()).await.unwrap();

        // A new password: the old one is refused at once, the new one works.
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(
            file.path(),
            format!("dave:{}\n", bcrypt::hash("new", 4).unwrap()),
        )
        .unwrap();
        assert!(matches!(
            l.check("dave", "dev", address()).await,
            Err(AuthError::InvalidCredentials)
        ));
        l.check("dave", "new", address()).await.unwrap();
    }

    #[tokio::test]
    async fn unknown_users_and_wrong_passwords_fail_alike_until_throttled() {
        let file = htpasswd("dev");
        let settings = LoginSettings {
            failures_per_user: 2,
            ..LoginSettings::default()
        };
        let l = logins(&file, settings);
        for (user, password) in [("dave", "wrong"), ("nobody", "dev")] {
            for _ in 0..2 {
                let err = l.check(user, password, address()).await.unwrap_err();
                assert!(matches!(err, AuthError::InvalidCredentials), "{err}");
                l.failed(user, address());
            }
            let err = l.check(user, password, address()).await.unwrap_err();
            assert!(
                matches!(err, AuthError::Throttled { retry_after } if retry_after.as_secs() >= 59),
                "{err:?}"
            );
        }
        // Throttled means throttled: the right password is refused too, until the window ends.
        assert!(matches!(
            l.check("dave", "dev", address()).await,
            Err(AuthError::Throttled { .. })
        ));
    }

    #[tokio::test]
    async fn without_users_nobody_logs_in_and_nothing_is_counted() {
        let l = Logins::new(None, &LoginSettings::default(), &SystemRandom::new()).unwrap();
        for _ in 0..10 {
            assert!(matches!(
                l.check("dave", "dev", address()).await,
                Err(AuthError::InvalidCredentials)
            ));
            l.failed("dave", address());
        }
        assert!(l.throttle.check("dave", address()).is_ok());
    }
}

//! Accepting berth's own tokens: an access token presented to the registry, or a refresh
//! token presented to the token endpoint, and never one for the other.
//!
//! Verified access tokens are cached until their `exp`, keyed by the token itself: a client
//! sends the same token with every request of a pull, and its signature needs checking once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use serde::Deserialize;

use super::claims::{now_secs, AccessClaims};
use super::keys::{PublicKey, Verifier};
use super::refresh::{refresh_audience, RefreshClaims, REFRESH_TOKEN_USE};
use super::AuthError;

/// Memory for verified tokens. A token is a few hundred bytes to a few KiB (with
/// [`scope::MAX_SCOPES`](super::scope::MAX_SCOPES) scopes at most): tens of thousands fit.
pub(super) const VERIFIED_CACHE_BYTES: u64 = 32 << 20;
/// Longest bearer token accepted for verification: one carrying the most scopes berth grants,
/// with long names, is well under it.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// What an access token is parsed as before it is accepted: the marker must be absent.
#[derive(Deserialize)]
struct AccessTokenBody {
    #[serde(flatten)]
    claims: AccessClaims,
    #[serde(default)]
    token_use: Option<String>,
}

pub struct TokenVerifier {
    verifier: Verifier,
    /// The audience access tokens must be for.
    service: String,
    verified: Cache<String, Arc<AccessClaims>>,
}

impl TokenVerifier {
    pub fn new(key: &PublicKey, issuer: &str, service: &str) -> Self {
        TokenVerifier {
            verifier: Verifier::new([key.clone()], issuer.to_owned()),
            service: service.to_owned(),
            verified: Cache::builder()
                .max_capacity(VERIFIED_CACHE_BYTES)
                .weigher(|token: &String, claims: &Arc<AccessClaims>| {
                    crate::memory::weight(token.len() + claims.heap_bytes())
                })
                .expire_after(UntilExp)
                .build(),
        }
    }

    /// Accepts an access token signed by berth for this service, checking its signature only
    /// the first time it is seen.
    pub fn access(&self, token: &str) -> Result<Arc<AccessClaims>, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        if let Some(claims) = self.verified.get(token) {
            return Ok(claims);
        }
        let body: AccessTokenBody = self.verifier.verify(token, &self.service)?;
        if body.token_use.is_some() {
            return Err(AuthError::InvalidToken("not an access token".into()));
        }
        let claims = Arc::new(body.claims);
        self.verified.insert(token.to_owned(), Arc::clone(&claims));
        Ok(claims)
    }

    /// Accepts a refresh token signed by berth for this service's token endpoint. Whether its
    /// user's password is still the one it was earned with is the caller's to check.
    pub fn refresh(&self, token: &str) -> Result<RefreshClaims, AuthError> {
        let claims: RefreshClaims = self
            .verifier
            .verify(token, &refresh_audience(&self.service))?;
        if claims.token_use != REFRESH_TOKEN_USE || claims.sub.is_empty() {
            return Err(AuthError::InvalidToken("not a refresh token".into()));
        }
        Ok(claims)
    }

    /// The verified-token cache's weight, for tests of its bound.
    #[cfg(test)]
    pub(super) fn cached_bytes(&self) -> u64 {
        self.verified.run_pending_tasks();
        self.verified.weighted_size()
    }
}

/// Cache entries live until their token's `exp`.
struct UntilExp;

impl moka::Expiry<String, Arc<AccessClaims>> for UntilExp {
    fn expire_after_create(
        &self,
        _token: &String,
        claims: &Arc<AccessClaims>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(claims.exp.saturating_sub(now_secs())))
    }
}

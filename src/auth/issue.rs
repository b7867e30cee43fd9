//! Signing tokens: what was granted goes into an access token, and a user who asked to stay
//! logged in gets a refresh token (a signed JWT too: berth keeps no session state).

use std::time::{Duration, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

use super::claims::{now_secs, AccessClaims, TokenResponse};
use super::keys::SigningKey;
use super::refresh::{refresh_audience, RefreshClaims, REFRESH_TOKEN_USE};
use super::scope::Scope;
use super::seal::{Sealer, UpstreamGrant};
use super::verify::MAX_TOKEN_BYTES;
use super::AuthError;

/// What one token carries, decided before anything is signed.
pub struct Grant<'a> {
    /// `None`: anonymous.
    pub subject: Option<&'a str>,
    pub access: Vec<Scope>,
    /// A passed-through upstream grant, sealed into the token, and how long upstream keeps it
    /// (the token expires no later).
    pub upstream: Option<(&'a UpstreamGrant, Duration)>,
    /// The subject's password fingerprint, when a refresh token is to be issued too.
    pub refresh: Option<String>,
}

pub struct Issuer {
    key: SigningKey,
    sealer: Sealer,
    issuer: String,
    service: String,
    token_ttl: Duration,
    refresh_ttl: Duration,
    rng: SystemRandom,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("service", &self.service)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    pub fn new(
        key: SigningKey,
        issuer: &str,
        service: &str,
        token_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Result<Self, AuthError> {
        Ok(Issuer {
            sealer: Sealer::new(&key)?,
            key,
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            token_ttl,
            refresh_ttl,
            rng: SystemRandom::new(),
        })
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// What seals grants into this issuer's tokens (and opens them on any node with its key).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Signs the access token of `grant`, and its refresh token when it has a subject and a
    /// fingerprint.
    pub fn sign(&self, grant: Grant<'_>) -> Result<TokenResponse, AuthError> {
        let now = now_secs();
        let jti = self.jti()?;
        let upg = match grant.upstream {
            Some((upstream, _)) => Some(self.sealer.seal(upstream, &jti)?),
            None => None,
        };
        let ttl = match grant.upstream {
            Some((_, lifetime)) => lifetime.min(self.token_ttl).as_secs().max(1),
            None => self.token_ttl.as_secs(),
        };
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: grant.subject.unwrap_or_default().to_owned(),
            aud: self.service.clone(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti,
            access: grant.access,
            upg,
        };
        let token = self.key.sign(&claims)?;
        // Sealed upstream tokens are large: a token no verifier would take is refused here.
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TokenTooLarge);
        }
        tracing::debug!(subject = ?grant.subject, granted = ?claims.access, "token issued");
        let refresh_token = match (grant.subject, grant.refresh) {
            (Some(subject), Some(pwf)) => Some(self.key.sign(&RefreshClaims {
                pwf,
                iss: self.issuer.clone(),
                sub: subject.to_owned(),
                aud: refresh_audience(&self.service),
                exp: now + self.refresh_ttl.as_secs(),
                nbf: now,
                iat: now,
                jti: self.jti()?,
                token_use: REFRESH_TOKEN_USE.to_owned(),
            })?),
            _ => None,
        };
        Ok(TokenResponse {
            access_token: token.clone(),
            token,
            expires_in: ttl,
            issued_at: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(now))
                .to_string(),
            refresh_token,
        })
    }

    /// A random token ID, so that every token is distinct (and could be revoked by ID).
    fn jti(&self) -> Result<String, AuthError> {
        let mut bytes = [0u8; 16];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| AuthError::Crypto("no randomness available".into()))?;
        Ok(hex::encode(bytes))
    }
}

//! The token service: authenticates a client, asks the [`Policy`] what it may have, has the
//! [`Issuer`] sign that into a Docker-spec bearer token; and, on the registry side, accepts
//! those tokens through the [`TokenVerifier`].
//!
//! Refresh tokens (OAuth2 `access_type=offline`, docker's "identity token") carry no access, a
//! `token_use` marker and a different audience, so no verifier (berth's or another
//! registry's) can take one for an access token; using one re-evaluates the policy and checks
//! that the user's password is still the one the token was earned with ([`super::refresh`]).
//!
//! The service is handed its signing key: reading or making key files is startup's job.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::SystemRandom;

use super::credentials::Credentials;
use super::issue::{Grant, Issuer};
use super::keys::SigningKey;
use super::login::Logins;
use super::policy::Policy;
use super::refresh::Fingerprints;
use super::scope::{Action, Scope};
use super::seal::UpstreamGrant;
use super::users::Htpasswd;
use super::verify::TokenVerifier;
use super::AuthError;
use crate::config::{AuthSettings, Projects};

pub use super::claims::{AccessClaims, TokenResponse};
pub use super::verify::MAX_TOKEN_BYTES;

pub struct TokenService {
    service: String,
    issuer: Issuer,
    verifier: TokenVerifier,
    logins: Logins,
    fingerprints: Fingerprints,
    policy: Policy,
    open: bool,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// The token service `auth` configures, signing with `key` (loaded from
    /// `auth.signing_key` at startup). Opens the htpasswd file named in `auth`.
    pub fn new(
        auth: &AuthSettings,
        projects: &Projects,
        key: SigningKey,
    ) -> Result<Self, AuthError> {
        let users = auth.htpasswd.as_deref().map(Htpasswd::open).transpose()?;
        Ok(TokenService {
            logins: Logins::new(users, &auth.login, &SystemRandom::new())?,
            fingerprints: Fingerprints::new(key.public_key().spki_der()),
            verifier: TokenVerifier::new(key.public_key(), &auth.issuer, &auth.service),
            issuer: Issuer::new(
                key,
                &auth.issuer,
                &auth.service,
                auth.token_ttl,
                auth.refresh_token_ttl,
            )?,
            service: auth.service.clone(),
            policy: Policy::new(auth, projects),
            open: false,
        })
    }

    /// The token service of an open mirror (no `[auth]`): no users, anonymous pull; it
    /// exists so that clients can pass their upstream credentials through. `key` is the one
    /// startup keeps in the data directory.
    pub fn open(key: SigningKey) -> Result<Self, AuthError> {
        let settings = AuthSettings {
            service: "berth".to_owned(),
            issuer: "berth".to_owned(),
            // Not read: the key is given.
            signing_key: PathBuf::new(),
            certificate: None,
            htpasswd: None,
            anonymous_pull: true,
            admins: Vec::new(),
            token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(3600),
            login: crate::config::LoginSettings::default(),
        };
        let mut service = TokenService::new(&settings, &Projects::default(), key)?;
        service.open = true;
        Ok(service)
    }

    /// The audience berth's tokens are for (`service` in challenges and token requests).
    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn signing_key(&self) -> &SigningKey {
        self.issuer.key()
    }

    /// Whether this is the token service of an open mirror (no `[auth]`): it has no users and
    /// exists so that clients can pass their upstream credentials through.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Checks a user's password (see [`super::login`] for the order of the checks).
    /// Wrong credentials are [`AuthError::InvalidCredentials`] whether or not the user exists;
    /// a caller that gives up on them reports it with [`TokenService::login_failed`].
    pub async fn authenticate(
        &self,
        credentials: &Credentials,
        address: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        self.logins
            .check(&credentials.username, credentials.password(), address)
            .await
    }

    /// Counts a failed login towards the throttle of its user name and address.
    pub fn login_failed(&self, username: &str, address: Option<IpAddr>) {
        self.logins.failed(username, address);
    }

    /// Whether `username` is one of berth's own users (whose wrong password must never be
    /// passed to an upstream), as of the last password check (no I/O).
    pub fn is_local_user(&self, username: &str) -> bool {
        self.logins
            .users()
            .is_some_and(|users| users.knew(username))
    }

    /// Signs a token granting `subject` (`None`: anonymous) what the policy allows of
    /// `scopes`; with `offline` and a subject, a refresh token too, tied to the subject's
    /// password as the htpasswd file has it now (a `stat`: call it off the async executor).
    pub fn issue(
        &self,
        subject: Option<&str>,
        scopes: &[Scope],
        offline: bool,
    ) -> Result<TokenResponse, AuthError> {
        let access = scopes
            .iter()
            .filter_map(|asked| self.policy.grant(subject, asked))
            .collect();
        let refresh = match subject {
            Some(subject) if offline => Some(self.password_fingerprint(subject)?),
            _ => None,
        };
        self.issuer.sign(Grant {
            subject,
            access,
            upstream: None,
            refresh,
        })
    }

    /// A token for a client that logged in with its upstream credentials: pull on `repos`
    /// (mirror names upstream accepted), carrying the upstream `grant` sealed, and expiring no
    /// later than that grant.
    pub fn issue_for_upstream(
        &self,
        subject: &str,
        repos: &[String],
        grant: &UpstreamGrant,
        lifetime: Duration,
    ) -> Result<TokenResponse, AuthError> {
        self.issuer.sign(Grant {
            subject: Some(subject),
            access: repos
                .iter()
                .map(|name| Scope::repository(name.clone(), &[Action::Pull]))
                .collect(),
            upstream: Some((grant, lifetime)),
            refresh: None,
        })
    }

    /// The identity id of a client's `credentials` for `upstream`: the same on every node that
    /// holds this signing key.
    pub fn identity_id(&self, upstream: &str, credentials: &Credentials) -> String {
        self.issuer
            .sealer()
            .identity_id(upstream, &credentials.username, credentials.password())
    }

    /// The upstream grant sealed into a verified access token, if it carries one. A grant that
    /// does not open (another key, altered) is an invalid token.
    pub fn upstream_grant(
        &self,
        claims: &AccessClaims,
    ) -> Result<Option<UpstreamGrant>, AuthError> {
        claims
            .upg
            .as_deref()
            .map(|sealed| self.issuer.sealer().open(sealed, &claims.jti))
            .transpose()
    }

    /// A new access token for the refresh token's user, granted by the policy as it is now.
    /// A user removed from the htpasswd file, or whose password changed since, can no longer
    /// refresh. Reads the htpasswd file when it changed: call it off the async executor.
    pub fn refresh(
        &self,
        refresh_token: &str,
        scopes: &[Scope],
    ) -> Result<TokenResponse, AuthError> {
        let claims = self.verifier.refresh(refresh_token)?;
        let hash = match self.logins.users() {
            Some(users) => users.entry(&claims.sub)?.hash,
            None => None,
        };
        match hash {
            Some(hash) if self.fingerprints.matches(&hash, &claims.pwf) => {}
            Some(_) => {
                return Err(AuthError::InvalidToken(
                    "the password changed since this token was issued; log in again".into(),
                ))
            }
            None => return Err(AuthError::InvalidCredentials),
        }
        self.issue(Some(&claims.sub), scopes, false)
    }

    /// Accepts an access token signed by berth for this service, checking its signature only
    /// the first time it is seen.
    pub fn verify_access(&self, token: &str) -> Result<Arc<AccessClaims>, AuthError> {
        self.verifier.access(token)
    }

    /// The fingerprint a refresh token for `user` carries; an unknown user gets none.
    fn password_fingerprint(&self, user: &str) -> Result<String, AuthError> {
        let users = self.logins.users().ok_or(AuthError::InvalidCredentials)?;
        let hash = users
            .entry(user)?
            .hash
            .ok_or(AuthError::InvalidCredentials)?;
        Ok(self.fingerprints.of(&hash))
    }
}

#[cfg(test)]
mod tests;

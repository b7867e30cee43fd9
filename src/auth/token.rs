//! The token service: authenticates a client, asks the [`Policy`] what it may have, and signs
//! that into a Docker-spec bearer token; and, on the registry side, accepts those tokens.
//!
//! Refresh tokens (OAuth2 `access_type=offline`, docker's "identity token") are signed JWTs
//! too, so berth keeps no session state. They carry no access, a `token_use` marker and a
//! different audience, so no verifier (berth's or another registry's) can take one for an
//! access token; using one re-evaluates the policy and checks that the user's password is
//! still the one the token was earned with ([`super::refresh`]).
//!
//! Verified access tokens are cached until their `exp`, keyed by the token itself: a client
//! sends the same token with every request of a pull, and its signature needs checking once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use moka::sync::Cache;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::keys::{SigningKey, Verifier};
use super::login::Logins;
use super::policy::Policy;
use super::refresh::{Fingerprints, RefreshClaims, REFRESH_TOKEN_USE};
use super::scope::{Action, Scope};
use super::users::Htpasswd;
use super::AuthError;
use crate::config::{AuthSettings, ProjectSettings};

/// Memory for verified tokens. A token is a few hundred bytes to a few KiB (with
/// [`scope::MAX_SCOPES`](super::scope::MAX_SCOPES) scopes at most): tens of thousands fit.
const VERIFIED_CACHE_BYTES: u64 = 32 << 20;
/// Longest bearer token accepted for verification: one carrying the most scopes berth grants,
/// with long names, is well under it.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// The claims of an access token, as the Docker token spec defines them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The authenticated user; empty for anonymous tokens (as Distribution's token servers do).
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    /// What was granted. Required, so a token without it (a refresh token) does not parse.
    pub access: Vec<Scope>,
    /// For a client whose own upstream credentials were passed through: the opaque id its
    /// upstream grant is kept under, server-side. Never the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<String>,
}

impl AccessClaims {
    /// The user the token was issued to; `None` for an anonymous token.
    pub fn subject(&self) -> Option<&str> {
        Some(self.sub.as_str()).filter(|s| !s.is_empty())
    }

    /// The bytes the claims own on the heap, for the verified-token cache's budget.
    pub fn heap_bytes(&self) -> usize {
        let scopes: usize = self
            .access
            .iter()
            .map(|s| {
                64 + s.resource_type.len()
                    + s.name.len()
                    + s.actions.len() * std::mem::size_of::<Action>()
            })
            .sum();
        std::mem::size_of::<Self>()
            + self.iss.len()
            + self.sub.len()
            + self.aud.len()
            + self.jti.len()
            + self.upid.as_ref().map_or(0, String::len)
            + scopes
    }

    /// Whether the token grants `action` on the resource (`*` grants every action).
    pub fn allows(&self, resource_type: &str, name: &str, action: Action) -> bool {
        self.access.iter().any(|granted| {
            granted.resource_type == resource_type
                && granted.name == name
                && granted.has_action(action)
        })
    }
}

/// What an access token is parsed as before it is accepted: the marker must be absent.
#[derive(Deserialize)]
struct AccessTokenBody {
    #[serde(flatten)]
    claims: AccessClaims,
    #[serde(default)]
    token_use: Option<String>,
}

/// The token endpoint's JSON answer. `token` and `access_token` are the same: the first is
/// the Docker spec's, the second OAuth2's, and clients read either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    /// RFC 3339.
    pub issued_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

pub struct TokenService {
    service: String,
    issuer: String,
    key: SigningKey,
    verifier: Verifier,
    logins: Logins,
    fingerprints: Fingerprints,
    policy: Policy,
    token_ttl: Duration,
    refresh_ttl: Duration,
    verified: Cache<String, Arc<AccessClaims>>,
    rng: SystemRandom,
    open: bool,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// Loads the signing key (and certificate) and the htpasswd file named in `auth`.
    pub fn new(auth: &AuthSettings, projects: &[ProjectSettings]) -> Result<Self, AuthError> {
        let key = SigningKey::load(&auth.signing_key, auth.certificate.as_deref())?;
        Self::with_key(auth, projects, key)
    }

    /// Like [`TokenService::new`] with a key already loaded (tests, key rotation).
    pub fn with_key(
        auth: &AuthSettings,
        projects: &[ProjectSettings],
        key: SigningKey,
    ) -> Result<Self, AuthError> {
        let users = auth.htpasswd.as_deref().map(Htpasswd::open).transpose()?;
        let verifier = Verifier::new([key.public_key().clone()], auth.issuer.clone());
        let rng = SystemRandom::new();
        Ok(TokenService {
            logins: Logins::new(users, &auth.login, &rng)?,
            fingerprints: Fingerprints::new(key.public_key().spki_der()),
            service: auth.service.clone(),
            issuer: auth.issuer.clone(),
            key,
            verifier,
            policy: Policy::new(auth, projects),
            token_ttl: auth.token_ttl,
            refresh_ttl: auth.refresh_token_ttl,
            verified: Cache::builder()
                .max_capacity(VERIFIED_CACHE_BYTES)
                .weigher(|token: &String, claims: &Arc<AccessClaims>| {
                    crate::memory::weight(token.len() + claims.heap_bytes())
                })
                .expire_after(UntilExp)
                .build(),
            rng,
            open: false,
        })
    }

    /// The audience berth's tokens are for (`service` in challenges and token requests).
    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Checks a user's password (see [`super::login`] for the order of the checks).
    /// Wrong credentials are [`AuthError::InvalidCredentials`] whether or not the user exists;
    /// a caller that gives up on them reports it with [`TokenService::login_failed`].
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        self.logins.check(username, password, address).await
    }

    /// Counts a failed login towards the throttle of its user name and address.
    pub fn login_failed(&self, username: &str, address: Option<IpAddr>) {
        self.logins.failed(username, address);
    }

    /// The user name and password of an `Authorization: Basic …` header.
    pub fn parse_basic(header: &str) -> Result<(String, String), AuthError> {
        let (scheme, encoded) =
            header
                .trim()
                .split_once(' ')
                .ok_or(AuthError::MalformedCredentials(
                    "expected Basic credentials",
                ))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(AuthError::MalformedCredentials(
                "only Basic credentials are accepted here",
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| AuthError::MalformedCredentials("Basic credentials are not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| AuthError::MalformedCredentials("Basic credentials are not UTF-8"))?;
        let (username, password) =
            decoded
                .split_once(':')
                .ok_or(AuthError::MalformedCredentials(
                    "Basic credentials without ':'",
                ))?;
        Ok((username.to_owned(), password.to_owned()))
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
        let access: Vec<Scope> = scopes
            .iter()
            .filter_map(|asked| self.policy.grant(subject, asked))
            .collect();
        let now = now_secs();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: subject.unwrap_or_default().to_owned(),
            aud: self.service.clone(),
            exp: now + self.token_ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: self.jti()?,
            access,
            upid: None,
        };
        let token = self.key.sign(&claims)?;
        tracing::debug!(subject = ?subject, asked = scopes.len(), granted = ?claims.access, "token issued");
        let refresh_token = match subject {
            Some(subject) if offline => Some(self.key.sign(&RefreshClaims {
                pwf: self.password_fingerprint(subject)?,
                iss: self.issuer.clone(),
                sub: subject.to_owned(),
                aud: self.refresh_audience(),
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
            expires_in: self.token_ttl.as_secs(),
            issued_at: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(now))
                .to_string(),
            refresh_token,
        })
    }

    /// A token for a client that logged in with its upstream credentials: pull on `repos`
    /// (mirror names upstream accepted), tied to the upstream grant kept under `upid`, and
    /// expiring no later than that grant.
    pub fn issue_for_upstream(
        &self,
        subject: &str,
        repos: &[String],
        upid: &str,
        lifetime: Duration,
    ) -> Result<TokenResponse, AuthError> {
        let now = now_secs();
        let ttl = lifetime.min(self.token_ttl).as_secs().max(1);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.service.clone(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: self.jti()?,
            access: repos
                .iter()
                .map(|name| Scope::repository(name.clone(), &[Action::Pull]))
                .collect(),
            upid: Some(upid.to_owned()),
        };
        let token = self.key.sign(&claims)?;
        Ok(TokenResponse {
            access_token: token.clone(),
            token,
            expires_in: ttl,
            issued_at: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(now))
                .to_string(),
            refresh_token: None,
        })
    }

    /// Whether `username` is one of berth's own users (whose wrong password must never be
    /// passed to an upstream), as of the last password check (no I/O).
    pub fn is_local_user(&self, username: &str) -> bool {
        self.logins
            .users()
            .is_some_and(|users| users.knew(username))
    }

    /// Whether this is the token service of an open mirror (no `[auth]`): it has no users and
    /// exists so that clients can pass their upstream credentials through.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The token service of an open mirror: a key kept in `data_dir` (made on first start),
    /// no users, anonymous pull.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, AuthError> {
        let key_path = data_dir.join("token.key");
        if !key_path.exists() {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let pem = super::keys::generate_ec_pem()?;
            std::fs::create_dir_all(data_dir).map_err(|source| AuthError::Io {
                path: data_dir.to_owned(),
                source,
            })?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .and_then(|mut f| f.write_all(pem.as_bytes()))
                .map_err(|source| AuthError::Io {
                    path: key_path.clone(),
                    source,
                })?;
        }
        let settings = AuthSettings {
            service: "berth".to_owned(),
            issuer: "berth".to_owned(),
            signing_key: key_path,
            certificate: None,
            htpasswd: None,
            anonymous_pull: true,
            admins: Vec::new(),
            token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(3600),
            login: crate::config::LoginSettings::default(),
        };
        let mut service = TokenService::new(&settings, &[])?;
        service.open = true;
        Ok(service)
    }

    /// A new access token for the refresh token's user, granted by the policy as it is now.
    /// A user removed from the htpasswd file, or whose password changed since, can no longer
    /// refresh. Reads the htpasswd file when it changed: call it off the async executor.
    pub fn refresh(
        &self,
        refresh_token: &str,
        scopes: &[Scope],
    ) -> Result<TokenResponse, AuthError> {
        let claims: RefreshClaims = self
            .verifier
            .verify(refresh_token, &self.refresh_audience())?;
        if claims.token_use != REFRESH_TOKEN_USE || claims.sub.is_empty() {
            return Err(AuthError::InvalidToken("not a refresh token".into()));
        }
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

    /// The fingerprint a refresh token for `user` carries; an unknown user gets none.
    fn password_fingerprint(&self, user: &str) -> Result<String, AuthError> {
        let users = self.logins.users().ok_or(AuthError::InvalidCredentials)?;
        let hash = users
            .entry(user)?
            .hash
            .ok_or(AuthError::InvalidCredentials)?;
        Ok(self.fingerprints.of(&hash))
    }

    /// Refresh tokens are for berth's token endpoint only, never for a registry.
    fn refresh_audience(&self) -> String {
        format!("{}:refresh", self.service)
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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::tests::{key, EC_SEC1};
    use crate::auth::policy::tests::{projects, settings};
    use crate::auth::scope::Action::{All, Delete, Pull, Push};
    use std::io::Write;

    struct Fixture {
        service: TokenService,
        htpasswd: tempfile::NamedTempFile,
    }

    fn fixture() -> Fixture {
        let mut htpasswd = tempfile::NamedTempFile::new().unwrap();
        for (user, password) in [("dave", "dev"), ("gina", "guest"), ("root", "admin")] {
            writeln!(htpasswd, "{user}:{}", bcrypt::hash(password, 4).unwrap()).unwrap();
        }
        let mut auth = settings(true);
        auth.service = "registry.test".into();
        auth.issuer = "berth-issuer".into();
        auth.htpasswd = Some(htpasswd.path().to_path_buf());
        let service = TokenService::with_key(&auth, &projects(), key(EC_SEC1)).unwrap();
        Fixture { service, htpasswd }
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[tokio::test]
    async fn basic_authentication() {
        let f = fixture();
        let s = &f.service;
        let check = |header: &str| {
            let parsed = TokenService::parse_basic(header);
            async move {
                let (user, password) = parsed?;
                s.authenticate(&user, &password, None).await.map(|()| user)
            }
        };
        assert_eq!(check(&basic("dave", "dev")).await.unwrap(), "dave");
        for (user, password) in [("dave", "wrong"), ("nobody", "dev"), ("", "")] {
            assert!(matches!(
                check(&basic(user, password)).await,
                Err(AuthError::InvalidCredentials)
            ));
        }
        for malformed in ["Basic", "Basic !!!", "Bearer abc", "Basic ZGF2ZQ=="] {
            assert!(
                matches!(
                    check(malformed).await,
                    Err(AuthError::MalformedCredentials(_))
                ),
                "{malformed}"
            );
        }
    }

    #[test]
    fn issued_tokens_carry_the_spec_claims() {
        let f = fixture();
        let s = &f.service;
        let asked = [
            Scope::repository("secret/app", &[Pull, Push]),
            Scope::repository("library/alpine", &[Pull, Push]),
            Scope::repository("other/private", &[Pull]),
        ];
        let response = s.issue(Some("dave"), &asked, false).unwrap();
        assert_eq!(response.token, response.access_token);
        assert_eq!(response.expires_in, 300);
        assert!(response.refresh_token.is_none());
        assert!(humantime::parse_rfc3339(&response.issued_at).is_ok());

        let claims = s.verify_access(&response.token).unwrap();
        assert_eq!(claims.iss, "berth-issuer");
        assert_eq!(claims.aud, "registry.test");
        assert_eq!(claims.subject(), Some("dave"));
        assert_eq!(claims.exp, claims.iat + 300);
        assert_eq!(claims.jti.len(), 32);
        assert_eq!(
            claims.access,
            // A push asked on the mirror grants nothing there, not even pull.
            [
                Scope::repository("secret/app", &[Pull, Push]),
                Scope::repository("other/private", &[Pull]),
            ]
        );
        assert!(claims.allows("repository", "secret/app", Push));
        assert!(!claims.allows("repository", "secret/app", Delete));
        assert!(!claims.allows("repository", "library/alpine", Push));
        assert!(!claims.allows("repository", "secret/other", Pull));
        assert!(!claims.allows("registry", "catalog", All));

        // Each token is distinct.
        let again = s.issue(Some("dave"), &asked, false).unwrap();
        assert_ne!(again.token, response.token);
    }

    #[test]
    fn anonymous_tokens() {
        let f = fixture();
        let s = &f.service;
        let response = s
            .issue(
                None,
                &[Scope::repository("secret/app", &[Pull]), Scope::catalog()],
                true,
            )
            .unwrap();
        // Anonymous clients get no refresh token, whatever they ask.
        assert!(response.refresh_token.is_none());
        let claims = s.verify_access(&response.token).unwrap();
        assert_eq!(claims.subject(), None);
        assert_eq!(claims.access, [Scope::catalog()]);
        assert!(claims.allows("registry", "catalog", All));
    }

    #[test]
    fn verified_tokens_are_cached() {
        let f = fixture();
        let s = &f.service;
        let token = s.issue(Some("gina"), &[], false).unwrap().token;
        let first = s.verify_access(&token).unwrap();
        let second = s.verify_access(&token).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn verified_tokens_are_bounded_in_bytes_and_length() {
        let f = fixture();
        let s = &f.service;
        // A token with many scopes weighs what it carries, not one entry like any other.
        let many: Vec<Scope> = (0..64)
            .map(|i| Scope::repository(format!("library/{i:0>200}"), &[Pull]))
            .collect();
        let token = s.issue(None, &many, false).unwrap().token;
        let claims = s.verify_access(&token).unwrap();
        assert!(claims.heap_bytes() > 64 * 200, "{}", claims.heap_bytes());
        s.verified.run_pending_tasks();
        assert!(s.verified.weighted_size() as usize >= token.len() + claims.heap_bytes());
        assert!(s.verified.weighted_size() <= VERIFIED_CACHE_BYTES);
        // A token too long to be one of berth's is refused before any work.
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            s.verify_access(&long),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn refresh_tokens_refresh_and_nothing_else() {
        let f = fixture();
        let s = &f.service;
        let asked = [Scope::repository("secret/app", &[Pull, Push])];
        let response = s.issue(Some("dave"), &asked, true).unwrap();
        let refresh = response.refresh_token.unwrap();

        // A refresh token is not an access token, even to a verifier that skips the marker.
        assert!(matches!(
            s.verify_access(&refresh),
            Err(AuthError::InvalidToken(_))
        ));
        // An access token is not a refresh token.
        assert!(matches!(
            s.refresh(&response.token, &asked),
            Err(AuthError::InvalidToken(_))
        ));

        let refreshed = s.refresh(&refresh, &asked).unwrap();
        assert!(refreshed.refresh_token.is_none());
        let claims = s.verify_access(&refreshed.token).unwrap();
        assert_eq!(claims.subject(), Some("dave"));
        assert!(claims.allows("repository", "secret/app", Push));

        // A new password revokes the refresh tokens issued before it, not those after.
        let mut file = std::fs::File::create(f.htpasswd.path()).unwrap();
        writeln!(file, "dave:{}", bcrypt::hash("dev2", 4).unwrap()).unwrap();
        drop(file);
        assert!(matches!(
            s.refresh(&refresh, &asked),
            Err(AuthError::InvalidToken(_))
        ));
        let after = s.issue(Some("dave"), &asked, true).unwrap();
        let refresh_after = after.refresh_token.unwrap();
        assert!(s.refresh(&refresh_after, &asked).is_ok());

        // Removing the user revokes their refresh tokens. (The same size as the file before:
        // let the modification time move on.)
        std::thread::sleep(Duration::from_millis(20));
        let mut file = std::fs::File::create(f.htpasswd.path()).unwrap();
        writeln!(file, "gina:{}", bcrypt::hash("guest", 4).unwrap()).unwrap();
        drop(file);
        assert!(matches!(
            s.refresh(&refresh_after, &asked),
            Err(AuthError::InvalidCredentials)
        ));
        assert!(matches!(
            s.refresh(&refresh, &asked),
            Err(AuthError::InvalidCredentials)
        ));
    }

    #[test]
    fn forged_refresh_claims_are_rejected_as_access_tokens() {
        // Even a refresh-marked token with the service audience and an access list is refused.
        let f = fixture();
        let s = &f.service;
        #[derive(Serialize)]
        struct Marked<'a> {
            #[serde(flatten)]
            claims: &'a AccessClaims,
            token_use: &'a str,
        }
        let now = now_secs();
        let claims = AccessClaims {
            iss: "berth-issuer".into(),
            sub: "dave".into(),
            aud: "registry.test".into(),
            exp: now + 60,
            nbf: now,
            iat: now,
            jti: "x".into(),
            access: vec![Scope::repository("secret/app", &[Pull])],
            upid: None,
        };
        let token = s
            .signing_key()
            .sign(&Marked {
                claims: &claims,
                token_use: REFRESH_TOKEN_USE,
            })
            .unwrap();
        assert!(matches!(
            s.verify_access(&token),
            Err(AuthError::InvalidToken(_))
        ));
        // The same claims without the marker are fine (the control).
        assert!(s
            .verify_access(&s.signing_key().sign(&claims).unwrap())
            .is_ok());
    }

    #[test]
    fn expired_and_foreign_tokens_are_rejected() {
        let f = fixture();
        let s = &f.service;
        let now = now_secs();
        let mut claims = AccessClaims {
            iss: "berth-issuer".into(),
            sub: "dave".into(),
            aud: "registry.test".into(),
            exp: now - 120,
            nbf: now - 400,
            iat: now - 400,
            jti: "x".into(),
            access: vec![],
            upid: None,
        };
        let expired = s.signing_key().sign(&claims).unwrap();
        assert!(matches!(
            s.verify_access(&expired),
            Err(AuthError::InvalidToken(_))
        ));
        claims.exp = now + 60;
        claims.aud = "someone-else".into();
        let foreign = s.signing_key().sign(&claims).unwrap();
        assert!(matches!(
            s.verify_access(&foreign),
            Err(AuthError::InvalidToken(_))
        ));
        claims.aud = "registry.test".into();
        claims.iss = "mallory".into();
        let forged = s.signing_key().sign(&claims).unwrap();
        assert!(matches!(
            s.verify_access(&forged),
            Err(AuthError::InvalidToken(_))
        ));
        assert!(matches!(
            s.verify_access("garbage"),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[tokio::test]
    async fn without_htpasswd_nobody_logs_in() {
        let auth = settings(true);
        let s = TokenService::with_key(&auth, &projects(), key(EC_SEC1)).unwrap();
        assert!(matches!(
            s.authenticate("root", "admin", None).await,
            Err(AuthError::InvalidCredentials)
        ));
        assert!(s.issue(None, &[], false).is_ok());
    }
}

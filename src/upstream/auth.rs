//! Upstream authentication: learn the scheme from the upstream's challenge, fetch bearer tokens
//! from whatever realm it names, and cache them until shortly before they expire.
//!
//! Tokens are cached per (scope, identity), so a token obtained for one identity is never
//! presented for another. Concurrent requests for the same key share one token fetch.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use moka::future::Cache;
use serde::Deserialize;

use super::challenge::{self, Scheme};
use super::error::UpstreamError;
use crate::config::Secret;

/// Spec default when a token response carries no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Refresh a token this long before upstream says it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Memory for upstream tokens (Docker Hub's are about 1 KiB; a passed-through client adds one
/// per repository it pulls).
const TOKEN_CACHE_BYTES: u64 = 16 << 20;
/// A token response is a small JSON object; anything larger is not read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// Who berth speaks as, upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Anonymous,
    /// The credentials configured for this upstream.
    Site,
    /// A client's own upstream credentials, passed through: an opaque id, never the secret.
    /// Its tokens exist only if the client logged in through berth's token endpoint, here or
    /// on another node (whose token carried them sealed, and were [adopted](Authenticator::adopt)).
    Client(String),
}

/// A token upstream's token service issued for a client's own credentials: what to send, and
/// for how long upstream accepts it. It travels (sealed) in berth's token, so that every node
/// can act for the client.
#[derive(Clone)]
pub struct ClientToken {
    /// The `Authorization` header value (`Bearer …`).
    pub authorization: Arc<str>,
    pub lifetime: Duration,
}

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientToken")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// How the upstream wants to be authenticated, as learned from its last challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthScheme {
    Unknown,
    Open,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Clone)]
struct CachedToken {
    header: Arc<str>,
    lifetime: Duration,
}

struct TokenExpiry;

impl moka::Expiry<(String, Identity), CachedToken> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &(String, Identity),
        value: &CachedToken,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

pub struct Authenticator {
    upstream: String,
    credentials: Option<Credentials>,
    scheme: RwLock<AuthScheme>,
    tokens: Cache<(String, Identity), CachedToken>,
}

impl Authenticator {
    pub fn new(upstream: &str, credentials: Option<Credentials>) -> Self {
        Authenticator {
            upstream: upstream.to_owned(),
            credentials,
            scheme: RwLock::new(AuthScheme::Unknown),
            tokens: Cache::builder()
                .max_capacity(TOKEN_CACHE_BYTES)
                .weigher(
                    |(scope, identity): &(String, Identity), token: &CachedToken| {
                        let id = match identity {
                            Identity::Client(id) => id.len(),
                            Identity::Anonymous | Identity::Site => 0,
                        };
                        crate::memory::weight(scope.len() + id + token.header.len())
                    },
                )
                .expire_after(TokenExpiry)
                .build(),
        }
    }

    /// Who berth speaks as when the client brought no credentials of its own.
    pub fn default_identity(&self) -> Identity {
        if self.credentials.is_some() {
            Identity::Site
        } else {
            Identity::Anonymous
        }
    }

    fn current_scheme(&self) -> AuthScheme {
        self.scheme
            .read()
            .map(|s| s.clone())
            .unwrap_or(AuthScheme::Unknown)
    }

    /// The `Authorization` header to send for `scope`, if the upstream is known to want one.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        scope: &str,
        identity: &Identity,
    ) -> Result<Option<Arc<str>>, UpstreamError> {
        match (self.current_scheme(), identity) {
            (AuthScheme::Unknown | AuthScheme::Open, _) => Ok(None),
            (_, Identity::Client(_)) => {
                let key = (scope.to_owned(), identity.clone());
                match self.tokens.get(&key).await {
                    Some(token) => Ok(Some(token.header)),
                    None => Err(UpstreamError::Unauthorized {
                        upstream: self.upstream.clone(),
                        reason: "no upstream grant for these credentials and this repository; log in again".into(),
                    }),
                }
            }
            (AuthScheme::Basic, _) => Ok(self
                .credentials
                .as_ref()
                .map(|c| Arc::from(c.basic_header()))),
            (AuthScheme::Bearer { realm, service }, _) => {
                let key = (scope.to_owned(), identity.clone());
                let fetched = self
                    .tokens
                    .try_get_with(
                        key,
                        self.fetch_token(
                            http,
                            &realm,
                            service.as_deref(),
                            scope,
                            self.credentials
                                .as_ref()
                                .filter(|_| *identity == Identity::Site),
                        ),
                    )
                    .await
                    .map_err(|e: Arc<UpstreamError>| self.unshare(e))?;
                Ok(Some(fetched.header))
            }
        }
    }

    /// Learns from a 401's `WWW-Authenticate` header and drops the token that was refused.
    /// Returns false when the challenge offers nothing berth can answer.
    pub async fn learn(&self, header: Option<&str>, scope: &str, identity: &Identity) -> bool {
        self.tokens
            .invalidate(&(scope.to_owned(), identity.clone()))
            .await;
        self.learn_scheme(header)
    }

    /// Learns the scheme from a 401's `WWW-Authenticate` header, dropping no token. Returns
    /// false when the challenge offers nothing berth can answer.
    pub fn learn_scheme(&self, header: Option<&str>) -> bool {
        let challenges = header.map(challenge::parse).unwrap_or_default();
        let bearer = challenges.iter().find(|c| c.scheme == Scheme::Bearer);
        let learned = if let Some(realm) = bearer.and_then(|c| c.param("realm")) {
            AuthScheme::Bearer {
                realm: realm.to_owned(),
                service: bearer.and_then(|c| c.param("service")).map(str::to_owned),
            }
        } else if challenges.iter().any(|c| c.scheme == Scheme::Basic) && self.credentials.is_some()
        {
            AuthScheme::Basic
        } else {
            return false;
        };
        if let Ok(mut scheme) = self.scheme.write() {
            *scheme = learned;
        }
        true
    }

    /// Records that the upstream answered without asking for credentials.
    pub fn mark_open_if_unknown(&self) {
        if let Ok(mut scheme) = self.scheme.write() {
            if *scheme == AuthScheme::Unknown {
                *scheme = AuthScheme::Open;
            }
        }
    }

    /// Exchanges a client's credentials for a token for `scope` at the upstream's realm and
    /// keeps it (only the token) under `identity`. The scheme must be known (Bearer).
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        scope: &str,
        credentials: &Credentials,
        identity: &Identity,
    ) -> Result<ClientToken, UpstreamError> {
        let AuthScheme::Bearer { realm, service } = self.current_scheme() else {
            return Err(UpstreamError::Unauthorized {
                upstream: self.upstream.clone(),
                reason:
                    "this upstream does not use bearer tokens; credentials cannot be passed through"
                        .into(),
            });
        };
        let token = self
            .fetch_token(http, &realm, service.as_deref(), scope, Some(credentials))
            .await?;
        let exchanged = ClientToken {
            authorization: Arc::clone(&token.header),
            lifetime: token.lifetime,
        };
        self.tokens
            .insert((scope.to_owned(), identity.clone()), token)
            .await;
        Ok(exchanged)
    }

    /// Keeps a client's token for `scope` (exchanged by another node, or before a restart)
    /// under `identity`, unless one is kept already: that one is as good, and was checked here.
    pub async fn adopt(&self, scope: &str, identity: &Identity, token: &ClientToken) {
        if token.lifetime.is_zero() || !matches!(identity, Identity::Client(_)) {
            return;
        }
        self.tokens
            .entry((scope.to_owned(), identity.clone()))
            .or_insert_with(async {
                CachedToken {
                    header: Arc::clone(&token.authorization),
                    lifetime: token.lifetime,
                }
            })
            .await;
    }

    pub fn scheme_known(&self) -> bool {
        self.current_scheme() != AuthScheme::Unknown
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<CachedToken, UpstreamError> {
        let mut url = url::Url::parse(realm).map_err(|e| {
            UpstreamError::protocol(&self.upstream, format!("token realm {realm:?}: {e}"))
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            // No scope: a login check, as `docker login` makes.
            if !scope.is_empty() {
                query.append_pair("scope", scope);
            }
        }
        let mut request = http.get(url);
        if let Some(credentials) = credentials {
            request = request.header(reqwest::header::AUTHORIZATION, credentials.basic_header());
        }
        let response = request
            .send()
            .await
            .map_err(|e| UpstreamError::from_reqwest(&self.upstream, e))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(UpstreamError::TokenRefused {
                upstream: self.upstream.clone(),
                reason: super::error_reason(response).await,
            });
        }
        if !status.is_success() {
            return Err(super::status_error(&self.upstream, response, "token").await);
        }
        let body = super::read_limited(
            &self.upstream,
            response,
            MAX_TOKEN_RESPONSE_BYTES,
            "token response",
        )
        .await?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            UpstreamError::protocol(&self.upstream, format!("token response is not JSON: {e}"))
        })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                UpstreamError::protocol(&self.upstream, "token response has no token")
            })?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok(CachedToken {
            header: Arc::from(format!("Bearer {token}")),
            lifetime: lifetime.saturating_sub(EXPIRY_MARGIN.min(lifetime / 10)),
        })
    }

    /// moka shares one error among all waiters; each gets its own copy.
    fn unshare(&self, shared: Arc<UpstreamError>) -> UpstreamError {
        Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str, secs: u64) -> ClientToken {
        ClientToken {
            authorization: Arc::from(format!("Bearer {text}")),
            lifetime: Duration::from_secs(secs),
        }
    }

    #[tokio::test]
    async fn an_adopted_token_answers_for_its_identity_only_and_never_replaces_one() {
        let auth = Authenticator::new("docker.io", None);
        assert!(auth.learn_scheme(Some(
            "Bearer realm=\"http://127.0.0.1:1/token\",service=\"registry\""
        )));
        let http = reqwest::Client::new();
        let scope = "repository:private/secret:pull";
        let alice = Identity::Client("alice-id".into());
        let bob = Identity::Client("bob-id".into());

        auth.adopt(scope, &alice, &token("a1", 60)).await;
        // Another node's token for the same identity: the one kept here stays.
        auth.adopt(scope, &alice, &token("a2", 60)).await;
        let header = auth.authorization(&http, scope, &alice).await.unwrap();
        assert_eq!(header.as_deref(), Some("Bearer a1"));
        // Nothing for another identity, or for another repository.
        for (scope, identity) in [(scope, &bob), ("repository:other:pull", &alice)] {
            let err = auth
                .authorization(&http, scope, identity)
                .await
                .unwrap_err();
            assert!(matches!(err, UpstreamError::Unauthorized { .. }), "{err}");
        }
        // An expired token, or one for berth's own identities, is not kept.
        auth.adopt(scope, &bob, &token("b", 0)).await;
        assert!(auth.authorization(&http, scope, &bob).await.is_err());
        auth.adopt(scope, &Identity::Site, &token("s", 60)).await;
        auth.adopt(scope, &Identity::Anonymous, &token("n", 60))
            .await;
        for identity in [Identity::Site, Identity::Anonymous] {
            assert!(auth
                .tokens
                .get(&(scope.to_owned(), identity))
                .await
                .is_none());
        }
    }
}

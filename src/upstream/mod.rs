//! The client side of the registry API: one [`Upstream`] per configured registry.
//!
//! It authenticates the way the upstream's challenge asks (see [`auth`]), follows redirects
//! itself (Docker Hub sends blobs to a CDN, which must not see the registry token), and turns
//! every non-success answer into an [`UpstreamError`]. It knows nothing about the cache.

pub mod auth;
pub mod challenge;
pub mod error;
pub mod health;
mod response;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use url::Url;

use self::auth::Authenticator;
pub use self::auth::{Credentials, Identity};
pub use self::error::{SetupError, UpstreamError};
use self::health::{Breaker, NotFound, Outcome};
pub(crate) use self::response::{error_reason, read_limited, status_error};
use self::response::{header_string, next_link_query};
use crate::config::UpstreamSettings;
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, Reference, RepoName};

const MAX_REDIRECTS: usize = 5;
/// Bound for requests whose whole answer is small (manifests, tags, tokens).
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A manifest as fetched: raw bytes plus what upstream said about them.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub body: Bytes,
    pub content_type: Option<String>,
    pub digest: Option<String>,
}

/// A manifest's identity as answered to a HEAD.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Option<String>,
    pub content_type: Option<String>,
}

/// A blob response whose body has not been read yet.
pub struct BlobResponse {
    pub content_length: Option<u64>,
    pub body: Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send + Unpin>,
}

/// A page of the tag list, passed through as upstream wrote it.
pub struct TagPage {
    pub body: Bytes,
    /// The `last` and `n` query values of upstream's `Link: <…>; rel="next"`, if any.
    pub next: Option<Vec<(String, String)>>,
}

pub struct Upstream {
    name: String,
    base: Url,
    http: reqwest::Client,
    auth: Authenticator,
    settings: UpstreamSettings,
    offline: bool,
    breaker: Breaker,
    not_found: NotFound,
}

impl Upstream {
    /// `offline` (global, or the upstream's own setting) stops every request before it is sent.
    pub fn new(settings: &UpstreamSettings, offline: bool) -> Result<Self, SetupError> {
        let base = settings.url.clone();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| SetupError::Client {
                upstream: settings.name.clone(),
                source,
            })?;
        let credentials = match (&settings.username, &settings.password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        let breaker = Breaker::new(
            &settings.name,
            settings.breaker_threshold,
            settings.breaker_cooldown,
        );
        Ok(Upstream {
            not_found: NotFound::new(settings.not_found_ttl, breaker.health()),
            breaker,
            name: settings.name.clone(),
            auth: Authenticator::new(&settings.name, credentials),
            base,
            http,
            settings: settings.clone(),
            offline: offline || settings.offline,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// This upstream's breaker and not-found counters, for `/metrics`.
    pub fn health(&self) -> &Arc<crate::metrics::UpstreamHealth> {
        self.breaker.health()
    }

    /// Who berth speaks as for a client without credentials of its own.
    pub fn default_identity(&self) -> Identity {
        self.auth.default_identity()
    }

    /// Exchanges a client's credentials at the upstream's token realm for pull on `repo`; the
    /// grant is kept under `identity` (the credentials are not). Returns how long it lasts.
    /// `repo: None` only checks the credentials (a login).
    pub async fn exchange(
        &self,
        repo: Option<&RepoName>,
        credentials: &Credentials,
        identity: &Identity,
    ) -> Result<Duration, UpstreamError> {
        if self.offline {
            return Err(UpstreamError::Offline {
                upstream: self.name.clone(),
            });
        }
        let permit = self.breaker.admit()?;
        let result = self.exchange_unguarded(repo, credentials, identity).await;
        permit.record(match &result {
            Ok(_) => Outcome::Alive,
            Err(e) => Outcome::of_error(e),
        });
        result
    }

    async fn exchange_unguarded(
        &self,
        repo: Option<&RepoName>,
        credentials: &Credentials,
        identity: &Identity,
    ) -> Result<Duration, UpstreamError> {
        if !self.auth.scheme_known() {
            // Learn the scheme from the upstream's challenge to an anonymous ping.
            let url = self.url("/v2/")?;
            let response = self.follow(Method::GET, url, None, None, true).await?;
            if response.status() == StatusCode::UNAUTHORIZED {
                let challenge = header_string(response.headers(), WWW_AUTHENTICATE.as_str());
                self.auth.learn(challenge.as_deref(), "", identity).await;
            } else {
                self.auth.mark_open_if_unknown();
            }
        }
        let scope = repo
            .map(|repo| format!("repository:{repo}:pull"))
            .unwrap_or_default();
        self.auth
            .exchange(&self.http, &scope, credentials, identity)
            .await
    }

    /// Docker Hub keeps official images under `library/`.
    pub fn uses_library_prefix(&self) -> bool {
        self.name == "docker.io"
    }

    fn url(&self, path: &str) -> Result<Url, UpstreamError> {
        self.base
            .join(path)
            .map_err(|e| UpstreamError::protocol(&self.name, format!("bad url {path}: {e}")))
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &str,
        identity: &Identity,
    ) -> Result<FetchedManifest, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let what = format!("manifest {repo}:{reference}");
        let response = self
            .request(
                Method::GET,
                &path,
                repo,
                Some(accept),
                true,
                identity,
                &what,
            )
            .await?;
        let content_type = header_string(response.headers(), CONTENT_TYPE.as_str());
        let digest = header_string(response.headers(), "docker-content-digest");
        if response
            .content_length()
            .is_some_and(|len| len > MAX_MANIFEST_BYTES as u64)
        {
            return Err(UpstreamError::protocol(
                &self.name,
                format!("manifest {repo}:{reference} is larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let body = self
            .read_limited(response, MAX_MANIFEST_BYTES, "manifest")
            .await?;
        Ok(FetchedManifest {
            body,
            content_type,
            digest,
        })
    }

    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &str,
        identity: &Identity,
    ) -> Result<ManifestHead, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let what = format!("manifest {repo}:{reference}");
        let response = self
            .request(
                Method::HEAD,
                &path,
                repo,
                Some(accept),
                true,
                identity,
                &what,
            )
            .await?;
        Ok(ManifestHead {
            digest: header_string(response.headers(), "docker-content-digest"),
            content_type: header_string(response.headers(), CONTENT_TYPE.as_str()),
        })
    }

    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        identity: &Identity,
    ) -> Result<BlobResponse, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let what = format!("blob {digest} in {repo}");
        let response = self
            .request(Method::GET, &path, repo, None, false, identity, &what)
            .await?;
        let content_length = response.content_length();
        let upstream = self.name.clone();
        let body = response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|e| UpstreamError::from_reqwest(&upstream, e)));
        Ok(BlobResponse {
            content_length,
            body: Box::new(body),
        })
    }

    /// The size of a blob, from a HEAD (no download).
    pub async fn head_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        identity: &Identity,
    ) -> Result<u64, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let what = format!("blob {digest} in {repo}");
        let response = self
            .request(Method::HEAD, &path, repo, None, true, identity, &what)
            .await?;
        header_string(response.headers(), "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| UpstreamError::protocol(&self.name, "blob HEAD without Content-Length"))
    }

    pub async fn get_tags(
        &self,
        repo: &RepoName,
        query: &[(String, String)],
        identity: &Identity,
    ) -> Result<TagPage, UpstreamError> {
        let mut url = self.url(&format!("/v2/{repo}/tags/list"))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let response = self
            .send(
                Method::GET,
                &path,
                repo,
                Some("application/json"),
                true,
                identity,
            )
            .await?;
        let response = self.check(response, &format!("repository {repo}")).await?;
        let next = header_string(response.headers(), "link").and_then(|l| next_link_query(&l));
        let body = self
            .read_limited(response, MAX_MANIFEST_BYTES, "tag list")
            .await?;
        Ok(TagPage { body, next })
    }

    /// Sends a request and checks its answer: a success, or the matching error. A 404 is
    /// remembered for `not_found_ttl` and answered from memory meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        method: Method,
        path: &str,
        repo: &RepoName,
        accept: Option<&str>,
        small: bool,
        identity: &Identity,
        what: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        if let Some(remembered) = self.not_found.recall(&self.name, path, what, identity) {
            return Err(remembered);
        }
        let response = self
            .send(method, path, repo, accept, small, identity)
            .await?;
        self.check(response, what)
            .await
            .inspect_err(|e| self.not_found.remember(path, identity, e))
    }

    /// Sends a request with authentication, answering one 401 challenge and following
    /// redirects, unless the breaker says upstream is down. Non-success statuses are returned
    /// as they are, for the caller to check.
    async fn send(
        &self,
        method: Method,
        path: &str,
        repo: &RepoName,
        accept: Option<&str>,
        small: bool,
        identity: &Identity,
    ) -> Result<reqwest::Response, UpstreamError> {
        if self.offline {
            return Err(UpstreamError::Offline {
                upstream: self.name.clone(),
            });
        }
        let permit = self.breaker.admit()?;
        let result = self
            .send_unguarded(method, path, repo, accept, small, identity)
            .await;
        permit.record(match &result {
            Ok(response) => Outcome::of_status(response.status().as_u16()),
            Err(e) => Outcome::of_error(e),
        });
        result
    }

    async fn send_unguarded(
        &self,
        method: Method,
        path: &str,
        repo: &RepoName,
        accept: Option<&str>,
        small: bool,
        identity: &Identity,
    ) -> Result<reqwest::Response, UpstreamError> {
        let scope = format!("repository:{repo}:pull");
        let url = self.url(path)?;
        let mut authorization = self
            .auth
            .authorization(&self.http, &scope, identity)
            .await?;
        let mut answered_challenge = false;
        loop {
            let response = self
                .follow(
                    method.clone(),
                    url.clone(),
                    accept,
                    authorization.as_deref(),
                    small,
                )
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                if authorization.is_none() {
                    self.auth.mark_open_if_unknown();
                }
                return Ok(response);
            }
            // A passed-through grant cannot be renewed here: the client must log in again.
            if answered_challenge || matches!(identity, Identity::Client(_)) {
                return Ok(response);
            }
            answered_challenge = true;
            let challenge = header_string(response.headers(), WWW_AUTHENTICATE.as_str());
            if !self
                .auth
                .learn(challenge.as_deref(), &scope, identity)
                .await
            {
                return Ok(response);
            }
            authorization = self
                .auth
                .authorization(&self.http, &scope, identity)
                .await?;
        }
    }

    /// One request, following up to [`MAX_REDIRECTS`] redirects. Credentials go only to the
    /// upstream's own host, never to a redirect target elsewhere (a CDN with a signed URL).
    async fn follow(
        &self,
        method: Method,
        mut url: Url,
        accept: Option<&str>,
        authorization: Option<&str>,
        small: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.http.request(method.clone(), url.clone());
            if small {
                request = request.timeout(SMALL_REQUEST_TIMEOUT);
            }
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(authorization) = authorization {
                if url.origin() == self.base.origin() {
                    request = request.header(AUTHORIZATION, authorization);
                }
            }
            let response = request
                .send()
                .await
                .map_err(|e| UpstreamError::from_reqwest(&self.name, e))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location =
                header_string(response.headers(), LOCATION.as_str()).ok_or_else(|| {
                    UpstreamError::protocol(&self.name, "redirect without a Location header")
                })?;
            url = url.join(&location).map_err(|e| {
                UpstreamError::protocol(&self.name, format!("bad redirect {location:?}: {e}"))
            })?;
        }
        Err(UpstreamError::protocol(
            &self.name,
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }

    /// Passes a success through; turns anything else into the matching error.
    async fn check(
        &self,
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(match status {
            StatusCode::NOT_FOUND => UpstreamError::NotFound {
                upstream: self.name.clone(),
                what: what.to_owned(),
                reason: error_reason(response).await,
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => UpstreamError::Unauthorized {
                upstream: self.name.clone(),
                reason: error_reason(response).await,
            },
            _ => status_error(&self.name, response, what).await,
        })
    }

    async fn read_limited(
        &self,
        response: reqwest::Response,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, UpstreamError> {
        read_limited(&self.name, response, limit, what).await
    }
}

/// Everything an upstream may be selected by, in one place.
#[derive(Clone)]
pub struct Upstreams {
    all: Arc<Vec<Arc<Upstream>>>,
}

impl Upstreams {
    pub fn new(settings: &[UpstreamSettings], offline: bool) -> Result<Self, SetupError> {
        let all = settings
            .iter()
            .map(|s| Upstream::new(s, offline).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Upstreams { all: Arc::new(all) })
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.all.iter().find(|u| u.name == name)
    }

    /// Shows every upstream's health in `metrics`.
    pub fn report_to(&self, metrics: &crate::metrics::Metrics) {
        for upstream in self.all.iter() {
            metrics.watch_upstream(Arc::clone(upstream.health()));
        }
    }

    /// The upstream for names without a host: the one named `docker.io`.
    pub fn default_upstream(&self) -> Option<&Arc<Upstream>> {
        self.by_name("docker.io")
    }
}

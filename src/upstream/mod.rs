//! The client side of the registry API: one [`Upstream`] per configured registry.
//!
//! An [`Upstream`] decides what is asked at all: nothing when offline, nothing while its
//! breaker is open (see [`health`]), and no second question within `not_found_ttl` for what it
//! answered 404 to. The asking itself goes through a [`RegistryApi`]: the HTTP client
//! ([`client::HttpClient`]) in production, an in-memory registry in tests. It knows nothing
//! about the cache.

pub mod api;
pub mod auth;
pub mod challenge;
mod client;
pub mod error;
#[cfg(test)]
pub mod fake;
pub mod health;
mod response;
mod slots;
mod tls;

use std::sync::Arc;

pub use self::api::{
    BlobResponse, FetchedManifest, ManifestHead, ReferrersPage, RegistryApi, TagPage,
};
pub use self::auth::{ClientToken, Credentials, Identity};
pub use self::client::HttpClient;
pub use self::error::{SetupError, UpstreamError};
use self::health::{Breaker, NotFound, Outcome};
pub(crate) use self::response::{error_reason, read_limited, status_error};
use crate::clock::Clock;
use crate::config::UpstreamSettings;
use crate::oci::{Digest, Reference, RepoName};

pub struct Upstream {
    name: String,
    api: Box<dyn RegistryApi>,
    settings: UpstreamSettings,
    offline: bool,
    default_identity: Identity,
    breaker: Breaker,
    not_found: NotFound,
}

/// The credentials configured for an upstream, if both halves are.
fn site_credentials(settings: &UpstreamSettings) -> Option<Credentials> {
    match (&settings.username, &settings.password) {
        (Some(username), Some(password)) => Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }),
        _ => None,
    }
}

impl Upstream {
    /// An upstream reached over HTTP. `offline` (global, or the upstream's own setting) stops
    /// every request before it is sent.
    pub fn new(
        settings: &UpstreamSettings,
        offline: bool,
        clock: &Clock,
    ) -> Result<Self, SetupError> {
        if let Some(warning) = settings.insecure_warning() {
            tracing::warn!("{warning}");
        }
        let api = HttpClient::new(settings)?;
        Ok(Self::with_api(settings, offline, Box::new(api), clock))
    }

    /// An upstream answered by `api`; the breaker reads `clock`.
    pub fn with_api(
        settings: &UpstreamSettings,
        offline: bool,
        api: Box<dyn RegistryApi>,
        clock: &Clock,
    ) -> Self {
        let breaker = Breaker::new(
            &settings.name,
            settings.breaker_threshold,
            settings.breaker_cooldown,
            clock.clone(),
        );
        Upstream {
            not_found: NotFound::new(settings.not_found_ttl, breaker.health()),
            breaker,
            name: settings.name.clone(),
            api,
            default_identity: match site_credentials(settings) {
                Some(_) => Identity::Site,
                None => Identity::Anonymous,
            },
            settings: settings.clone(),
            offline: offline || settings.offline,
        }
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

    /// Who berth speaks as for a client without credentials of its own: the site credentials
    /// configured for this upstream, else anonymous.
    pub fn default_identity(&self) -> Identity {
        self.default_identity.clone()
    }

    /// Docker Hub keeps official images under `library/`.
    pub fn uses_library_prefix(&self) -> bool {
        self.name == "docker.io"
    }

    /// Exchanges a client's credentials at the upstream's token realm for pull on `repo`; the
    /// token is kept under `identity` (the credentials are not), and returned.
    /// `repo: None` only checks the credentials (a login).
    pub async fn exchange(
        &self,
        repo: Option<&RepoName>,
        credentials: &Credentials,
        identity: &Identity,
    ) -> Result<ClientToken, UpstreamError> {
        self.guarded(self.api.exchange(repo, credentials, identity))
            .await
    }

    /// Keeps a client's token for `repo`, exchanged by another node, under `identity` unless
    /// one is kept already. Nothing is sent upstream.
    pub async fn adopt(&self, repo: &RepoName, identity: &Identity, token: &ClientToken) {
        self.api.adopt(repo, identity, token).await
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &str,
        identity: &Identity,
    ) -> Result<FetchedManifest, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let what = || format!("manifest {repo}:{reference}");
        self.remembering(&path, identity, what, || {
            self.api.get_manifest(repo, reference, accept, identity)
        })
        .await
    }

    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &str,
        identity: &Identity,
    ) -> Result<ManifestHead, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let what = || format!("manifest {repo}:{reference}");
        self.remembering(&path, identity, what, || {
            self.api.head_manifest(repo, reference, accept, identity)
        })
        .await
    }

    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        identity: &Identity,
    ) -> Result<BlobResponse, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let what = || format!("blob {digest} in {repo}");
        self.remembering(&path, identity, what, || {
            self.api.get_blob(repo, digest, identity)
        })
        .await
    }

    /// The size of a blob, from a HEAD (no download).
    pub async fn head_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        identity: &Identity,
    ) -> Result<u64, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let what = || format!("blob {digest} in {repo}");
        self.remembering(&path, identity, what, || {
            self.api.head_blob(repo, digest, identity)
        })
        .await
    }

    pub async fn get_tags(
        &self,
        repo: &RepoName,
        query: &[(String, String)],
        identity: &Identity,
    ) -> Result<TagPage, UpstreamError> {
        self.guarded(self.api.get_tags(repo, query, identity)).await
    }

    /// A page of the referrers of `subject`, as upstream's index (`query` empty for the first).
    /// A 404 (no referrers API, as in Distribution 2.8) is remembered like any other.
    pub async fn get_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        query: &[(String, String)],
        identity: &Identity,
    ) -> Result<ReferrersPage, UpstreamError> {
        let mut path = format!("/v2/{repo}/referrers/{subject}");
        for (i, (key, value)) in query.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str(&format!("{key}={value}"));
        }
        let what = || format!("referrers of {subject} in {repo}");
        self.remembering(&path, identity, what, || {
            self.api.get_referrers(repo, subject, query, identity)
        })
        .await
    }

    /// A call whose 404 is remembered for `not_found_ttl` per path and identity, and answered
    /// from memory meanwhile.
    async fn remembering<'a, T>(
        &'a self,
        path: &str,
        identity: &Identity,
        what: impl FnOnce() -> String,
        call: impl FnOnce() -> api::ApiFuture<'a, T>,
    ) -> Result<T, UpstreamError> {
        if let Some(remembered) = self.not_found.recall(&self.name, path, &what(), identity) {
            return Err(remembered);
        }
        self.guarded(call())
            .await
            .inspect_err(|e| self.not_found.remember(path, identity, e))
    }

    /// Runs a call unless upstream is offline or its breaker is open, and tells the breaker
    /// how it went: an answer (a 404, a 401) shows upstream alive, a timeout or a 5xx not.
    async fn guarded<T>(&self, call: api::ApiFuture<'_, T>) -> Result<T, UpstreamError> {
        if self.offline {
            return Err(UpstreamError::Offline {
                upstream: self.name.clone(),
            });
        }
        let permit = self.breaker.admit()?;
        let result = call.await;
        let health = self.health();
        crate::metrics::inc(match &result {
            Ok(_) => &health.requests_ok,
            Err(_) => &health.requests_failed,
        });
        match &result {
            // Waiting for one of berth's own slots tells nothing about upstream.
            Err(UpstreamError::Busy { .. }) => drop(permit),
            Ok(_) => permit.record(Outcome::Alive),
            Err(e) => permit.record(Outcome::of_error(e)),
        }
        result
    }
}

/// Everything an upstream may be selected by, in one place.
#[derive(Clone)]
pub struct Upstreams {
    all: Arc<Vec<Arc<Upstream>>>,
}

impl Upstreams {
    /// The configured upstreams, over HTTP.
    pub fn new(
        settings: &[UpstreamSettings],
        offline: bool,
        clock: &Clock,
    ) -> Result<Self, SetupError> {
        let all = settings
            .iter()
            .map(|s| Upstream::new(s, offline, clock))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_upstreams(all))
    }

    pub fn from_upstreams(all: Vec<Upstream>) -> Self {
        Upstreams {
            all: Arc::new(all.into_iter().map(Arc::new).collect()),
        }
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

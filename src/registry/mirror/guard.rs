//! Guarded repositories: content that upstream serves only with credentials.
//!
//! A repository is marked guarded (persistently) when upstream refuses berth's default
//! identity (site credentials, else anonymous) for it, when a passed-through client's fetch
//! finds that the default identity is refused, or when the default identity gets a 404 for
//! what the client's credentials find (upstreams that hide private repositories). A guarded
//! mark is checked again once per `guard_ttl`. When upstream fails instead of answering (a
//! timeout, a 5xx, its token service refusing), nothing is concluded: before a passed-through
//! fetch the repository is marked unsure, guarded until a check a little later gets an answer. Cached content of a guarded repository is served only to a client whose
//! own upstream grant upstream accepts for that repository, re-checked with a HEAD upstream
//! after `mirror.guard_ttl` and remembered per identity.
//! Public content stays shared and anonymous; blobs are content-addressed and shared on disk,
//! authorization is per repository and identity.

use std::hash::Hash;
use std::time::{Duration, Instant};

use moka::sync::Cache;

use super::{storage_error, upstream_error, Mirror};
use crate::auth::claims::now_secs;
use crate::auth::seal::UpstreamGrant;
use crate::auth::Credentials as ClientCredentials;
use crate::clock::Clock;
use crate::config::Secret;
use crate::memory::weight;
use crate::oci::media;
use crate::oci::ErrorCode;
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::error::RegistryError;
use crate::registry::namespace::MirrorRepo;
use crate::storage::index::Guarding;
use crate::upstream::{ClientToken, Credentials, Identity, Upstream, UpstreamError};

/// What to ask upstream when checking a caller's access.
pub enum Probe<'a> {
    Manifest(&'a Reference),
    Blob(&'a Digest),
    Tags,
}

impl Probe<'_> {
    /// The error code for "not there".
    fn not_found(&self) -> ErrorCode {
        match self {
            Probe::Manifest(_) => ErrorCode::ManifestUnknown,
            Probe::Blob(_) => ErrorCode::BlobUnknown,
            Probe::Tags => ErrorCode::NameUnknown,
        }
    }
}

/// What one check of the default identity's access concluded.
enum Verdict {
    Open,
    Guarded,
    /// Nothing to learn (a 404 for everyone): the record stands.
    Unchanged,
    /// Upstream failed instead of answering.
    Failed(UpstreamError),
}

pub struct Guard {
    /// (identity id, upstream/repo) that upstream accepted recently.
    authorized: Recent<(String, String)>,
    /// upstream/repo whose default-identity access was checked recently.
    classified: Recent<String>,
    /// Unsure upstream/repo whose check failed recently: asked again after a short while.
    retried: Recent<String>,
}

/// Keys seen within a TTL, by the mirror's clock. Each entry keeps the time it was recorded;
/// moka's own expiry (the same TTL, on its clock) only frees the memory of old entries.
struct Recent<K> {
    seen: Cache<K, Instant>,
    ttl: Duration,
    clock: Clock,
}

impl<K: Hash + Eq + Send + Sync + 'static> Recent<K> {
    fn new(ttl: Duration, clock: Clock, weigh: impl Fn(&K) -> u32 + Send + Sync + 'static) -> Self {
        Recent {
            seen: Cache::builder()
                .max_capacity(GUARD_CACHE_BYTES)
                .weigher(move |key: &K, _: &Instant| weigh(key))
                .time_to_live(ttl)
                .build(),
            ttl,
            clock,
        }
    }

    fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.seen
            .get(key)
            .is_some_and(|at| self.clock.now().saturating_duration_since(at) < self.ttl)
    }

    fn insert(&self, key: K) {
        self.seen.insert(key, self.clock.now());
    }
}

/// Memory for each of the guard's caches (entries are a repository name and an id).
const GUARD_CACHE_BYTES: u64 = 16 << 20;

/// How long an unsure repository waits before upstream is asked again (at most the guard TTL).
const UNSURE_RETRY: Duration = Duration::from_secs(30);

impl Guard {
    pub fn new(ttl: Duration, clock: Clock) -> Self {
        Guard {
            authorized: Recent::new(ttl, clock.clone(), |(id, repo): &(String, String)| {
                weight(id.len() + repo.len())
            }),
            classified: Recent::new(ttl, clock.clone(), |repo: &String| weight(repo.len())),
            retried: Recent::new(ttl.min(UNSURE_RETRY), clock, |repo: &String| {
                weight(repo.len())
            }),
        }
    }
}

fn repo_key(target: &MirrorRepo) -> String {
    format!("{}/{}", target.upstream.name(), target.repo)
}

/// The answer that makes a client present its upstream credentials.
pub fn needs_credentials(target: &MirrorRepo, reason: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unauthorized,
        format!(
            "upstream {} serves {} only with credentials: log in to this mirror with yours ({reason})",
            target.upstream.name(),
            target.repo
        ),
    )
}

impl Mirror {
    /// Exchanges a client's upstream credentials for a token on `target`'s repository, kept
    /// (never the credentials) under the identity id `id` and returned, to be sealed into the
    /// client's token.
    pub async fn passthrough_login(
        &self,
        target: &MirrorRepo,
        credentials: &ClientCredentials,
        id: &str,
    ) -> Result<ClientToken, RegistryError> {
        self.exchange(&target.upstream, Some(&target.repo), credentials, id)
            .await
    }

    /// Checks upstream credentials without a repository (`docker login` against the mirror).
    pub async fn verify_login(
        &self,
        upstream: &Upstream,
        credentials: &ClientCredentials,
        id: &str,
    ) -> Result<(), RegistryError> {
        self.exchange(upstream, None, credentials, id)
            .await
            .map(|_| ())
    }

    /// Speaks upstream as the caller whose token carries `grant` (opened by whichever node
    /// issued it): its identity, with the upstream token sealed for this repository unless this
    /// node keeps one for that identity already. Nothing is asked upstream.
    pub async fn act_for(&self, target: &mut MirrorRepo, grant: &UpstreamGrant) {
        target.identity = Identity::Client(grant.identity.clone());
        // A token for another upstream (a name resolved elsewhere since) is never sent here;
        // the caller is then asked to log in.
        if grant.upstream != target.upstream.name() {
            return;
        }
        let Some(token) = grant.token_for(target.repo.as_str()) else {
            return;
        };
        let token = ClientToken {
            authorization: token.authorization.as_str().into(),
            lifetime: Duration::from_secs(token.expires.saturating_sub(now_secs())),
        };
        target
            .upstream
            .adopt(&target.repo, &target.identity, &token)
            .await;
    }

    async fn exchange(
        &self,
        upstream: &Upstream,
        repo: Option<&RepoName>,
        client: &ClientCredentials,
        id: &str,
    ) -> Result<ClientToken, RegistryError> {
        let credentials = Credentials {
            username: client.username.clone(),
            password: Secret::new(client.password()),
        };
        upstream
            .exchange(repo, &credentials, &Identity::Client(id.to_owned()))
            .await
            .map_err(|e| match &e {
                UpstreamError::Unauthorized { reason, .. }
                | UpstreamError::TokenRefused { reason, .. } => RegistryError::new(
                    ErrorCode::Unauthorized,
                    format!(
                        "upstream {} refused these credentials: {reason}",
                        upstream.name()
                    ),
                ),
                _ => upstream_error(e, ErrorCode::NameUnknown),
            })
    }

    /// Lets a request through unless the repository is guarded and the caller is not
    /// authorized upstream.
    pub(super) async fn admit(
        &self,
        target: &MirrorRepo,
        probe: Probe<'_>,
    ) -> Result<(), RegistryError> {
        let key = repo_key(target);
        let guarding = self.classify(target, &key, &probe).await?;
        if guarding == Guarding::Open {
            return Ok(());
        }
        let Identity::Client(id) = &target.identity else {
            return Err(needs_credentials(
                target,
                match guarding {
                    Guarding::Unsure => "upstream could not be asked whether it is public",
                    Guarding::Open | Guarding::Guarded => "this repository is guarded",
                },
            ));
        };
        let authorization = (id.clone(), key);
        if self.guard.authorized.contains(&authorization) {
            return Ok(());
        }
        match self.probe(target, &target.identity, &probe).await {
            Ok(()) => {
                self.guard.authorized.insert(authorization);
                Ok(())
            }
            // Upstreams that hide private repositories answer 404 to callers they refuse, so
            // a 404 proves no authorization: it is passed on and nothing is remembered.
            Err(e @ UpstreamError::NotFound { .. }) => Err(upstream_error(e, probe.not_found())),
            Err(e @ (UpstreamError::Unauthorized { .. } | UpstreamError::TokenRefused { .. })) => {
                Err(needs_credentials(target, &e.to_string()))
            }
            Err(e) => Err(upstream_error(e, ErrorCode::Unavailable)),
        }
    }

    /// What is known of the repository, after asking upstream whether it serves the default
    /// identity when that is due:
    /// - before a passed-through caller fetches (so what it fetches is not then served to
    ///   everyone), once per `guard_ttl`;
    /// - for a guarded repository, again once per `guard_ttl`, whoever asks, so a refusal
    ///   that no longer holds does not last;
    /// - for a repository left unsure by an upstream failure, on the first request after the
    ///   retry interval, whoever asks.
    ///
    /// Only an answer changes the record: a refusal guards, a grant opens, and a 404 for the
    /// default identity guards when the caller's own credentials find the content (an upstream
    /// hiding a private repository). Failures (timeouts, 5xx, the token service refusing)
    /// conclude nothing; before a passed-through fetch they leave the repository unsure, which
    /// counts as guarded.
    async fn classify(
        &self,
        target: &MirrorRepo,
        key: &str,
        probe: &Probe<'_>,
    ) -> Result<Guarding, RegistryError> {
        let known = self.cache.guarding(key).map_err(storage_error)?;
        let client = matches!(target.identity, Identity::Client(_));
        // An offline upstream cannot be asked: what is known stands.
        // The cheap tests first: an open repository asked anonymously is the common case.
        let due = (client || known != Guarding::Open)
            && !target.upstream.is_offline()
            && !self.guard.classified.contains(key)
            && !self.guard.retried.contains(key);
        if !due {
            return Ok(known);
        }
        let verdict = match self
            .probe(target, &target.upstream.default_identity(), probe)
            .await
        {
            Ok(()) => Verdict::Open,
            Err(UpstreamError::Unauthorized { .. }) => Verdict::Guarded,
            Err(UpstreamError::NotFound { .. }) if client => {
                match self.probe(target, &target.identity, probe).await {
                    Ok(()) => Verdict::Guarded,
                    Err(e) if e.is_transient() => Verdict::Failed(e),
                    Err(_) => Verdict::Unchanged,
                }
            }
            Err(UpstreamError::NotFound { .. }) => Verdict::Unchanged,
            Err(e) => Verdict::Failed(e),
        };
        let now = match verdict {
            Verdict::Open => {
                if known != Guarding::Open {
                    self.cache.mark_open(key).await.map_err(storage_error)?;
                    tracing::info!(repository = key, "upstream serves it openly");
                }
                Guarding::Open
            }
            Verdict::Guarded => {
                if known != Guarding::Guarded {
                    self.cache.mark_guarded(key).await.map_err(storage_error)?;
                    tracing::info!(repository = key, "upstream serves it only with credentials");
                }
                Guarding::Guarded
            }
            Verdict::Unchanged => known,
            // Upstream failing: fail safe. What a caller fetches with its own credentials must
            // not reach anonymous clients, so the repository counts as guarded until a retry
            // gets an answer.
            Verdict::Failed(e) => {
                if known == Guarding::Open {
                    self.cache.mark_unsure(key).await.map_err(storage_error)?;
                    tracing::warn!(
                        repository = key,
                        error = %e,
                        "upstream could not say whether it is public; guarded until it can"
                    );
                }
                self.guard.retried.insert(key.to_owned());
                return Ok(if known == Guarding::Guarded {
                    Guarding::Guarded
                } else {
                    Guarding::Unsure
                });
            }
        };
        if now == Guarding::Unsure {
            self.guard.retried.insert(key.to_owned());
        } else {
            self.guard.classified.insert(key.to_owned());
        }
        Ok(now)
    }

    async fn probe(
        &self,
        target: &MirrorRepo,
        identity: &Identity,
        probe: &Probe<'_>,
    ) -> Result<(), UpstreamError> {
        match probe {
            Probe::Manifest(reference) => target
                .upstream
                .head_manifest(&target.repo, reference, &media::accept_all(), identity)
                .await
                .map(|_| ()),
            Probe::Blob(digest) => target
                .upstream
                .head_blob(&target.repo, digest, identity)
                .await
                .map(|_| ()),
            Probe::Tags => target
                .upstream
                .get_tags(&target.repo, &[("n".to_owned(), "1".to_owned())], identity)
                .await
                .map(|_| ()),
        }
    }

    /// Upstream trouble for a request: a refusal of the default identity by the registry marks
    /// the repository guarded and asks the client for credentials.
    pub(super) async fn refused(
        &self,
        target: &MirrorRepo,
        e: UpstreamError,
        not_found: ErrorCode,
    ) -> RegistryError {
        let client = matches!(target.identity, Identity::Client(_));
        match &e {
            UpstreamError::Unauthorized { .. } => {
                if !client {
                    if let Err(err) = self.cache.mark_guarded(&repo_key(target)).await {
                        return storage_error(err);
                    }
                }
                needs_credentials(target, &e.to_string())
            }
            UpstreamError::TokenRefused { .. } if client => {
                needs_credentials(target, &e.to_string())
            }
            _ => upstream_error(e, not_found),
        }
    }
}

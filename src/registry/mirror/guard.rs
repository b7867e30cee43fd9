//! Guarded repositories: content that upstream serves only with credentials.
//!
//! A repository is marked guarded (persistently) when upstream refuses berth's default
//! identity (site credentials, else anonymous) for it, or when a passed-through client's
//! fetch finds that the default identity is refused. Cached content of a guarded repository
//! is served only to a client whose own upstream grant upstream accepts for that repository,
//! re-checked with a HEAD upstream after `mirror.guard_ttl` and remembered per identity.
//! Public content stays shared and anonymous; blobs are content-addressed and shared on disk,
//! authorization is per repository and identity.

use std::time::Duration;

use moka::sync::Cache;

use super::{storage_error, upstream_error, Mirror};
use crate::config::Secret;
use crate::registry::error::{ErrorCode, RegistryError};
use crate::registry::media;
use crate::registry::name::{Digest, Reference, RepoName};
use crate::registry::namespace::MirrorRepo;
use crate::upstream::{Credentials, Identity, UpstreamError};

/// What to ask upstream when checking a caller's access.
pub enum Probe<'a> {
    Manifest(&'a Reference),
    Blob(&'a Digest),
}

pub struct Guard {
    /// Keys identity ids; random per process.
    secret: [u8; 32],
    /// (identity id, upstream/repo) that upstream accepted recently.
    authorized: Cache<(String, String), ()>,
    /// upstream/repo whose default-identity access was checked recently.
    classified: Cache<String, ()>,
}

impl Guard {
    pub fn new(ttl: Duration) -> Self {
        let mut secret = [0u8; 32];
        // Without randomness ids would still differ per credentials, only be guessable.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret);
        Guard {
            secret,
            authorized: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            classified: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
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

/// An identity id for credentials: a keyed hash, so equal credentials share upstream grants
/// within this process while the id reveals nothing about them.
fn identity_id(secret: &[u8; 32], upstream: &str, username: &str, password: &str) -> String {
    let mut material = secret.to_vec();
    for part in [upstream, username, password] {
        material.extend_from_slice(&(part.len() as u64).to_le_bytes());
        material.extend_from_slice(part.as_bytes());
    }
    Digest::of(&material).hex()[..32].to_owned()
}

impl Mirror {
    /// Exchanges a client's upstream credentials for a grant on `target`'s repository; the
    /// grant (never the credentials) is kept under the returned identity id, for as long as the
    /// returned duration.
    pub async fn passthrough_login(
        &self,
        target: &MirrorRepo,
        username: &str,
        password: &str,
    ) -> Result<(String, Duration), RegistryError> {
        self.exchange(target, Some(&target.repo), username, password)
            .await
    }

    /// Checks upstream credentials without a repository (`docker login` against the mirror).
    pub async fn verify_login(
        &self,
        target: &MirrorRepo,
        username: &str,
        password: &str,
    ) -> Result<(), RegistryError> {
        self.exchange(target, None, username, password)
            .await
            .map(|_| ())
    }

    async fn exchange(
        &self,
        target: &MirrorRepo,
        repo: Option<&RepoName>,
        username: &str,
        password: &str,
    ) -> Result<(String, Duration), RegistryError> {
        let id = identity_id(
            &self.guard.secret,
            target.upstream.name(),
            username,
            password,
        );
        let credentials = Credentials {
            username: username.to_owned(),
            password: Secret::new(password),
        };
        let lifetime = target
            .upstream
            .exchange(repo, &credentials, &Identity::Client(id.clone()))
            .await
            .map_err(|e| match &e {
                UpstreamError::Unauthorized { reason, .. } => RegistryError::new(
                    ErrorCode::Unauthorized,
                    format!(
                        "upstream {} refused these credentials: {reason}",
                        target.upstream.name()
                    ),
                ),
                _ => upstream_error(e, ErrorCode::NameUnknown),
            })?;
        Ok((id, lifetime))
    }

    /// Lets a request through unless the repository is guarded and the caller is not
    /// authorized upstream.
    pub(super) async fn admit(
        &self,
        target: &MirrorRepo,
        probe: Probe<'_>,
    ) -> Result<(), RegistryError> {
        let key = repo_key(target);
        if let Identity::Client(_) = target.identity {
            self.classify(target, &key, &probe).await?;
        }
        if !self.cache.is_guarded(&key).map_err(storage_error)? {
            return Ok(());
        }
        let Identity::Client(id) = &target.identity else {
            return Err(needs_credentials(target, "this repository is guarded"));
        };
        let authorization = (id.clone(), key);
        if self.guard.authorized.contains_key(&authorization) {
            return Ok(());
        }
        match self.probe(target, &target.identity, &probe).await {
            Ok(()) | Err(UpstreamError::NotFound { .. }) => {
                self.guard.authorized.insert(authorization, ());
                Ok(())
            }
            Err(e @ UpstreamError::Unauthorized { .. }) => {
                Err(needs_credentials(target, &e.to_string()))
            }
            Err(e) => Err(upstream_error(e, ErrorCode::Unavailable)),
        }
    }

    /// For a passed-through caller: finds out (once per TTL) whether upstream refuses the
    /// default identity for this repository, so what the caller fetches is not then served to
    /// everyone.
    async fn classify(
        &self,
        target: &MirrorRepo,
        key: &str,
        probe: &Probe<'_>,
    ) -> Result<(), RegistryError> {
        if self.guard.classified.contains_key(key)
            || self.cache.is_guarded(key).map_err(storage_error)?
        {
            return Ok(());
        }
        let default = target.upstream.default_identity();
        match self.probe(target, &default, probe).await {
            Err(UpstreamError::Unauthorized { .. }) => {
                self.cache.mark_guarded(key).map_err(storage_error)?;
            }
            Ok(()) | Err(UpstreamError::NotFound { .. }) => {}
            // Unknown (upstream failing): fail safe. What this caller fetches with its own
            // credentials must not reach anonymous clients, so the repository is marked guarded,
            // and stays so (a public repository then needs credentials through berth too).
            Err(_) => {
                self.cache.mark_guarded(key).map_err(storage_error)?;
                return Ok(());
            }
        }
        self.guard.classified.insert(key.to_owned(), ());
        Ok(())
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
        }
    }

    /// Upstream trouble for a request: a refusal of the default identity marks the
    /// repository guarded and asks the client for credentials.
    pub(super) fn refused(
        &self,
        target: &MirrorRepo,
        e: UpstreamError,
        not_found: ErrorCode,
    ) -> RegistryError {
        if let UpstreamError::Unauthorized { .. } = &e {
            if !matches!(target.identity, Identity::Client(_)) {
                if let Err(err) = self.cache.mark_guarded(&repo_key(target)) {
                    return storage_error(err);
                }
            }
            return needs_credentials(target, &e.to_string());
        }
        upstream_error(e, not_found)
    }
}

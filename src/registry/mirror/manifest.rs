//! Manifest resolution for the mirror: the hot path (a fresh tag or a known digest, answered
//! from memory with no coordination), and the slow path (revalidate or fetch upstream), which
//! concurrent requests share through a single flight.

use std::sync::Arc;

use super::guard::Probe;
use super::{offline_error, storage_error, upstream_error, ManifestReply, Mirror};
use crate::cache::StoredManifest;
use crate::metrics;
use crate::oci::media::{self, AcceptList};
use crate::oci::{Digest, ErrorCode, Manifest, Reference, RepoName, Tag};
use crate::registry::error::RegistryError;
use crate::registry::namespace::MirrorRepo;
use crate::storage::index::TagRecord;
use crate::upstream::{Identity, UpstreamError};

/// What identifies one manifest resolution, so that only requests that would get the same
/// answer share a flight: the same upstream, repository and reference, asked with the same
/// `Accept`, as the same upstream identity (a client's own credentials may see more).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ManifestKey {
    upstream: String,
    repo: RepoName,
    reference: Reference,
    accept: String,
    identity: Identity,
}

impl ManifestKey {
    fn new(target: &MirrorRepo, reference: &Reference, accept: &AcceptList) -> Self {
        ManifestKey {
            upstream: target.upstream.name().to_owned(),
            repo: target.repo.clone(),
            reference: reference.clone(),
            accept: accept.for_upstream(),
            identity: target.identity.clone(),
        }
    }
}

impl Mirror {
    pub async fn manifest(
        &self,
        target: &MirrorRepo,
        reference: &Reference,
        accept: &AcceptList,
    ) -> Result<ManifestReply, RegistryError> {
        self.admit(target, Probe::Manifest(reference)).await?;
        if let Some(manifest) = self
            .cached_without_upstream(target, reference, accept)
            .await?
        {
            metrics::inc(&self.cache.metrics().manifest_hits);
            return Ok(ManifestReply {
                manifest,
                stale: false,
            });
        }
        let key = ManifestKey::new(target, reference, accept);
        let this = self.clone();
        let (target, reference, accept) = (target.clone(), reference.clone(), accept.clone());
        let (reply, joined) = self
            .manifest_flights
            .run(key, async move {
                this.resolve_manifest(&target, &reference, &accept).await
            })
            .await;
        if joined {
            metrics::inc(&self.cache.metrics().manifest_coalesced);
        }
        reply
    }

    /// A manifest that needs no upstream call: a digest the repository holds, or a tag within
    /// its TTL (any age when the upstream is offline), served with the media type the
    /// repository recorded for it.
    async fn cached_without_upstream(
        &self,
        target: &MirrorRepo,
        reference: &Reference,
        accept: &AcceptList,
    ) -> Result<Option<Arc<StoredManifest>>, RegistryError> {
        let (digest, media_type) = match reference {
            Reference::Digest(digest) => match self.linked(target, digest)? {
                Some(media_type) => (digest.clone(), media_type),
                None => return Ok(None),
            },
            Reference::Tag(tag) => {
                let Some(record) = self.acceptable_tag(target, tag, accept)? else {
                    return Ok(None);
                };
                if !target.upstream.is_offline() && !self.is_fresh(target, &record) {
                    return Ok(None);
                }
                (record.digest, record.media_type)
            }
        };
        Ok(self
            .cache
            .manifest(&digest)
            .await
            .map_err(storage_error)?
            .map(|manifest| manifest.served_as(&media_type)))
    }

    fn acceptable_tag(
        &self,
        target: &MirrorRepo,
        tag: &Tag,
        accept: &AcceptList,
    ) -> Result<Option<TagRecord>, RegistryError> {
        Ok(self
            .cache
            .tag(target.upstream.name(), &target.repo, tag)
            .map_err(storage_error)?
            .filter(|record| accept.accepts(&record.media_type)))
    }

    /// The slow path, run once for all concurrent requests with the same key.
    async fn resolve_manifest(
        &self,
        target: &MirrorRepo,
        reference: &Reference,
        accept: &AcceptList,
    ) -> Result<ManifestReply, RegistryError> {
        let tag = match reference {
            Reference::Tag(tag) => tag,
            Reference::Digest(digest) => {
                let manifest = match self.cache.manifest(digest).await.map_err(storage_error)? {
                    Some(stored) => self.confirm_manifest(target, reference, stored).await?,
                    None => self.fetch_manifest(target, reference, accept).await?,
                };
                return Ok(ManifestReply {
                    manifest,
                    stale: false,
                });
            }
        };
        let record = self
            .cache
            .tag(target.upstream.name(), &target.repo, tag)
            .map_err(storage_error)?;
        let unacceptable = record
            .as_ref()
            .is_some_and(|r| !accept.accepts(&r.media_type));
        if let Some(record) = record.filter(|_| !unacceptable) {
            if let Some(reply) = self.revalidate(target, tag, record).await? {
                return Ok(reply);
            }
        }
        let fresh = |manifest| ManifestReply {
            manifest,
            stale: false,
        };
        // The tag's own answer is the one for a client that takes every type; it is remembered
        // for everyone. A narrower client is served it too when it takes its type, so old
        // clients hit the cache as well. Only when the tag is known to hold a type the client
        // does not take (an index, for a client that knows image manifests only) does upstream
        // pick for it, and that pick is not the tag's answer.
        if !unacceptable {
            let canonical = self
                .fetch_manifest(target, reference, &AcceptList::default())
                .await?;
            self.remember_tag(target, tag, &canonical.digest, &canonical.media_type)
                .await?;
            if accept.accepts(&canonical.media_type) {
                return Ok(fresh(canonical));
            }
        }
        Ok(fresh(self.fetch_manifest(target, reference, accept).await?))
    }

    /// Asks upstream (with a HEAD) whether a cached tag still holds. Serves the cached
    /// manifest when it does, or when upstream cannot say and the entry is within `max_stale`.
    /// `None` means: fetch it again.
    async fn revalidate(
        &self,
        target: &MirrorRepo,
        tag: &Tag,
        record: TagRecord,
    ) -> Result<Option<ManifestReply>, RegistryError> {
        let upstream = &target.upstream;
        let metrics = self.cache.metrics();
        let mut stale = false;
        // A concurrent flight may have just confirmed it.
        if !self.is_fresh(target, &record) {
            metrics::inc(&metrics.upstream_manifest_heads);
            match upstream
                .head_manifest(
                    &target.repo,
                    &Reference::Tag(tag.clone()),
                    &media::accept_all(),
                    &target.identity,
                )
                .await
            {
                Ok(head) if holds(head.digest.as_deref(), &record.digest) => {
                    self.remember_tag(target, tag, &record.digest, &record.media_type)
                        .await?;
                }
                Ok(_) => return Ok(None),
                Err(e) if e.is_not_found() => {
                    self.cache
                        .remove_tag(upstream.name(), &target.repo, tag)
                        .map_err(storage_error)?;
                    return Err(upstream_error(e, ErrorCode::ManifestUnknown));
                }
                Err(e) if e.is_transient() && self.within_max_stale(target, &record) => {
                    metrics::inc(&metrics.upstream_errors);
                    metrics::inc(&metrics.stale_serves);
                    tracing::warn!(repo = %target.repo, %tag, error = %e, "upstream cannot revalidate; serving the cached tag");
                    stale = true;
                }
                Err(e) => {
                    metrics::inc(&metrics.upstream_errors);
                    return Err(upstream_error(e, ErrorCode::ManifestUnknown));
                }
            }
        }
        let Some(manifest) = self
            .cache
            .manifest(&record.digest)
            .await
            .map_err(storage_error)?
        else {
            return Ok(None);
        };
        metrics::inc(&metrics.manifest_hits);
        Ok(Some(ManifestReply {
            manifest: manifest.served_as(&record.media_type),
            stale,
        }))
    }

    async fn remember_tag(
        &self,
        target: &MirrorRepo,
        tag: &Tag,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let record = TagRecord {
            digest: digest.clone(),
            media_type: media_type.to_owned(),
            checked_at_ms: self.clock.unix_ms(),
        };
        self.cache
            .put_tag(target.upstream.name(), &target.repo, tag, record)
            .await
            .map_err(storage_error)
    }

    /// GETs a manifest upstream, verifies its digest, stores it.
    async fn fetch_manifest(
        &self,
        target: &MirrorRepo,
        reference: &Reference,
        accept: &AcceptList,
    ) -> Result<Arc<StoredManifest>, RegistryError> {
        let metrics = self.cache.metrics();
        if !target.upstream.is_offline() {
            metrics::inc(&metrics.manifest_misses);
            metrics::inc(&metrics.upstream_manifest_gets);
        }
        let fetched = target
            .upstream
            .get_manifest(
                &target.repo,
                reference,
                &accept.for_upstream(),
                &target.identity,
            )
            .await;
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(e) => {
                if !matches!(e, UpstreamError::Offline { .. }) {
                    metrics::inc(&metrics.upstream_errors);
                }
                return Err(self.refused(target, e, ErrorCode::ManifestUnknown).await);
            }
        };
        let digest = Digest::of(&fetched.body);
        let expected = match reference {
            Reference::Digest(d) => Some(d.to_string()),
            Reference::Tag(_) => fetched.digest.clone(),
        };
        if let Some(expected) = expected.filter(|e| *e != digest.to_string()) {
            metrics::inc(&metrics.upstream_errors);
            return Err(RegistryError::new(
                ErrorCode::Unavailable,
                format!(
                    "upstream {} sent manifest {expected} for {}:{reference}, which hashes to {digest}; not served",
                    target.upstream.name(),
                    target.repo
                ),
            ));
        }
        let declared = fetched.content_type.as_deref();
        let upstream_type = media::upstream_content_type(declared);
        let (media_type, parsed) = match Manifest::parse(&fetched.body, upstream_type.as_deref()) {
            Ok(parsed) => (parsed.media_type.clone(), Some(Arc::new(parsed))),
            // Not a manifest berth reads (schema 1, a type it does not know): passed on as
            // upstream sent it, and never walked.
            Err(_) => (media::passthrough_media_type(declared, &fetched.body), None),
        };
        let manifest = self
            .cache
            .put_manifest(StoredManifest {
                digest: digest.clone(),
                media_type,
                body: fetched.body,
                parsed,
            })
            .await
            .map_err(storage_error)?;
        self.link(target, &digest, &manifest.media_type)?;
        Ok(manifest)
    }

    /// A manifest the cache holds for another repository, once upstream confirmed (a HEAD, as
    /// the caller) that this repository holds it too; the answer is recorded, with the media
    /// type upstream gives it here.
    async fn confirm_manifest(
        &self,
        target: &MirrorRepo,
        reference: &Reference,
        stored: Arc<StoredManifest>,
    ) -> Result<Arc<StoredManifest>, RegistryError> {
        if target.upstream.is_offline() {
            return Err(offline_error(target, ErrorCode::ManifestUnknown));
        }
        let head = target
            .upstream
            .head_manifest(
                &target.repo,
                reference,
                &media::accept_all(),
                &target.identity,
            )
            .await;
        let head = match head {
            Ok(head) => head,
            Err(e) => return Err(self.refused(target, e, ErrorCode::ManifestUnknown).await),
        };
        let media_type = head
            .content_type
            .as_deref()
            .and_then(|ct| ct.split(';').next())
            .map(str::trim)
            .filter(|ct| media::SUPPORTED.contains(ct))
            .unwrap_or(&stored.media_type)
            .to_owned();
        self.link(target, &stored.digest, &media_type)?;
        Ok(stored.served_as(&media_type))
    }
}

/// Whether upstream's `Docker-Content-Digest` names the digest the tag was cached with.
fn holds(upstream_digest: Option<&str>, cached: &Digest) -> bool {
    upstream_digest
        .and_then(|d| d.parse::<Digest>().ok())
        .as_ref()
        == Some(cached)
}

impl Mirror {
    fn age_ms(&self, record: &TagRecord) -> u64 {
        self.clock.unix_ms().saturating_sub(record.checked_at_ms)
    }

    fn is_fresh(&self, target: &MirrorRepo, record: &TagRecord) -> bool {
        u128::from(self.age_ms(record)) < target.upstream.settings().tag_ttl.as_millis()
    }

    fn within_max_stale(&self, target: &MirrorRepo, record: &TagRecord) -> bool {
        u128::from(self.age_ms(record)) <= target.upstream.settings().max_stale.as_millis()
    }
}

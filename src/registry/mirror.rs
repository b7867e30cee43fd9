//! The pull-through decisions for the mirror namespace.
//!
//! - Manifests by digest are immutable: once verified and stored, served forever.
//! - Manifests by tag: within the upstream's `tag_ttl` the cached answer is served; after it a
//!   HEAD upstream revalidates (Docker Hub does not count HEADs against its rate limit), and
//!   the manifest is fetched again only when the digest changed. When upstream cannot answer
//!   (unreachable, timeout, 429, 5xx) the stale answer is served and counted.
//! - Blobs are local-first; a miss joins or starts one fill (see `cache::fill`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::error::{ErrorCode, RegistryError};
use super::media::{self, AcceptList};
use super::name::{Digest, Reference, Tag};
use super::namespace::MirrorRepo;
use crate::cache::fill::{Fill, FillError};
use crate::cache::{BlobSource, Cache, StoredManifest};
use crate::metrics;
use crate::storage::index::TagRecord;
use crate::storage::StorageError;
use crate::upstream::UpstreamError;

pub struct ManifestReply {
    pub manifest: Arc<StoredManifest>,
    /// Served from cache although upstream could not confirm it.
    pub stale: bool,
}

pub enum BlobReply {
    Stored(Bytes),
    Filling { fill: Arc<Fill>, size: Option<u64> },
}

pub struct TagsReply {
    pub body: Bytes,
    /// A `Link` header pointing at the next page, in the client's terms.
    pub link: Option<String>,
}

pub struct Mirror {
    cache: Arc<Cache>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Mirror {
    pub fn new(cache: Arc<Cache>) -> Self {
        Mirror { cache }
    }

    pub async fn manifest(
        &self,
        target: &MirrorRepo,
        reference: &Reference,
        accept: &AcceptList,
    ) -> Result<ManifestReply, RegistryError> {
        match reference {
            Reference::Digest(digest) => self.manifest_by_digest(target, digest, accept).await,
            Reference::Tag(tag) => self.manifest_by_tag(target, tag, accept).await,
        }
    }

    async fn manifest_by_digest(
        &self,
        target: &MirrorRepo,
        digest: &Digest,
        accept: &AcceptList,
    ) -> Result<ManifestReply, RegistryError> {
        if let Some(manifest) = self.cache.manifest(digest).await.map_err(storage_error)? {
            metrics::inc(&self.cache.metrics().manifest_hits);
            return Ok(ManifestReply {
                manifest,
                stale: false,
            });
        }
        let manifest = self
            .fetch_manifest(target, &Reference::Digest(digest.clone()), accept)
            .await?;
        Ok(ManifestReply {
            manifest,
            stale: false,
        })
    }

    async fn manifest_by_tag(
        &self,
        target: &MirrorRepo,
        tag: &Tag,
        accept: &AcceptList,
    ) -> Result<ManifestReply, RegistryError> {
        let upstream = &target.upstream;
        let cached = self
            .cache
            .tag(upstream.name(), &target.repo, tag)
            .map_err(storage_error)?
            .filter(|record| accept.accepts(&record.media_type));
        if let Some(record) = cached {
            if let Some(reply) = self.serve_cached_tag(target, tag, record).await? {
                return Ok(reply);
            }
        }
        let manifest = self
            .fetch_manifest(target, &Reference::Tag(tag.clone()), accept)
            .await?;
        if accept.covers_all_supported() {
            self.remember_tag(target, tag, &manifest.digest, &manifest.media_type)?;
        }
        Ok(ManifestReply {
            manifest,
            stale: false,
        })
    }

    /// Serves a cached tag if it is fresh, or still current upstream, or upstream cannot say.
    /// `None` means: fetch it.
    async fn serve_cached_tag(
        &self,
        target: &MirrorRepo,
        tag: &Tag,
        record: TagRecord,
    ) -> Result<Option<ManifestReply>, RegistryError> {
        let Ok(digest) = record.digest.parse::<Digest>() else {
            return Ok(None);
        };
        let upstream = &target.upstream;
        let ttl_ms = upstream.settings().tag_ttl.as_millis() as u64;
        let fresh = now_ms().saturating_sub(record.checked_at_ms) < ttl_ms;
        let mut stale = false;
        if !fresh {
            metrics::inc(&self.cache.metrics().upstream_manifest_heads);
            match upstream
                .head_manifest(
                    &target.repo,
                    &Reference::Tag(tag.clone()),
                    &media::accept_all(),
                )
                .await
            {
                Ok(head) if head.digest.as_deref() == Some(record.digest.as_str()) => {
                    self.remember_tag(target, tag, &digest, &record.media_type)?;
                }
                Ok(_) => return Ok(None),
                Err(e) if e.is_not_found() => {
                    self.cache
                        .remove_tag(upstream.name(), &target.repo, tag)
                        .map_err(storage_error)?;
                    return Err(upstream_error(e, ErrorCode::ManifestUnknown));
                }
                Err(e) if e.is_transient() => {
                    metrics::inc(&self.cache.metrics().upstream_errors);
                    metrics::inc(&self.cache.metrics().stale_serves);
                    tracing::warn!(repo = %target.repo, %tag, error = %e, "upstream cannot revalidate; serving the cached tag");
                    stale = true;
                }
                Err(e) => {
                    metrics::inc(&self.cache.metrics().upstream_errors);
                    return Err(upstream_error(e, ErrorCode::ManifestUnknown));
                }
            }
        }
        let Some(manifest) = self.cache.manifest(&digest).await.map_err(storage_error)? else {
            return Ok(None);
        };
        metrics::inc(&self.cache.metrics().manifest_hits);
        Ok(Some(ManifestReply { manifest, stale }))
    }

    fn remember_tag(
        &self,
        target: &MirrorRepo,
        tag: &Tag,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let record = TagRecord {
            digest: digest.to_string(),
            media_type: media_type.to_owned(),
            checked_at_ms: now_ms(),
        };
        self.cache
            .put_tag(target.upstream.name(), &target.repo, tag, record)
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
        metrics::inc(&metrics.manifest_misses);
        metrics::inc(&metrics.upstream_manifest_gets);
        let fetched = target
            .upstream
            .get_manifest(&target.repo, reference, &accept.for_upstream())
            .await
            .map_err(|e| {
                metrics::inc(&metrics.upstream_errors);
                upstream_error(e, ErrorCode::ManifestUnknown)
            })?;
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
                    "upstream {} sent manifest {} for {}:{reference}, which hashes to {digest}; not served",
                    target.upstream.name(),
                    expected,
                    target.repo
                ),
            ));
        }
        let media_type = media::resolve_media_type(fetched.content_type.as_deref(), &fetched.body);
        let manifest = self
            .cache
            .put_manifest(StoredManifest {
                digest: digest.clone(),
                media_type,
                body: fetched.body,
            })
            .await
            .map_err(storage_error)?;
        self.cache
            .link(target.upstream.name(), &target.repo, &digest)
            .map_err(storage_error)?;
        Ok(manifest)
    }

    pub async fn blob(
        &self,
        target: &MirrorRepo,
        digest: &Digest,
    ) -> Result<BlobReply, RegistryError> {
        let upstream = Arc::clone(&target.upstream);
        let repo = target.repo.clone();
        let d = digest.clone();
        let source = self
            .cache
            .blob_or_fill(
                digest,
                move || async move { upstream.get_blob(&repo, &d).await },
            )
            .await
            .map_err(storage_error)?;
        match source {
            BlobSource::Stored(bytes) => Ok(BlobReply::Stored(bytes)),
            BlobSource::Filling(fill) => {
                let size = fill.started().await.map_err(fill_error)?;
                self.cache
                    .link(target.upstream.name(), &target.repo, digest)
                    .map_err(storage_error)?;
                Ok(BlobReply::Filling { fill, size })
            }
        }
    }

    /// The size of a blob, for HEAD: from the cache, or a HEAD upstream (no download).
    pub async fn blob_size(
        &self,
        target: &MirrorRepo,
        digest: &Digest,
    ) -> Result<u64, RegistryError> {
        if let Some(size) = self.cache.blob_size(digest).map_err(storage_error)? {
            return Ok(size);
        }
        target
            .upstream
            .head_blob(&target.repo, digest)
            .await
            .map_err(|e| upstream_error(e, ErrorCode::BlobUnknown))
    }

    pub async fn tags(
        &self,
        target: &MirrorRepo,
        query: &[(String, String)],
        ns: Option<&str>,
    ) -> Result<TagsReply, RegistryError> {
        let page = target
            .upstream
            .get_tags(&target.repo, query)
            .await
            .map_err(|e| upstream_error(e, ErrorCode::NameUnknown))?;
        let link = page.next.map(|mut pairs| {
            if let Some(ns) = ns {
                pairs.push(("ns".to_owned(), ns.to_owned()));
            }
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            format!(
                "</v2/{}/tags/list?{query}>; rel=\"next\"",
                target.client_name
            )
        });
        Ok(TagsReply {
            body: page.body,
            link,
        })
    }
}

/// Upstream trouble in the spec's terms; `not_found` says what a 404 means here.
pub fn upstream_error(e: UpstreamError, not_found: ErrorCode) -> RegistryError {
    let message = e.to_string();
    match &e {
        UpstreamError::NotFound { .. } => RegistryError::new(not_found, message),
        UpstreamError::Unauthorized { .. } => RegistryError::new(
            ErrorCode::Denied,
            format!("{message} (the repository may not exist upstream, or may need credentials)"),
        ),
        UpstreamError::TooManyRequests { retry_after, .. } => {
            RegistryError::new(ErrorCode::TooManyRequests, message).with_retry_after(*retry_after)
        }
        UpstreamError::Status {
            status,
            retry_after,
            ..
        } if *status >= 500 => {
            RegistryError::new(ErrorCode::Unavailable, message).with_retry_after(*retry_after)
        }
        UpstreamError::Status { .. } => RegistryError::new(ErrorCode::Denied, message),
        UpstreamError::Unreachable { .. }
        | UpstreamError::Timeout { .. }
        | UpstreamError::Protocol { .. } => {
            RegistryError::new(ErrorCode::Unavailable, message).with_source(e)
        }
    }
}

fn fill_error(e: Arc<FillError>) -> RegistryError {
    match &*e {
        FillError::Upstream(u) => upstream_error(u.clone(), ErrorCode::BlobUnknown),
        FillError::DigestMismatch { .. } | FillError::SizeMismatch { .. } => {
            RegistryError::new(ErrorCode::Unavailable, e.to_string())
        }
        FillError::Storage(_) | FillError::Vanished => {
            RegistryError::internal("cache storage failed", e.to_string())
        }
    }
}

pub fn storage_error(e: StorageError) -> RegistryError {
    RegistryError::internal("cache storage failed", e)
}

//! The pull-through decisions for the mirror namespace.
//!
//! - Manifests by digest are immutable: once verified and stored, served forever.
//! - Manifests by tag: within the upstream's `tag_ttl` the cached answer is served; after it a
//!   HEAD upstream revalidates (Docker Hub does not count HEADs against its rate limit), and
//!   the manifest is fetched again only when the digest changed. When upstream cannot answer
//!   (unreachable, timeout, 429, 5xx) the stale answer is served and counted.
//! - Blobs are local-first; a miss joins or starts one fill (see `cache::fill`).
//! - An offline upstream is never contacted: what is cached is served, the rest is unknown.

mod attached;
mod guard;
mod manifest;
mod prefetch;
mod referrers;
mod seed;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};

pub use self::attached::Attached;
use self::manifest::ManifestKey;
pub use self::seed::SeededImage;
use super::error::storage_error;
use super::error::RegistryError;
use super::listing::{json, paginate, Listing, PageRequest};
use super::namespace::MirrorRepo;
use crate::cache::fill::{FillError, FillSource, NotVerified, SourceError};
use crate::cache::flight::Flights;
use crate::cache::{BlobBody, Cache, Keep, StoredManifest};
use crate::clock::Clock;
use crate::config::MirrorSettings;
use crate::oci::Digest;
use crate::oci::ErrorCode;
use crate::upstream::{BlobResponse, UpstreamError};

#[derive(Clone)]
pub struct ManifestReply {
    pub manifest: Arc<StoredManifest>,
    /// Served from cache although upstream could not confirm it.
    pub stale: bool,
}

/// What of a blob a request reads, which decides when the bytes of a fill may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobRead {
    /// The whole blob: streamed as it arrives, the last byte withheld until it is verified.
    Whole,
    /// A range (a `Range` header was sent): it may end before the last byte, the one a fill
    /// withholds, so it waits until the whole fill is verified.
    Range,
    /// The whole blob, to be kept in this node's cache (prefetch, pins): never passed
    /// straight from the shared store to one reader.
    Keep,
}

impl BlobRead {
    /// Whether the cache keeps a blob read from the shared store.
    pub(crate) fn keep(self) -> Keep {
        match self {
            BlobRead::Whole => Keep::IfReadAgain,
            BlobRead::Range | BlobRead::Keep => Keep::Always,
        }
    }
}

#[derive(Clone)]
pub struct Mirror {
    cache: Arc<Cache>,
    manifest_flights: Arc<Flights<ManifestKey, Result<ManifestReply, RegistryError>>>,
    guard: Arc<guard::Guard>,
    prefetcher: Arc<prefetch::Prefetcher>,
    /// Time for the tag TTL and the guard's re-checks.
    clock: Clock,
}

/// Blobs of one image that seeding and prefetch fetch at the same time (docker pulls 3 layers
/// at a time too).
const PARALLEL_BLOBS: usize = 3;

impl Mirror {
    pub fn new(cache: Arc<Cache>, settings: &MirrorSettings, clock: Clock) -> Self {
        Mirror {
            guard: Arc::new(guard::Guard::new(settings.guard_ttl, clock.clone())),
            prefetcher: Arc::new(prefetch::Prefetcher::new(settings.prefetch)),
            cache,
            manifest_flights: Arc::default(),
            clock,
        }
    }

    /// A blob of `target`'s repository: served from the cache only when that repository may
    /// hold it (see [`Mirror::linked`]), else fetched for it. A body being filled has started
    /// (its declared length is known); for [`BlobRead::Range`] it is verified too.
    pub async fn blob(
        &self,
        target: &MirrorRepo,
        digest: &Digest,
        read: BlobRead,
    ) -> Result<BlobBody, RegistryError> {
        self.admit(target, guard::Probe::Blob(digest)).await?;
        let linked = self.linked(target, digest)?.is_some();
        if target.upstream.is_offline()
            && !(linked
                && self
                    .cache
                    .blob_size(digest)
                    .map_err(storage_error)?
                    .is_some())
        {
            return Err(offline_error(target, ErrorCode::BlobUnknown));
        }
        let upstream = Arc::clone(&target.upstream);
        let repo = target.repo.clone();
        let identity = target.identity.clone();
        let d = digest.clone();
        let cache = Arc::clone(&self.cache);
        // Set when this request starts the fill: then its own GET upstream is the proof that
        // the repository holds the blob.
        let fetching = AtomicBool::new(false);
        let body = self
            .cache
            .blob_or_fill(digest, read.keep(), || {
                fetching.store(true, Ordering::Relaxed);
                async move {
                    let response = upstream
                        .get_blob(&repo, &d, &identity)
                        .await
                        .map_err(source_error)?;
                    // Linked before the fill counts as started, so that a request joining the
                    // fill finds the link once it sees the start.
                    if let Err(e) = cache.link(upstream.name(), &repo, &d, "") {
                        tracing::warn!(digest = %d, error = %e, "cannot record the blob's repository");
                    }
                    Ok(fill_source(response))
                }
            })
            .await
            .map_err(storage_error)?;
        let ours = linked || fetching.load(Ordering::Relaxed);
        if !body.is_filling() {
            if !ours {
                self.confirm_blob(target, digest).await?;
            }
            return Ok(body);
        }
        let body = match body.started().await {
            Ok(body) => body,
            Err(e) => {
                return Err(match upstream_cause(&e) {
                    Some(u) => {
                        self.refused(target, u.clone(), ErrorCode::BlobUnknown)
                            .await
                    }
                    None => fill_error(e),
                })
            }
        };
        // A fill started for another request of this repository linked it by now.
        if !ours && self.linked(target, digest)?.is_none() {
            self.confirm_blob(target, digest).await?;
        }
        match read {
            BlobRead::Whole | BlobRead::Keep => Ok(body),
            BlobRead::Range => {
                let stall = target.upstream.settings().read_timeout;
                body.verified(stall).await.map_err(not_verified)
            }
        }
    }

    /// The size of a blob, for HEAD: from the cache when the repository holds it, else from a
    /// HEAD upstream (no download).
    pub async fn blob_size(
        &self,
        target: &MirrorRepo,
        digest: &Digest,
    ) -> Result<u64, RegistryError> {
        self.admit(target, guard::Probe::Blob(digest)).await?;
        if self.linked(target, digest)?.is_some() {
            if let Some(size) = self.cache.blob_size(digest).map_err(storage_error)? {
                return Ok(size);
            }
        }
        let size = match target
            .upstream
            .head_blob(&target.repo, digest, &target.identity)
            .await
        {
            Ok(size) => size,
            Err(e) => return Err(self.refused(target, e, ErrorCode::BlobUnknown).await),
        };
        self.link(target, digest, "")?;
        Ok(size)
    }

    /// Whether `target`'s repository may hold `digest`, with the media type it serves a
    /// manifest as (empty for a blob). Content is stored once per digest, but a digest fetched
    /// for one repository is not thereby in another: the mirror serves it under a repository
    /// only when it was fetched through that repository or its upstream confirmed it there.
    fn linked(
        &self,
        target: &MirrorRepo,
        digest: &Digest,
    ) -> Result<Option<String>, RegistryError> {
        self.cache
            .linked(target.upstream.name(), &target.repo, digest)
            .map_err(storage_error)
    }

    fn link(
        &self,
        target: &MirrorRepo,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        self.cache
            .link(target.upstream.name(), &target.repo, digest, media_type)
            .map_err(storage_error)
    }

    /// Asks upstream (a HEAD, as the caller) whether the repository holds a blob the cache
    /// has for another one; a yes is recorded, so it is asked once.
    async fn confirm_blob(
        &self,
        target: &MirrorRepo,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        if target.upstream.is_offline() {
            return Err(offline_error(target, ErrorCode::BlobUnknown));
        }
        if let Err(e) = target
            .upstream
            .head_blob(&target.repo, digest, &target.identity)
            .await
        {
            return Err(self.refused(target, e, ErrorCode::BlobUnknown).await);
        }
        self.link(target, digest, "")
    }

    /// A page of the repository's tags: upstream's answer (its next page in the client's
    /// terms), or the tags the cache knows when offline.
    pub async fn tags(
        &self,
        target: &MirrorRepo,
        page: &PageRequest,
        ns: Option<&str>,
    ) -> Result<Listing, RegistryError> {
        self.admit(target, guard::Probe::Tags).await?;
        let mut listing = if target.upstream.is_offline() {
            self.cached_tags(target, page)?
        } else {
            match target
                .upstream
                .get_tags(&target.repo, &page.query(), &target.identity)
                .await
            {
                Ok(page) => Listing {
                    body: page.body,
                    next: page.next,
                },
                Err(e) => return Err(self.refused(target, e, ErrorCode::NameUnknown).await),
            }
        };
        if let (Some(next), Some(ns)) = (&mut listing.next, ns) {
            next.push(("ns".to_owned(), ns.to_owned()));
        }
        Ok(listing)
    }
}

impl Mirror {
    /// The tag list from the cache alone, paginated like upstream would (sorted, `n`, `last`).
    fn cached_tags(
        &self,
        target: &MirrorRepo,
        page: &PageRequest,
    ) -> Result<Listing, RegistryError> {
        let tags = self
            .cache
            .tags_of(target.upstream.name(), &target.repo)
            .map_err(storage_error)?;
        let (tags, next) = paginate(tags, page);
        Ok(Listing {
            body: json(serde_json::json!({"name": target.repo.as_str(), "tags": tags}))?,
            next,
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
        UpstreamError::TokenRefused { .. } => {
            RegistryError::new(ErrorCode::Unavailable, message).with_source(e)
        }
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
        UpstreamError::Down { retry_after, .. } => {
            RegistryError::new(ErrorCode::Unavailable, message).with_retry_after(Some(*retry_after))
        }
        UpstreamError::Offline { .. } => {
            RegistryError::new(not_found, format!("not in the cache, and {message}"))
        }
        UpstreamError::Busy { .. } => RegistryError::new(ErrorCode::Unavailable, message)
            .with_retry_after(Some(std::time::Duration::from_secs(1))),
        UpstreamError::Unreachable { .. }
        | UpstreamError::Timeout { .. }
        | UpstreamError::Protocol { .. } => {
            RegistryError::new(ErrorCode::Unavailable, message).with_source(e)
        }
    }
}

fn offline_error(target: &MirrorRepo, not_found: ErrorCode) -> RegistryError {
    upstream_error(
        UpstreamError::Offline {
            upstream: target.upstream.name().to_owned(),
        },
        not_found,
    )
}

/// A fill reads upstream's body as the cache's plain byte stream; upstream's errors ride along
/// whole, for [`upstream_cause`] to find again.
fn fill_source(response: BlobResponse) -> FillSource {
    FillSource {
        content_length: response.content_length,
        body: response.body.map_err(source_error).boxed(),
    }
}

fn source_error(e: UpstreamError) -> SourceError {
    Arc::new(e)
}

/// The upstream error a fill failed with, if that is why it failed.
fn upstream_cause(e: &FillError) -> Option<&UpstreamError> {
    match e {
        FillError::Source(source) => source.downcast_ref::<UpstreamError>(),
        _ => None,
    }
}

fn fill_error(e: Arc<FillError>) -> RegistryError {
    if let Some(u) = upstream_cause(&e) {
        return upstream_error(u.clone(), ErrorCode::BlobUnknown);
    }
    match &*e {
        // Every fill's source is upstream's body: another cause is trouble there too.
        FillError::Source(_) => RegistryError::new(ErrorCode::Unavailable, e.to_string()),
        FillError::DigestMismatch { .. } | FillError::SizeMismatch { .. } => {
            RegistryError::new(ErrorCode::Unavailable, e.to_string())
        }
        // The chain is kept for the log (the client sees only the static message).
        FillError::Storage(_) | FillError::Vanished => {
            RegistryError::internal("cache storage failed", e)
        }
    }
}

/// A ranged request's wait for verification that ended without it.
pub(crate) fn not_verified(e: NotVerified) -> RegistryError {
    match e {
        NotVerified::Stalled(stall) => RegistryError::new(
            ErrorCode::Unavailable,
            format!("the blob's download from upstream made no progress for {stall:?}"),
        ),
        NotVerified::Failed(e) => fill_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's error survives the cache's plain byte stream, so a failed fill is answered
    /// in upstream's terms (a 404 upstream is the client's BLOB_UNKNOWN, not a 503).
    #[test]
    fn a_fill_failure_keeps_its_upstream_error() {
        let refused = UpstreamError::NotFound {
            upstream: "hub".to_owned(),
            what: "blob".to_owned(),
            reason: String::new(),
        };
        let failed = FillError::Source(source_error(refused));
        assert!(matches!(
            upstream_cause(&failed),
            Some(UpstreamError::NotFound { .. })
        ));
        assert_eq!(failed.to_string(), "upstream hub has no blob");
        let other = FillError::Source(Arc::new(std::io::Error::other("disk")));
        assert!(upstream_cause(&other).is_none());
    }
}

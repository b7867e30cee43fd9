//! The blob side of the cache: stored blobs mapped into memory, and the single flight of fills
//! that fetch the missing ones.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::evict::ServingGuard;
use super::fill::{Fill, FillError, FillSource, SourceError};
use super::shared::{self, Claim};
use super::{blocking, BlobBody, Cache};
use crate::metrics;
use crate::oci::Digest;
use crate::storage::shared::SharedBlob;
use crate::storage::StorageError;

/// Whether a blob read from the shared store is kept in this node's local tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// A client's whole read: the blob's first read lately passes straight through, unkept;
    /// a read again fills the local tier (see [`super::shared`]).
    IfReadAgain,
    /// A range (filled, so that it is served from the local tier as soon as it is there), or
    /// a blob to be kept (prefetch, pins).
    Always,
}

/// Where a fill reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Upstream,
    /// The shared store, which another node (or this one) filled.
    Shared,
}

impl Cache {
    /// The size of a stored blob, if it is stored.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        Ok(self.storage.index.blob(digest)?.map(|r| r.size))
    }

    /// A stored blob's body, kept from eviction while it lives. `None` when the blob is not
    /// stored (or its file has gone missing underneath the index).
    pub async fn stored_blob(&self, digest: &Digest) -> Result<Option<BlobBody>, StorageError> {
        let Some(record) = self.storage.index.blob(digest)? else {
            return Ok(None);
        };
        self.stored_body(digest, record.size).await
    }

    /// [`Cache::stored_blob`] for a caller that has just read the blob's `size` from the
    /// index (the index is not read again).
    pub async fn stored_body(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<BlobBody>, StorageError> {
        // Guarded before it is mapped, so that eviction cannot come between.
        let guard = ServingGuard::new(&self.usage, digest);
        Ok(self
            .map_blob(digest, size)
            .await?
            .map(|mapped| BlobBody::stored(mapped, guard)))
    }

    /// Maps a stored blob of `size` bytes into memory. `None` (and the index entry dropped)
    /// when its file is missing or of another size: after a crash or a lost disk, the request
    /// path meets this before background reconciliation may, and makes it a miss.
    async fn map_blob(&self, digest: &Digest, size: u64) -> Result<Option<Bytes>, StorageError> {
        let storage = Arc::clone(&self.storage);
        let d = digest.clone();
        let mapped = self
            .mapped
            .get_or_map(digest, move || storage.blobs.open_blob(&d))
            .await?;
        if let Some(mapped) = mapped.filter(|m| m.len() as u64 == size) {
            return Ok(Some(mapped));
        }
        let storage = Arc::clone(&self.storage);
        let d = digest.clone();
        match blocking(move || storage.drop_broken(&d)).await? {
            Some(size) => self.forget(digest, size),
            None => self.mapped.invalidate(digest),
        }
        Ok(None)
    }

    /// The blob from disk, or from the fill that is fetching it: joins a fill in flight, or
    /// starts one. With a shared store, a blob another node has stored there is read from it
    /// (see [`Keep`]); otherwise `fetch` (upstream) runs, only when this call starts the fill,
    /// and what it brings is written to the shared store once verified.
    pub async fn blob_or_fill<F, Fut>(
        self: &Arc<Self>,
        digest: &Digest,
        keep: Keep,
        fetch: F,
    ) -> Result<BlobBody, StorageError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FillSource, SourceError>> + Send + 'static,
    {
        if let Some(body) = self.local_or_in_flight(digest).await? {
            return Ok(body);
        }
        if let Some(tier) = &self.shared {
            loop {
                if let Some(blob) = tier.blob_or_wait(digest).await {
                    return self.from_shared(digest, blob, keep).await;
                }
                if let Claim::Ours = tier.claim(digest).await {
                    // A node whose claim came first may have finished, and withdrawn its
                    // claim, while ours was being written: its blob is then in place.
                    if let Ok(Some(blob)) = tier.blob(digest, None).await {
                        tier.unmark(digest).await;
                        return self.from_shared(digest, blob, keep).await;
                    }
                    break;
                }
            }
        }
        let filling = self.fill(digest, fetch(), Origin::Upstream).await;
        if let (Err(_), Some(tier)) = (&filling, &self.shared) {
            // No fill task started to give the claim up when it ends.
            tier.unmark(digest).await;
        }
        filling
    }

    /// The blob from disk, from a fill in flight, or read from the shared store (see
    /// [`Keep`]); `None` when none of them has it (the private projects' blobs, whose bytes
    /// are in the shared store). `size`: what the repository's link says, which lets a large
    /// blob's ranged reads start at once.
    pub async fn blob_from_shared(
        self: &Arc<Self>,
        digest: &Digest,
        size: u64,
        keep: Keep,
    ) -> Result<Option<BlobBody>, StorageError> {
        if let Some(body) = self.local_or_in_flight(digest).await? {
            return Ok(Some(body));
        }
        let Some(tier) = &self.shared else {
            return Ok(None);
        };
        let Some(blob) = tier.blob(digest, Some(size)).await? else {
            return Ok(None);
        };
        Ok(Some(self.from_shared(digest, blob, keep).await?))
    }

    /// A blob the shared store is sending: passed straight through to this one client on its
    /// first whole read lately, else filled into the local tier.
    async fn from_shared(
        self: &Arc<Self>,
        digest: &Digest,
        blob: SharedBlob,
        keep: Keep,
    ) -> Result<BlobBody, StorageError> {
        if let Some(tier) = self.shared.as_ref() {
            if keep == Keep::IfReadAgain && tier.passes(digest) {
                metrics::inc(&self.metrics.shared_blob_passes);
                tracing::debug!(%digest, "blob passes from the shared store, unkept");
                return Ok(BlobBody::passing(tier.passing(digest, blob)));
            }
        }
        self.fill(digest, shared::fill_source(blob), Origin::Shared)
            .await
    }

    async fn local_or_in_flight(&self, digest: &Digest) -> Result<Option<BlobBody>, StorageError> {
        if let Some(fill) = self.inflight_fill(digest) {
            metrics::inc(&self.metrics.blob_coalesced);
            return Ok(Some(BlobBody::filling(fill)));
        }
        if let Some(record) = self.storage.index.blob(digest)? {
            if let Some(body) = self.stored_body(digest, record.size).await? {
                metrics::inc(&self.metrics.blob_hits);
                self.storage.index.touch(digest, record)?;
                return Ok(Some(body));
            }
        }
        Ok(None)
    }

    /// Starts the one fill of `digest` from `source` (or joins one that started meanwhile).
    async fn fill(
        self: &Arc<Self>,
        digest: &Digest,
        source: impl Future<Output = Result<FillSource, SourceError>> + Send + 'static,
        origin: Origin,
    ) -> Result<BlobBody, StorageError> {
        let storage = Arc::clone(&self.storage);
        let (temp, read_handle) = blocking(move || {
            let temp = storage.blobs.temp_file()?;
            let read_handle = temp.reopen()?;
            Ok::<_, std::io::Error>((temp, read_handle))
        })
        .await?;
        let (fill, writer) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(fill) = inflight.get(digest) {
                metrics::inc(&self.metrics.blob_coalesced);
                return Ok(BlobBody::filling(Arc::clone(fill)));
            }
            let (fill, writer) = Fill::with_reader(digest.clone(), temp, read_handle);
            inflight.insert(digest.clone(), Arc::clone(&fill));
            self.metrics.fills_in_flight.fetch_add(1, Ordering::Relaxed);
            (fill, writer)
        };
        metrics::inc(&self.metrics.blob_misses);
        tracing::debug!(%digest, ?origin, "blob fill starts");
        match origin {
            Origin::Upstream => metrics::inc(&self.metrics.upstream_blob_gets),
            Origin::Shared => metrics::inc(&self.metrics.shared_blob_gets),
        }
        // What comes from upstream goes to the shared store as it arrives, completed there
        // only once verified: nodes waiting for it find it as soon as the fill is done.
        let written_through = match (&self.shared, origin) {
            (Some(tier), Origin::Upstream) => {
                Some(tier.write_through(BlobBody::filling(Arc::clone(&fill)), digest))
            }
            _ => None,
        };
        let cache = Arc::clone(self);
        let d = digest.clone();
        // Its own task: a client hanging up must not abort the fill others may be reading.
        tokio::spawn(async move {
            let (storage, usage) = (Arc::clone(&cache.storage), Arc::clone(&cache.usage));
            let commit_digest = d.clone();
            let commit = move |temp, size| -> Result<(), StorageError> {
                // Counted by the store that added the blob only (an upload may have, meanwhile).
                if storage.store_temp(temp, &commit_digest, size)? {
                    usage.add(size);
                }
                Ok(())
            };
            let result = writer.run(source.await, commit).await;
            match result {
                Ok(bytes) => {
                    if origin == Origin::Upstream {
                        metrics::add(&cache.metrics.upstream_bytes, bytes);
                    }
                }
                Err(e) => {
                    metrics::inc(&cache.metrics.fills_failed);
                    if origin == Origin::Upstream && matches!(&*e, FillError::Source(_)) {
                        metrics::inc(&cache.metrics.upstream_errors);
                    }
                    tracing::warn!(digest = %d, error = %e, ?origin, "blob fetch discarded");
                }
            }
            cache
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&d);
            // Committed and flushed (or discarded) by now.
            cache
                .metrics
                .fills_in_flight
                .fetch_sub(1, Ordering::Relaxed);
            if let Some(tier) = &cache.shared {
                // The claim goes once the blob is in the shared store (or could not be put
                // there), so that nodes waiting on it find it in place.
                if let Some(writing) = written_through {
                    if let Ok(true) = writing.await {
                        metrics::inc(&cache.metrics.shared_blob_puts);
                    }
                }
                tier.unmark(&d).await;
            }
            cache.evict_if_needed();
        });
        Ok(BlobBody::filling(fill))
    }

    pub(super) fn is_in_flight(&self, digest: &Digest) -> bool {
        self.inflight_fill(digest).is_some()
    }

    fn inflight_fill(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }
}

//! The cache engine: what is stored, what is in flight, and the hot in-memory copies.
//!
//! It owns the single-flight map of blob fills ([`fill`]), keeps verified manifests and fresh
//! tag answers in moka so the manifest hot path touches neither sled nor the disk, and is the
//! only writer of the [`Storage`]. It decides nothing about upstreams: the registry layer hands
//! it a future that fetches, and it runs that future at most once per digest at a time.

mod body;
pub mod evict;
pub mod fill;
pub mod flight;
mod mapping;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub use self::body::BlobBody;
use self::evict::{Budget, ServingGuard, Usage};
use self::fill::{Fill, FillError, FillSource, SourceError};
use crate::memory::weight;
use crate::metrics::{self, Metrics};
use crate::oci::media;
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, RepoName, Tag};
use crate::storage::index::{
    tag_key, BlobRecord, Guarding, Index, IndexError, PushedManifest, TagRecord,
};
use crate::storage::{Storage, StorageError};

/// A verified manifest as stored.
#[derive(Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

impl StoredManifest {
    /// The manifest as one repository serves it: the same bytes, with the media type that
    /// repository recorded for them (another repository may have pushed them as another type).
    pub fn served_as(self: &Arc<Self>, media_type: &str) -> Arc<Self> {
        if media_type.is_empty() || media_type == self.media_type {
            return Arc::clone(self);
        }
        Arc::new(StoredManifest {
            digest: self.digest.clone(),
            media_type: media_type.to_owned(),
            body: self.body.clone(),
        })
    }
}

/// What a `Digest` holds: 64 hex characters.
const DIGEST_BYTES: usize = 64;

pub struct Cache {
    storage: Arc<Storage>,
    inflight: Mutex<HashMap<Digest, Arc<Fill>>>,
    manifests: moka::sync::Cache<Digest, Arc<StoredManifest>>,
    tags: moka::sync::Cache<Vec<u8>, TagRecord>,
    /// Mappings of blobs being served or served recently, one per blob. Holding one keeps an
    /// unlinked file's space allocated, so removal must invalidate it here first.
    mapped: mapping::Mappings,
    /// `upstream/repo` → what is known of its guarding, in front of the index's `guarded` tree.
    guarded: moka::sync::Cache<String, Guarding>,
    budget: Budget,
    usage: Arc<Usage>,
    metrics: Arc<Metrics>,
}

/// File bytes the recently served blob mappings may keep mapped for reuse (page cache, not
/// heap; mappings being read are shared whatever their size).
const KEPT_MAPPINGS_BYTES: u64 = 1 << 30;

impl Cache {
    /// `memory_bytes` bounds the hot copies (manifests, tag and guarding answers) in bytes;
    /// `stored_bytes` is what the storage holds now (see [`Storage::total_size`]).
    pub fn new(
        storage: Arc<Storage>,
        metrics: Arc<Metrics>,
        memory_bytes: u64,
        budget: Budget,
        stored_bytes: u64,
    ) -> Self {
        // Manifests are what is large; tag and guarding answers are a few hundred bytes each.
        let small = memory_bytes / 8;
        Cache {
            storage,
            inflight: Mutex::new(HashMap::new()),
            budget,
            usage: Arc::new(Usage::new(
                stored_bytes,
                Arc::clone(&metrics.storage_used_bytes),
            )),
            manifests: moka::sync::Cache::builder()
                .max_capacity(memory_bytes - 2 * small)
                .weigher(|_, m: &Arc<StoredManifest>| {
                    weight(m.body.len() + m.media_type.len() + 2 * DIGEST_BYTES)
                })
                .build(),
            tags: moka::sync::Cache::builder()
                .max_capacity(small)
                .weigher(|key: &Vec<u8>, r: &TagRecord| {
                    weight(key.len() + DIGEST_BYTES + r.media_type.len())
                })
                .build(),
            guarded: moka::sync::Cache::builder()
                .max_capacity(small)
                .weigher(|key: &String, _| weight(key.len()))
                .build(),
            mapped: mapping::Mappings::new(KEPT_MAPPINGS_BYTES),
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The storage below, for the private projects, which write through it directly.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The size of a stored blob, if it is stored.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        Ok(self.storage.index.blob(digest)?.map(|r| r.size))
    }

    /// A stored blob's body, kept from eviction while it lives. `None` when the blob is not
    /// stored (or its file has gone missing underneath the index).
    pub async fn stored_blob(&self, digest: &Digest) -> Result<Option<BlobBody>, StorageError> {
        // Guarded before it is mapped, so that eviction cannot come between.
        let guard = ServingGuard::new(&self.usage, digest);
        Ok(self
            .map_blob(digest)
            .await?
            .map(|mapped| BlobBody::stored(mapped, guard)))
    }

    /// Maps a stored blob into memory. `None` (and the index entry dropped) when its file has
    /// gone missing underneath the index.
    async fn map_blob(&self, digest: &Digest) -> Result<Option<Bytes>, StorageError> {
        let storage = Arc::clone(&self.storage);
        let d = digest.clone();
        let mapped = self
            .mapped
            .get_or_map(digest, move || storage.blobs.open_blob(&d))
            .await?;
        if mapped.is_none() {
            let storage = Arc::clone(&self.storage);
            let d = digest.clone();
            blocking(move || storage.index.remove_blob(&d).map(drop)).await?;
        }
        Ok(mapped)
    }

    /// The blob from disk, or from the fill that is fetching it: joins a fill in flight, or
    /// starts one with `fetch`. `fetch` runs only when this call starts the fill.
    pub async fn blob_or_fill<F, Fut>(
        self: &Arc<Self>,
        digest: &Digest,
        fetch: F,
    ) -> Result<BlobBody, StorageError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FillSource, SourceError>> + Send + 'static,
    {
        if let Some(fill) = self.inflight_fill(digest) {
            metrics::inc(&self.metrics.blob_coalesced);
            return Ok(BlobBody::filling(fill));
        }
        if let Some(record) = self.storage.index.blob(digest)? {
            if let Some(body) = self.stored_blob(digest).await? {
                metrics::inc(&self.metrics.blob_hits);
                self.storage.index.touch(digest, record)?;
                return Ok(body);
            }
        }
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
        metrics::inc(&self.metrics.upstream_blob_gets);
        let response = fetch();
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
            let result = writer.run(response.await, commit).await;
            match result {
                Ok(bytes) => {
                    metrics::add(&cache.metrics.upstream_bytes, bytes);
                }
                Err(e) => {
                    metrics::inc(&cache.metrics.fills_failed);
                    // The only source a fill has is upstream.
                    if matches!(&*e, FillError::Source(_)) {
                        metrics::inc(&cache.metrics.upstream_errors);
                    }
                    tracing::warn!(digest = %d, error = %e, "blob fetch discarded");
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
            cache.evict_if_needed();
        });
        Ok(BlobBody::filling(fill))
    }

    fn is_in_flight(&self, digest: &Digest) -> bool {
        self.inflight_fill(digest).is_some()
    }

    fn inflight_fill(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }

    /// A stored manifest, from memory or disk (verified again when read from disk).
    pub async fn manifest(
        &self,
        digest: &Digest,
    ) -> Result<Option<Arc<StoredManifest>>, StorageError> {
        if let Some(hot) = self.manifests.get(digest) {
            return Ok(Some(hot));
        }
        let Some(record) = self.storage.index.blob(digest)? else {
            return Ok(None);
        };
        // Too large to be a manifest: a layer.
        if record.size > MAX_MANIFEST_BYTES as u64 {
            return Ok(None);
        }
        let storage = Arc::clone(&self.storage);
        let d = digest.clone();
        let body =
            blocking(move || storage.blobs.read_small(&d, MAX_MANIFEST_BYTES as u64)).await?;
        let Some(body) = body.filter(|b| Digest::of(b) == *digest) else {
            tracing::warn!(%digest, "stored manifest is missing or corrupt; dropping it");
            self.storage.index.remove_blob(digest)?;
            return Ok(None);
        };
        // Recovery re-indexes files without knowing what they are; a manifest tells by itself.
        let media_type = match record.media_type {
            Some(media_type) => media_type,
            None => {
                let Some(sniffed) = media::sniff_manifest(&body) else {
                    return Ok(None);
                };
                self.storage
                    .index
                    .put_blob(digest, &BlobRecord::new(record.size, Some(sniffed.clone())))?;
                sniffed
            }
        };
        let manifest = Arc::new(StoredManifest {
            digest: digest.clone(),
            media_type,
            body: Bytes::from(body),
        });
        self.manifests.insert(digest.clone(), Arc::clone(&manifest));
        Ok(Some(manifest))
    }

    /// Stores a manifest whose digest the caller computed from `body`.
    pub async fn put_manifest(
        self: &Arc<Self>,
        manifest: StoredManifest,
    ) -> Result<Arc<StoredManifest>, StorageError> {
        let manifest = Arc::new(manifest);
        if self.storage.index.blob(&manifest.digest)?.is_none() {
            let storage = Arc::clone(&self.storage);
            let m = Arc::clone(&manifest);
            // Durable before the client hears of it, like the blob file itself.
            let new = blocking(move || {
                storage.store_bytes(&m.digest, &m.body, Some(m.media_type.clone()))
            })
            .await?;
            self.stored(manifest.body.len() as u64, new);
        }
        self.manifests
            .insert(manifest.digest.clone(), Arc::clone(&manifest));
        Ok(manifest)
    }

    /// Stores a pushed manifest (digest computed from `body` by the caller) and records it in
    /// its repository, in one step that eviction cannot come between.
    pub async fn put_pushed_manifest(
        self: &Arc<Self>,
        pushed: PushedManifest<'_>,
        body: Bytes,
    ) -> Result<(), StorageError> {
        let storage = Arc::clone(&self.storage);
        let size = body.len() as u64;
        // The blocking pool needs owned values: the borrowed record is rebuilt on its side.
        let (repo, digest, media_type) = (
            pushed.repo.clone(),
            pushed.digest.clone(),
            pushed.media_type.to_owned(),
        );
        let (tag, referrer) = (
            pushed.tag.cloned(),
            pushed.referrer.map(|(s, r)| (s.clone(), r.clone())),
        );
        let stored_body = body.clone();
        let new = blocking(move || {
            let pushed = PushedManifest {
                repo: &repo,
                digest: &digest,
                media_type: &media_type,
                size,
                tag: tag.as_ref(),
                referrer: referrer.as_ref().map(|(s, r)| (s, r)),
            };
            storage.store_pushed_manifest(&pushed, &stored_body)
        })
        .await?;
        self.stored(size, new);
        let manifest = StoredManifest {
            digest: pushed.digest.clone(),
            media_type: pushed.media_type.to_owned(),
            body,
        };
        self.manifests
            .insert(manifest.digest.clone(), Arc::new(manifest));
        Ok(())
    }

    pub fn tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<TagRecord>, StorageError> {
        let key = tag_key(upstream, repo, tag);
        if let Some(hot) = self.tags.get(&key) {
            return Ok(Some(hot));
        }
        let record = self.storage.index.tag(upstream, repo, tag)?;
        if let Some(record) = &record {
            self.tags.insert(key, record.clone());
        }
        Ok(record)
    }

    /// Records a tag answer, durably: it is written at most once per TTL, and an air-gapped
    /// site must not lose what it was seeded with to a crash.
    pub async fn put_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
        record: TagRecord,
    ) -> Result<(), StorageError> {
        self.storage.index.put_tag(upstream, repo, tag, &record)?;
        self.tags.insert(tag_key(upstream, repo, tag), record);
        self.storage.index.flush_async().await?;
        Ok(())
    }

    pub fn remove_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(), StorageError> {
        self.tags.invalidate(&tag_key(upstream, repo, tag));
        self.storage.index.remove_tag(upstream, repo, tag)?;
        Ok(())
    }

    /// Whether upstream serves `upstream/repo` only with credentials: open, unsure or guarded.
    pub fn guarding(&self, key: &str) -> Result<Guarding, StorageError> {
        if let Some(known) = self.guarded.get(key) {
            return Ok(known);
        }
        let guarding = self.storage.index.guarding(key)?;
        self.guarded.insert(key.to_owned(), guarding);
        Ok(guarding)
    }

    pub async fn mark_guarded(&self, key: &str) -> Result<(), StorageError> {
        self.change_guarding(key, |index| index.mark_guarded(key))
            .await
    }

    pub async fn mark_unsure(&self, key: &str) -> Result<(), StorageError> {
        self.change_guarding(key, |index| index.mark_unsure(key))
            .await
    }

    pub async fn clear_unsure(&self, key: &str) -> Result<(), StorageError> {
        self.change_guarding(key, |index| index.clear_unsure(key))
            .await
    }

    pub async fn mark_open(&self, key: &str) -> Result<(), StorageError> {
        self.change_guarding(key, |index| index.mark_open(key))
            .await
    }

    /// Applies a change to the index durably (flushed off the async workers); the next lookup
    /// reads the outcome back.
    async fn change_guarding(
        &self,
        key: &str,
        change: impl FnOnce(&Index) -> Result<(), IndexError>,
    ) -> Result<(), StorageError> {
        change(&self.storage.index)?;
        self.storage.index.flush_async().await?;
        self.guarded.invalidate(key);
        Ok(())
    }

    pub fn tags_of(&self, upstream: &str, repo: &RepoName) -> Result<Vec<String>, StorageError> {
        Ok(self.storage.index.tags_of(upstream, repo)?)
    }

    /// Records that `upstream/repo` holds `digest` (fetched through it, or confirmed by
    /// upstream); `media_type` is a manifest's, empty for a blob.
    pub fn link(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), StorageError> {
        self.storage
            .index
            .link(upstream, repo, digest, media_type)?;
        Ok(())
    }

    /// `Some(media type)` (empty for a blob) when `upstream/repo` may serve `digest`.
    pub fn linked(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<String>, StorageError> {
        Ok(self.storage.index.linked(upstream, repo, digest)?)
    }

    pub fn flush(&self) -> Result<(), StorageError> {
        self.storage.index.flush()?;
        Ok(())
    }
}

/// Runs blocking storage work off the async executor.
async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, StorageError>
where
    T: Send + 'static,
    E: Into<StorageError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hot_manifests_are_bounded_in_bytes_and_the_rest_is_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let budget = Budget {
            max_bytes: None,
            low_water_percent: 90,
        };
        // 8 MiB of memory: 6 MiB for manifests, where 32 manifests of 1 MiB do not fit.
        let cache = Arc::new(Cache::new(
            Arc::new(storage),
            Arc::default(),
            8 << 20,
            budget,
            0,
        ));
        let mut digests = Vec::new();
        for i in 0..32u8 {
            let mut body = format!("{{\"schemaVersion\":2,\"n\":{i},\"pad\":\"").into_bytes();
            body.resize(1 << 20, b'x');
            body.extend_from_slice(b"\"}");
            let digest = Digest::of(&body);
            cache
                .put_manifest(StoredManifest {
                    digest: digest.clone(),
                    media_type: media::OCI_MANIFEST.to_owned(),
                    body: Bytes::from(body),
                })
                .await
                .unwrap();
            digests.push(digest);
        }
        for _ in 0..4 {
            cache.manifests.run_pending_tasks();
        }
        assert!(cache.manifests.weighted_size() <= 6 << 20);
        assert!(cache.manifests.entry_count() <= 6);
        // What memory could not keep is still there, from disk.
        for digest in &digests {
            let manifest = cache.manifest(digest).await.unwrap().unwrap();
            assert_eq!(&manifest.digest, digest);
        }
    }
}

//! The cache engine: what is stored, what is in flight, and the hot in-memory copies.
//!
//! It owns the single-flight map of blob fills ([`fill`]), keeps verified manifests and fresh
//! tag answers in moka so the manifest hot path touches neither sled nor the disk, and is the
//! only writer of the [`Storage`]. It decides nothing about upstreams: the registry layer hands
//! it a future that fetches, and it runs that future at most once per digest at a time.

mod answers;
mod blobs;
mod body;
pub mod collect;
#[cfg(test)]
mod collect_tests;
pub mod evict;
pub mod fill;
pub mod flight;
pub mod inventory;
mod manifests;
mod mapping;
mod passing;
mod reconcile;
mod shared;
mod unlink;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use self::blobs::Keep;
pub use self::body::BlobBody;
use self::evict::{Budget, Usage};
use self::fill::Fill;
pub use self::manifests::StoredManifest;
pub use self::passing::SharedReads;
use crate::memory::weight;
use crate::metrics::Metrics;
use crate::oci::{Digest, RepoName, Tag};
use crate::storage::index::{tag_key, Guarding, Index, IndexError, TagRecord};
use crate::storage::shared::SharedStore;
use crate::storage::{Storage, StorageError};

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
    /// The store of record shared by every node, when configured: the local storage is then a
    /// tier in front of it ([`shared`]).
    shared: Option<shared::Tier>,
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
                .weigher(|_, m: &Arc<StoredManifest>| weight(m.heap_bytes()))
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
            shared: None,
        }
    }

    /// Puts the shared store behind the local storage; `reads` is what a read straight from
    /// it to a client checks.
    pub fn with_shared(mut self, store: Arc<SharedStore>, reads: SharedReads) -> Self {
        self.shared = Some(shared::Tier::new(store, reads));
        self
    }

    /// The store of record every node shares, if there is one.
    pub fn shared(&self) -> Option<&Arc<SharedStore>> {
        self.shared.as_ref().map(|tier| &tier.store)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What the store holds, for `/metrics`: the index's running totals and the uploads in
    /// progress. Blocks; `None` when the store cannot be read.
    pub fn stored_totals(&self) -> Option<crate::metrics::Stored> {
        use crate::metrics::StoredKind;
        let totals = self.storage.blob_stats().ok()?;
        let uploads = self.storage.blobs.upload_ids().ok()?.len() as u64;
        let by_kind = self.storage.index.kind_totals().ok().flatten().map(|k| {
            [("manifest", k.manifests), ("blob", k.blobs)].map(|(kind, t)| StoredKind {
                kind,
                blobs: t.blobs,
                bytes: t.bytes,
            })
        });
        Some(crate::metrics::Stored {
            blobs: totals.blobs,
            bytes: totals.bytes,
            uploads,
            by_kind,
        })
    }

    /// The storage below, for the private projects, which write through it directly.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
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

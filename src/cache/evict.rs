//! Keeping the cache within its disk budget: least recently used blobs go first, down to the
//! low-water mark; a blob that is being served or fetched, that a pinned image holds, or that
//! belongs to a private project, is never evicted.
//!
//! Usage is tracked in memory (summed from the index and the uploads at startup, then adjusted
//! on every store and removal, and shown as the `berth_storage_used_bytes` gauge). A digest is
//! counted once, by the store that added it; bytes of uploads in progress count too, and go
//! when the upload ends. Eviction runs on a blocking thread, one run at a time, whenever a
//! store takes usage past the budget; each removal holds the digest's lock in the storage, so
//! a push of that digest either sees it gone or keeps it (see `storage::store`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Cache;
use crate::metrics;
use crate::oci::Digest;
use crate::storage::index::BlobRecord;
use crate::storage::{StorageError, UPLOAD_EXPIRY};

/// How many eviction candidates one scan of the index reads (about 100 bytes each in memory).
const EVICT_ROUND: usize = 16_384;
/// How many blobs one eviction transaction removes (each thread of `Storage::evict_many`).
const EVICT_CHUNK: usize = 64;

/// The disk budget and where eviction stops.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_bytes: Option<u64>,
    pub low_water_percent: u8,
}

impl Budget {
    pub fn unlimited() -> Self {
        Budget {
            max_bytes: None,
            low_water_percent: 90,
        }
    }

    fn target(&self, max: u64) -> u64 {
        max / 100 * u64::from(self.low_water_percent)
    }
}

/// Bytes stored, and who is reading which blob right now.
#[derive(Default)]
pub struct Usage {
    /// Shared with the metrics, which show it as a gauge.
    bytes: Arc<AtomicU64>,
    evicting: AtomicBool,
    serving: Mutex<HashMap<Digest, usize>>,
}

impl Usage {
    /// Starts at `initial` bytes, kept in `counter`.
    pub fn new(initial: u64, counter: Arc<AtomicU64>) -> Self {
        counter.store(initial, Ordering::Relaxed);
        Usage {
            bytes: counter,
            ..Usage::default()
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(super) fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sub(&self, n: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }

    pub(super) fn is_serving(&self, digest: &Digest) -> bool {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(digest)
    }
}

/// Held by a response body for as long as it streams a stored blob.
pub struct ServingGuard {
    usage: Arc<Usage>,
    digest: Digest,
}

impl ServingGuard {
    pub(super) fn new(usage: &Arc<Usage>, digest: &Digest) -> Self {
        *usage
            .serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.clone())
            .or_insert(0) += 1;
        ServingGuard {
            usage: Arc::clone(usage),
            digest: digest.clone(),
        }
    }
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        let mut serving = self.usage.serving.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = serving.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                serving.remove(&self.digest);
            }
        }
    }
}

/// What one eviction run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Eviction {
    pub blobs: usize,
    pub bytes: u64,
}

impl Cache {
    /// Accounts for bytes appended to an upload: they are on disk, so they count.
    pub fn upload_grew(self: &Arc<Self>, bytes: u64) {
        self.usage.add(bytes);
        self.evict_if_needed();
    }

    /// Accounts for an upload file removed (failed, cancelled, expired).
    pub fn upload_freed(&self, bytes: u64) {
        self.usage.sub(bytes);
    }

    /// Accounts for a finished upload of `size` bytes: its file became the blob (`new`, and
    /// its bytes are counted already), or was dropped because the blob was there.
    pub fn upload_stored(&self, size: u64, new: bool) {
        if !new {
            self.usage.sub(size);
        }
    }

    /// Removes abandoned uploads (older than [`UPLOAD_EXPIRY`]) and frees their space; how
    /// many went. Blocks.
    pub fn expire_uploads(&self) -> Result<usize, StorageError> {
        let (removed, bytes) = self.storage.expire_uploads(UPLOAD_EXPIRY)?;
        self.usage.sub(bytes);
        Ok(removed)
    }

    /// Bytes stored and in uploads, as counted against `storage.max_size`.
    pub fn used_bytes(&self) -> u64 {
        self.usage.bytes()
    }

    /// Counts bytes a store added (only when it was the one that added the digest).
    pub(super) fn stored(self: &Arc<Self>, size: u64, new: bool) {
        if new {
            self.usage.add(size);
            self.evict_if_needed();
        }
    }

    /// Starts an eviction run in the background if usage is past the budget.
    pub fn evict_if_needed(self: &Arc<Self>) {
        let Some(max) = self.budget.max_bytes else {
            return;
        };
        if self.usage.bytes() <= max || self.usage.evicting.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = Arc::clone(self);
        // A thread of its own, at a lower priority (its removal threads inherit it), so that
        // requests take the CPU first.
        let spawned = std::thread::Builder::new()
            .name("berth-evict".into())
            .spawn(move || {
            crate::memory::lower_priority();
            match cache.evict_to(cache.budget.target(max)) {
                Ok(done) => {
                    if done.blobs > 0 {
                        tracing::info!(
                            blobs = done.blobs,
                            bytes = done.bytes,
                            "evicted least recently used blobs"
                        );
                    }
                    let stored = cache.usage.bytes();
                    if stored > max {
                        tracing::warn!(
                            stored,
                            max_size = max,
                            "the cache stays over storage.max_size: what is left is pinned, private or in use"
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "eviction failed"),
            }
            crate::memory::release_freed();
            cache.usage.evicting.store(false, Ordering::Release);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start eviction");
            self.usage.evicting.store(false, Ordering::Release);
        }
    }

    /// Evicts least recently used blobs until usage is at most `target` bytes. Blocks.
    /// Candidates are read from the index in LRU order a round of [`EVICT_ROUND`] at a time,
    /// never all of them; blobs used after the run began are not candidates (they are the
    /// most recent now).
    pub fn evict_to(&self, target: u64) -> Result<Eviction, StorageError> {
        self.evict_in_rounds(target, EVICT_ROUND)
    }

    fn evict_in_rounds(&self, target: u64, round_size: usize) -> Result<Eviction, StorageError> {
        if self.usage.bytes() <= target {
            return Ok(Eviction::default());
        }
        let began = crate::storage::index::now_ms();
        let pinned = self.storage.index.pinned_blobs()?;
        let mut after = None;
        let done = Mutex::new(Eviction::default());
        while self.usage.bytes() > target {
            let round =
                self.storage
                    .index
                    .least_recently_used(after.as_ref(), began, round_size)?;
            let Some(last) = round.last().cloned() else {
                break;
            };
            after = Some(last);
            let mut rest = round.as_slice();
            while !rest.is_empty() && self.usage.bytes() > target {
                // The oldest candidates whose bytes cover what is over: removed together, by
                // several threads (unlinks wait on the disk; see `Storage::evict_many`).
                let over = self.usage.bytes() - target;
                let mut covered = 0;
                let n = rest
                    .iter()
                    .position(|used| {
                        covered += used.size;
                        covered >= over
                    })
                    .map_or(rest.len(), |i| i + 1);
                let (batch, tail) = rest.split_at(n);
                rest = tail;
                let digests = batch.iter().map(|used| used.digest.clone()).collect();
                self.storage.evict_many(
                    digests,
                    EVICT_CHUNK,
                    |digest| {
                        self.usage.is_serving(digest)
                            || self.is_in_flight(digest)
                            || pinned.contains(digest)
                    },
                    |removed| self.evicted(removed, &done),
                )?;
            }
        }
        self.storage.index.flush()?;
        Ok(done.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// Blobs gone from the index and the disk: the copies in memory go too (mappings still
    /// being read stay valid), and the usage and counts follow.
    fn evicted(&self, removed: &[(Digest, BlobRecord)], done: &Mutex<Eviction>) {
        let mut done = done.lock().unwrap_or_else(|p| p.into_inner());
        for (digest, record) in removed {
            self.mapped.invalidate(digest);
            self.manifests.invalidate(digest);
            self.usage.sub(record.size);
            metrics::inc(&self.metrics.evictions);
            done.blobs += 1;
            done.bytes += record.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::index::BlobRecord;
    use crate::storage::Storage;

    fn cache_with(blobs: &[(&[u8], u64)]) -> (tempfile::TempDir, Arc<Cache>, Vec<Digest>) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut digests = Vec::new();
        for (data, stamp) in blobs {
            let digest = Digest::of(data);
            storage.blobs.write_verified(&digest, data).unwrap();
            let mut record = BlobRecord::new(data.len() as u64, None);
            record.last_access_ms = *stamp;
            storage.index.put_blob(&digest, &record).unwrap();
            digests.push(digest);
        }
        let total = storage.total_size().unwrap();
        let budget = Budget {
            max_bytes: Some(1),
            low_water_percent: 90,
        };
        let cache = Cache::new(Arc::new(storage), Arc::default(), 10, budget, total);
        (dir, Arc::new(cache), digests)
    }

    #[test]
    fn evicts_least_recently_used_first_and_spares_what_is_served() {
        let (_dir, cache, d) =
            cache_with(&[(b"aaaa", 10), (b"bbbb", 20), (b"cccc", 30), (b"dddd", 40)]);
        assert_eq!(cache.usage.bytes(), 16);
        // The oldest blob is being served: it must survive.
        let guard = ServingGuard::new(&cache.usage, &d[0]);
        let done = cache.evict_to(8).unwrap();
        assert_eq!(done, Eviction { blobs: 2, bytes: 8 });
        assert_eq!(cache.usage.bytes(), 8);
        assert!(
            cache.blob_size(&d[0]).unwrap().is_some(),
            "a blob in use was evicted"
        );
        assert!(cache.blob_size(&d[1]).unwrap().is_none());
        assert!(cache.blob_size(&d[2]).unwrap().is_none());
        assert!(cache.blob_size(&d[3]).unwrap().is_some());
        assert!(!cache.storage.blobs.path(&d[1]).exists());
        // Released, it is the least recently used and goes next.
        drop(guard);
        assert_eq!(cache.evict_to(4).unwrap(), Eviction { blobs: 1, bytes: 4 });
        assert!(cache.blob_size(&d[0]).unwrap().is_none());
        assert_eq!(cache.metrics().evictions.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn pinned_blobs_are_never_evicted() {
        let (_dir, cache, d) = cache_with(&[(b"aaaa", 10), (b"bbbb", 20), (b"cccc", 30)]);
        let pin = crate::storage::index::PinRecord {
            digest: d[0].clone(),
            blobs: vec![d[0].clone(), d[1].clone()],
            seeded_ms: 1,
        };
        cache.storage.index.put_pin("app:1", &pin).unwrap();
        assert_eq!(cache.evict_to(0).unwrap(), Eviction { blobs: 1, bytes: 4 });
        assert!(cache.blob_size(&d[0]).unwrap().is_some());
        assert!(cache.blob_size(&d[1]).unwrap().is_some());
        assert!(cache.blob_size(&d[2]).unwrap().is_none());
        // Unpinned, they are ordinary cache content again.
        cache.storage.index.remove_pin("app:1").unwrap();
        assert_eq!(cache.evict_to(0).unwrap(), Eviction { blobs: 2, bytes: 8 });
    }

    #[test]
    fn rounds_keep_the_order_and_go_past_what_is_spared() {
        let blobs: Vec<(Vec<u8>, u64)> = (0..10u8).map(|n| (vec![n; 4], 100 - n as u64)).collect();
        let borrowed: Vec<(&[u8], u64)> = blobs.iter().map(|(d, s)| (d.as_slice(), *s)).collect();
        let (_dir, cache, d) = cache_with(&borrowed);
        // Oldest first: 9, 8, 7, ... The three oldest are in use, a whole first round of 3.
        let guards: Vec<_> = d[7..]
            .iter()
            .map(|d| ServingGuard::new(&cache.usage, d))
            .collect();
        let done = cache.evict_in_rounds(40 - 16, 3).unwrap();
        assert_eq!(
            done,
            Eviction {
                blobs: 4,
                bytes: 16
            }
        );
        for (n, digest) in d.iter().enumerate() {
            let kept = cache.blob_size(digest).unwrap().is_some();
            assert_eq!(kept, !(3..7).contains(&n), "blob {n}");
        }
        drop(guards);
    }

    #[test]
    fn nothing_to_do_under_budget() {
        let (_dir, cache, _) = cache_with(&[(b"aaaa", 10)]);
        assert_eq!(cache.evict_to(100).unwrap(), Eviction::default());
    }
}

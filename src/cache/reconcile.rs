//! The cache's side of startup and shutdown: background reconciliation after an unclean stop
//! (see `storage::recover`), moving an index from before buckets into them and the one count
//! of the per-kind totals an older index lacks,
//! eviction when a start finds the cache over its budget, and the clean-shutdown mark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Cache;
use crate::oci::Digest;
use crate::storage::recover::Change;
use crate::storage::StorageError;

/// Reconciliation rests this long after every `PACE_EVERY` items, so that on a small machine
/// requests are not slowed by it (a million blobs: about 4 s of rest in all).
const PACE_REST: Duration = Duration::from_millis(1);
const PACE_EVERY: u32 = 256;

impl Cache {
    /// Starts what a fresh start owes, in the background: reconciliation after an unclean
    /// stop, and eviction when the cache is over its budget (a lowered `max_size`). Call once
    /// serving, inside the runtime.
    pub fn after_start(self: &Arc<Self>) {
        if self.storage.is_unreconciled() {
            let cache = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("berth-reconcile".into())
                .spawn(move || {
                    crate::memory::lower_priority();
                    cache.reconcile()
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start storage reconciliation");
            }
        }
        let cache = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("berth-index-upkeep".into())
            .spawn(move || {
                crate::memory::lower_priority();
                if cache.migrate_index() {
                    cache.count_kinds();
                }
                crate::memory::release_freed();
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the index's upkeep");
        }
        self.evict_if_needed();
    }

    /// Moves an index from before buckets into them, paced, while requests are served (reads
    /// fall back to the old layout until then). False when that failed. Blocks.
    fn migrate_index(&self) -> bool {
        let index = &self.storage.index;
        if !index.has_legacy() {
            return true;
        }
        let started = Instant::now();
        match index.migrate_legacy(PACE_EVERY as usize, || std::thread::sleep(PACE_REST)) {
            Ok(moved) => {
                tracing::info!(
                    secs = format_args!("{:.1}", started.elapsed().as_secs_f64()),
                    blobs = moved.blobs,
                    links = moved.links,
                    "index moved to its compact layout"
                );
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "moving the index to its compact layout failed; the next start goes on");
                false
            }
        }
    }

    /// Counts the stored blobs per kind, once, for an index from before they were kept
    /// (until then `/metrics` leaves those series out). Blocks; returns at once when they
    /// are kept already.
    fn count_kinds(&self) {
        let index = &self.storage.index;
        if !matches!(index.kind_totals(), Ok(None)) {
            return;
        }
        let started = Instant::now();
        match index.count_kinds(PACE_EVERY as usize, || std::thread::sleep(PACE_REST)) {
            Ok(kinds) => tracing::info!(
                secs = format_args!("{:.1}", started.elapsed().as_secs_f64()),
                manifests = kinds.manifests.blobs,
                blobs = kinds.blobs.blobs,
                "stored blobs counted by kind"
            ),
            Err(e) => {
                tracing::error!(error = %e, "counting stored blobs by kind failed; the next start goes on")
            }
        }
    }

    /// Reconciles disk and index while requests are served. Blocks.
    fn reconcile(&self) {
        let started = Instant::now();
        let mut since_rest = 0;
        let pace = || {
            since_rest += 1;
            if since_rest == PACE_EVERY {
                since_rest = 0;
                std::thread::sleep(PACE_REST);
            }
        };
        match self
            .storage
            .reconcile(pace, |change| self.reconciled(change))
        {
            Ok(report) => tracing::info!(
                secs = format_args!("{:.1}", started.elapsed().as_secs_f64()),
                entries_dropped = report.entries_dropped,
                files_reindexed = report.files_reindexed,
                files_removed = report.files_removed,
                "storage reconciled"
            ),
            Err(e) => {
                tracing::error!(error = %e, "storage reconciliation failed; the next start tries again")
            }
        }
        crate::memory::release_freed();
    }

    fn reconciled(&self, change: Change) {
        match change {
            Change::Dropped(digest, size) => self.forget(&digest, size),
            Change::Adopted(_, size) => self.usage.add(size),
        }
    }

    /// A blob's entry went from under a reader (its file missing or of the wrong size): its
    /// copies in memory go too, and its bytes no longer count.
    pub(super) fn forget(&self, digest: &Digest, size: u64) {
        self.mapped.invalidate(digest);
        self.manifests.invalidate(digest);
        self.usage.sub(size);
    }

    /// Flushes the index and, when nothing is left to reconcile, marks the stop clean, so
    /// that the next start trusts the index. Call last. Blocks.
    pub fn close(&self) -> Result<bool, StorageError> {
        self.storage.mark_clean_shutdown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::evict::Budget;
    use crate::storage::Storage;

    /// After a crash, before reconciliation: a read that finds the file missing or of the
    /// wrong size is a miss, the entry goes, and its bytes no longer count.
    #[tokio::test]
    async fn a_broken_entry_met_on_the_request_path_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let (lost, short, good) = (
            b"lost file".to_vec(),
            b"cut short".to_vec(),
            b"good".to_vec(),
        );
        let digests: Vec<Digest> = [&lost, &short, &good]
            .iter()
            .map(|data| {
                let digest = Digest::of(data);
                storage.store_bytes(&digest, data, None).unwrap();
                digest
            })
            .collect();
        std::fs::remove_file(storage.blobs.path(&digests[0])).unwrap();
        std::fs::write(storage.blobs.path(&digests[1]), b"cut").unwrap();
        assert!(!storage.start().unwrap().clean);
        let total = storage.total_size().unwrap();
        let cache = Arc::new(Cache::new(
            Arc::new(storage),
            Arc::default(),
            1 << 20,
            Budget::unlimited(),
            total,
        ));
        assert_eq!(cache.used_bytes(), 22);
        assert!(cache.stored_blob(&digests[0]).await.unwrap().is_none());
        assert!(cache.stored_blob(&digests[1]).await.unwrap().is_none());
        assert!(cache.blob_size(&digests[0]).unwrap().is_none());
        assert!(cache.blob_size(&digests[1]).unwrap().is_none());
        assert_eq!(cache.used_bytes(), 4);
        let body = cache.stored_blob(&digests[2]).await.unwrap().unwrap();
        drop(body);
        // Reconciliation finds nothing left to do, and the stop can then be marked clean.
        cache.reconcile();
        assert!(!cache.storage.is_unreconciled());
        assert_eq!(cache.used_bytes(), 4);
        assert!(cache.close().unwrap());
    }
}

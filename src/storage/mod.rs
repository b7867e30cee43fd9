//! Persistence: blob files ([`blobs`]) and the metadata index ([`index`]), and the recovery
//! that makes the two agree after a crash at any point ([`recover`]).
//!
//! The write order is always: temp file → fsync → rename into `blobs/` → index entry. A crash
//! can therefore leave (a) garbage in `tmp/`, (b) a complete, verified file that is not indexed
//! yet, or (c) after a lost disk or an eviction cut short, an index entry without its file.

pub mod blobs;
pub mod gc;
pub mod index;
pub mod migrate;
pub mod recover;
pub mod shared;
pub mod store;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use self::blobs::BlobStore;
use self::index::{Index, IndexError};
pub use self::recover::{Recovery, Startup};
use self::store::DigestLocks;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Shared(#[from] shared::SharedError),
}

/// Abandoned uploads are removed after this long.
pub const UPLOAD_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub struct Storage {
    pub blobs: BlobStore,
    pub index: Index,
    /// Held by every change to a digest's file and index entry together ([`store`]).
    locks: DigestLocks,
    data_dir: PathBuf,
    /// Set from an unclean start until reconciliation has been through everything.
    unreconciled: AtomicBool,
}

impl Storage {
    /// Opens (creating when needed) the storage under `data_dir`. Blocks.
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(data_dir)?;
        Ok(Storage {
            blobs: BlobStore::open(data_dir)?,
            index: Index::open(&data_dir.join("index"))?,
            locks: DigestLocks::default(),
            data_dir: data_dir.to_owned(),
            unreconciled: AtomicBool::new(false),
        })
    }

    /// The directory everything of this storage is under.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Bytes on disk that count against the budget: every indexed blob (from the index's
    /// running totals), and uploads in progress.
    pub fn total_size(&self) -> Result<u64, StorageError> {
        let mut uploads = 0;
        for id in self.blobs.upload_ids()? {
            uploads += self.blobs.upload_size(&id)?;
        }
        Ok(self.index.totals()?.bytes + uploads)
    }

    /// Removes uploads older than `max_age`, upload records without a file and upload files
    /// without a record. Returns how many uploads went, and the bytes they held.
    pub fn expire_uploads(
        &self,
        max_age: std::time::Duration,
    ) -> Result<(usize, u64), StorageError> {
        let now = index::now_ms();
        let (mut removed, mut bytes) = (0, 0);
        let mut live = std::collections::HashSet::new();
        for (id, record) in self.index.uploads()? {
            let expired = now.saturating_sub(record.started_ms) > max_age.as_millis() as u64;
            if expired || !self.blobs.upload_path(&id).exists() {
                bytes += self.blobs.upload_size(&id)?;
                self.index.remove_upload(&id)?;
                self.blobs.remove_upload(&id)?;
                removed += 1;
            } else {
                live.insert(id);
            }
        }
        for id in self.blobs.upload_ids()? {
            if !live.contains(&id) {
                bytes += self.blobs.upload_size(&id)?;
                self.blobs.remove_upload(&id)?;
                removed += 1;
            }
        }
        Ok((removed, bytes))
    }

    /// Drops an upload: its record and its file. The bytes it held. Blocks.
    pub fn discard_upload(&self, id: &str) -> Result<u64, StorageError> {
        let bytes = self.blobs.upload_size(id)?;
        self.index.remove_upload(id)?;
        self.blobs.remove_upload(id)?;
        Ok(bytes)
    }
}

/// Opens again what a test just closed. sled's flusher thread lets go of the directory's lock
/// a moment after the last handle is dropped, so an immediate reopen can find it still held.
#[cfg(test)]
pub(crate) fn reopened<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
    for _ in 0..300 {
        match open() {
            Ok(opened) => return opened,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reopen failed: {e}"),
        }
    }
    panic!("the index stayed locked for 3 s after it was closed");
}

#[cfg(test)]
mod reopen_tests {
    use super::*;

    /// The helper waits out a lock still held, and only that.
    #[test]
    fn a_locked_index_is_opened_once_it_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let held = Storage::open(dir.path()).unwrap();
        let Err(e) = Storage::open(dir.path()) else {
            panic!("a second open got the lock");
        };
        assert!(e.to_string().contains("could not acquire lock"), "{e}");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(held);
        });
        let _again = reopened(|| Storage::open(dir.path()));
        releaser.join().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;
    use crate::storage::index::BlobRecord;

    #[test]
    fn recovery_after_a_crash_at_each_step() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"good blob".to_vec();
        let good_digest = Digest::of(&good);
        let unindexed = b"renamed but not indexed".to_vec();
        let unindexed_digest = Digest::of(&unindexed);
        let lost_digest = Digest::of(b"file lost");
        let corrupt_digest = Digest::of(b"what the name promises");
        {
            let storage = Storage::open(dir.path()).unwrap();
            storage.blobs.write_verified(&good_digest, &good).unwrap();
            storage
                .index
                .put_blob(&good_digest, &BlobRecord::new(good.len() as u64, None))
                .unwrap();
            // Crash between rename and index.
            storage
                .blobs
                .write_verified(&unindexed_digest, &unindexed)
                .unwrap();
            // An index entry whose file is gone.
            storage
                .index
                .put_blob(&lost_digest, &BlobRecord::new(9, None))
                .unwrap();
            // A file whose content does not match its name, and a partial temp file.
            let corrupt_path = storage.blobs.path(&corrupt_digest);
            std::fs::create_dir_all(corrupt_path.parent().unwrap()).unwrap();
            std::fs::write(&corrupt_path, b"something else").unwrap();
            std::fs::write(dir.path().join("tmp/blob-partial"), b"half").unwrap();
            storage.index.flush().unwrap();
        }
        let storage = reopened(|| Storage::open(dir.path()));
        let report = storage.recover().unwrap();
        assert_eq!(
            report,
            Recovery {
                temp_files_removed: 1,
                uploads_removed: 0,
                entries_dropped: 1,
                files_reindexed: 1,
                files_removed: 1,
                manifest_links_repaired: 0,
            }
        );
        assert!(storage.index.blob(&good_digest).unwrap().is_some());
        assert_eq!(
            storage.index.blob(&unindexed_digest).unwrap().unwrap().size,
            unindexed.len() as u64
        );
        assert!(storage.index.blob(&lost_digest).unwrap().is_none());
        assert!(storage.index.blob(&corrupt_digest).unwrap().is_none());
        assert!(!storage.blobs.path(&corrupt_digest).exists());
        // A second recovery finds nothing to do.
        assert_eq!(storage.recover().unwrap(), Recovery::default());
    }

    /// A data directory from before `manifest_repos` holds pushed manifests that only
    /// `repo_manifests` knows: after recovery, every one of them is private, so eviction
    /// spares it, and what the blob store holds is unchanged.
    #[test]
    fn after_recovery_every_pushed_manifest_is_protected() {
        let dir = tempfile::tempdir().unwrap();
        let body = br#"{"schemaVersion":2}"#.to_vec();
        let digest = Digest::of(&body);
        {
            let storage = Storage::open(dir.path()).unwrap();
            storage.blobs.write_verified(&digest, &body).unwrap();
            storage
                .index
                .put_blob(&digest, &BlobRecord::new(body.len() as u64, None))
                .unwrap();
            storage.index.flush().unwrap();
        }
        {
            // Written the way berth did before: repo-first only, no blob link.
            let db = reopened(|| sled::open(dir.path().join("index")));
            db.open_tree("repo_manifests")
                .unwrap()
                .insert(format!("team/app@{digest}"), "application/x")
                .unwrap();
            db.flush().unwrap();
        }
        let storage = reopened(|| Storage::open(dir.path()));
        assert!(!storage.index.is_private(&digest).unwrap());
        let report = storage.recover().unwrap();
        assert_eq!(report.manifest_links_repaired, 1);
        assert!(storage.index.is_private(&digest).unwrap());
        assert_eq!(storage.evict(&digest, || false).unwrap(), None);
        assert!(storage.blobs.path(&digest).exists());
        assert_eq!(storage.recover().unwrap(), Recovery::default());
    }
}

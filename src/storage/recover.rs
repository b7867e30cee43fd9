//! Making disk and index agree, without making startup wait for it.
//!
//! A graceful shutdown ends with the index flushed and a mark, `clean-shutdown`, in the data
//! directory. [`Storage::start`] removes the mark (durably) and does only what is bounded by
//! the work in flight at the stop, never by the size of the cache: it sweeps `tmp/` and
//! expired uploads. With the mark there, the index is trusted as it is. Without it (a crash,
//! `kill -9`, a lost disk) berth serves at once too, and [`Storage::reconcile`] goes through
//! the index and the blob files in the background. Until it has, every case it exists for is
//! also handled where a request meets it:
//! - an entry whose file is missing or of another size is dropped when a read finds it so
//!   ([`Storage::drop_broken`]), and the request is a miss;
//! - an unindexed file is never served (only indexed blobs are), and a store of its digest
//!   replaces it rather than trusting it ([`super::store`]);
//! - a partial temp file is in `tmp/`, swept before serving.
//!
//! [`Storage::recover`] does all of it at once, for `berth cache gc` and tests.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::blobs::hash_file;
use super::index::{BlobRecord, Totals};
use super::{Storage, StorageError, UPLOAD_EXPIRY};
use crate::oci::Digest;

/// Written at graceful shutdown after the final flush; removed at startup.
const CLEAN_MARK: &str = "clean-shutdown";

/// What startup did before serving.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Startup {
    /// The last stop was graceful: the index is trusted, nothing is left to reconcile.
    pub clean: bool,
    pub temp_files_removed: usize,
    pub uploads_removed: usize,
    /// `manifest_repos` entries added or dropped to agree with `repo_manifests` (after an
    /// unclean stop only: the two change in one transaction).
    pub manifest_links_repaired: usize,
}

/// What a reconciliation (or a full recovery) found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub temp_files_removed: usize,
    pub uploads_removed: usize,
    pub entries_dropped: usize,
    pub files_reindexed: usize,
    pub files_removed: usize,
    /// `manifest_links_repaired` of [`Startup`].
    pub manifest_links_repaired: usize,
}

/// A change reconciliation made to what is stored, for the caller's accounting and caches.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// An index entry went (its file was missing or of another size): its recorded size.
    Dropped(Digest, u64),
    /// An unindexed file whose content matches its name was indexed: its size.
    Adopted(Digest, u64),
}

impl Storage {
    /// Gets the storage ready to serve: see the module comment. Blocks, for a time bounded by
    /// what was in flight at the last stop.
    pub fn start(&self) -> Result<Startup, StorageError> {
        let clean = self.take_clean_mark()?;
        let mut startup = Startup {
            clean,
            temp_files_removed: self.blobs.sweep_tmp()?,
            uploads_removed: self.expire_uploads(UPLOAD_EXPIRY)?.0,
            manifest_links_repaired: 0,
        };
        if !clean {
            startup.manifest_links_repaired = self.index.repair_manifest_repos()?;
            self.unreconciled.store(true, Ordering::Release);
        }
        Ok(startup)
    }

    /// True from an unclean start until [`Storage::reconcile`] has finished.
    pub fn is_unreconciled(&self) -> bool {
        self.unreconciled.load(Ordering::Acquire)
    }

    /// Flushes the index and marks the stop as clean, unless reconciliation is still owed.
    /// Call last, when nothing stores or removes anything any more. Blocks.
    pub fn mark_clean_shutdown(&self) -> Result<bool, StorageError> {
        self.index.flush()?;
        if self.is_unreconciled() {
            return Ok(false);
        }
        let mark = self.data_dir.join(CLEAN_MARK);
        fs::File::create(&mark)?.sync_all()?;
        fs::File::open(&self.data_dir)?.sync_all()?;
        Ok(true)
    }

    /// Removes the mark, durably: a crash after this must not find it.
    fn take_clean_mark(&self) -> Result<bool, StorageError> {
        match fs::remove_file(self.data_dir.join(CLEAN_MARK)) {
            Ok(()) => {
                fs::File::open(&self.data_dir)?.sync_all()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Under the digest's lock: drops the blob's index entry (and whatever file is there) when
    /// its file is missing or not of the recorded size. The recorded size when it did.
    pub fn drop_broken(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let _held = self.locks.lock(digest);
        let Some(record) = self.index.blob(digest)? else {
            return Ok(None);
        };
        if self.blobs.file_len(digest)? == Some(record.size) {
            return Ok(None);
        }
        self.index.remove_blob(digest)?;
        self.blobs.remove(digest)?;
        tracing::warn!(%digest, "stored blob was missing or of the wrong size; dropped");
        Ok(Some(record.size))
    }

    /// Goes through every index entry and every blob file while the node serves: entries
    /// without their file go, unindexed files are adopted when their content matches their
    /// name and removed otherwise. Each change is made under the digest's lock and reported
    /// to `changed`; `pace` is called between items (to yield to requests). Memory stays
    /// bounded: the index is read as it goes, the files one shard directory at a time. Blocks.
    pub fn reconcile(
        &self,
        mut pace: impl FnMut(),
        mut changed: impl FnMut(Change),
    ) -> Result<Recovery, StorageError> {
        let mut report = Recovery::default();
        for entry in self.index.blobs() {
            let (digest, record) = entry?;
            if self.blobs.file_len(&digest)? != Some(record.size) {
                if let Some(size) = self.drop_broken(&digest)? {
                    report.entries_dropped += 1;
                    changed(Change::Dropped(digest, size));
                }
            }
            pace();
        }
        for shard in self.blobs.shards()? {
            for (path, named) in self.blobs.list_shard(&shard)? {
                match named {
                    None => {
                        remove_file_or_dir(&path)?;
                        report.files_removed += 1;
                    }
                    Some(digest) => match self.adopt(&path, &digest)? {
                        Adoption::Known => {}
                        Adoption::Adopted(size) => {
                            report.files_reindexed += 1;
                            changed(Change::Adopted(digest, size));
                        }
                        Adoption::Removed => report.files_removed += 1,
                    },
                }
                pace();
            }
        }
        self.index.flush()?;
        self.unreconciled.store(false, Ordering::Release);
        Ok(report)
    }

    /// An unindexed file is hashed (without the lock: it may be large), then indexed or
    /// removed under the lock, unless a store indexed the digest meanwhile (a store replaces
    /// an unindexed file and indexes it under the same lock, so then the file is its own).
    fn adopt(&self, path: &Path, digest: &Digest) -> Result<Adoption, StorageError> {
        if self.index.blob(digest)?.is_some() {
            return Ok(Adoption::Known);
        }
        let hashed = hash_file(path);
        let _held = self.locks.lock(digest);
        if self.index.blob(digest)?.is_some() {
            return Ok(Adoption::Known);
        }
        match hashed {
            Ok((actual, size))
                if actual == *digest && self.blobs.file_len(digest)? == Some(size) =>
            {
                self.index
                    .put_new_blob(digest, &BlobRecord::new(size, None))?;
                Ok(Adoption::Adopted(size))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Adoption::Known),
            _ => {
                remove_file_or_dir(path)?;
                Ok(Adoption::Removed)
            }
        }
    }

    /// Everything at once, before anything else uses the storage (`berth cache gc`, tests):
    /// startup, reconciliation, and the totals counted afresh. Blocks.
    pub fn recover(&self) -> Result<Recovery, StorageError> {
        let startup = self.start()?;
        let mut report = self.reconcile(|| {}, |_| {})?;
        report.temp_files_removed = startup.temp_files_removed;
        report.uploads_removed = startup.uploads_removed;
        report.manifest_links_repaired = if startup.clean {
            self.index.repair_manifest_repos()?
        } else {
            startup.manifest_links_repaired
        };
        self.index.recount_totals()?;
        self.index.flush()?;
        if startup.clean {
            // As consistent as it was, and more: the next start need not reconcile.
            self.mark_clean_shutdown()?;
        }
        Ok(report)
    }

    /// How many blobs are indexed, and their bytes (constant time, from the running totals).
    pub fn blob_stats(&self) -> Result<Totals, StorageError> {
        Ok(self.index.totals()?)
    }
}

enum Adoption {
    Known,
    Adopted(u64),
    Removed,
}

fn remove_file_or_dir(path: &Path) -> io::Result<()> {
    let removed = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(storage: &Storage, data: &[u8]) -> Digest {
        let digest = Digest::of(data);
        assert!(storage.store_bytes(&digest, data, None).unwrap());
        digest
    }

    #[test]
    fn a_clean_stop_is_trusted_once_and_an_unclean_one_reconciled() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path()).unwrap();
            // A fresh directory has no mark: as after a crash.
            assert!(!storage.start().unwrap().clean);
            assert!(storage.is_unreconciled());
            stored(&storage, b"kept");
            // Owed a reconciliation, the stop is not marked clean.
            assert!(!storage.mark_clean_shutdown().unwrap());
            storage.reconcile(|| {}, |_| {}).unwrap();
            assert!(!storage.is_unreconciled());
            assert!(storage.mark_clean_shutdown().unwrap());
        }
        {
            let storage = crate::storage::reopened(|| Storage::open(dir.path()));
            std::fs::write(dir.path().join("tmp/blob-partial"), b"half").unwrap();
            let startup = storage.start().unwrap();
            assert!(startup.clean);
            assert_eq!(startup.temp_files_removed, 1);
            assert!(!storage.is_unreconciled());
            // The mark is gone as soon as the node runs: a crash now is an unclean stop.
        }
        let storage = crate::storage::reopened(|| Storage::open(dir.path()));
        assert!(!storage.start().unwrap().clean);
        assert!(storage.is_unreconciled());
    }

    /// Before reconciliation reaches them, neither an entry without its file nor a corrupt
    /// unindexed file is ever served: the first is dropped when met, the second replaced by a
    /// verified store of its digest (not trusted), and reconciliation then keeps that one.
    #[test]
    fn what_reconciliation_is_for_is_safe_before_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let lost = stored(&storage, b"file lost");
        std::fs::remove_file(storage.blobs.path(&lost)).unwrap();
        let short = stored(&storage, b"file cut short");
        std::fs::write(storage.blobs.path(&short), b"file").unwrap();
        let good = stored(&storage, b"good");
        let body = b"what the name promises".to_vec();
        let planted = Digest::of(&body);
        let path = storage.blobs.path(&planted);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"something else").unwrap();
        assert!(!storage.start().unwrap().clean);
        assert_eq!(storage.blob_stats().unwrap().blobs, 3);

        // The request path: broken entries go, good ones stay.
        assert_eq!(storage.drop_broken(&lost).unwrap(), Some(9));
        assert_eq!(storage.drop_broken(&short).unwrap(), Some(14));
        assert!(!storage.blobs.path(&short).exists());
        assert_eq!(storage.drop_broken(&good).unwrap(), None);
        // A store of the planted digest replaces the file it cannot vouch for.
        assert!(storage.store_bytes(&planted, &body, None).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), body);

        let mut changes = Vec::new();
        let report = storage.reconcile(|| {}, |c| changes.push(c)).unwrap();
        assert_eq!(report, Recovery::default());
        assert!(changes.is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), body);
        let totals = storage.blob_stats().unwrap();
        assert_eq!((totals.blobs, totals.bytes), (2, 4 + body.len() as u64));
    }

    #[test]
    fn background_reconciliation_reports_each_change() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let lost = stored(&storage, b"file lost");
        std::fs::remove_file(storage.blobs.path(&lost)).unwrap();
        let unindexed = b"renamed but not indexed".to_vec();
        let adopted = Digest::of(&unindexed);
        storage.blobs.write_verified(&adopted, &unindexed).unwrap();
        let corrupt = Digest::of(b"promised");
        let corrupt_path = storage.blobs.path(&corrupt);
        std::fs::create_dir_all(corrupt_path.parent().unwrap()).unwrap();
        std::fs::write(&corrupt_path, b"not that").unwrap();
        std::fs::write(storage.blobs.path(&lost).with_file_name("stray"), b"x").unwrap();
        storage.start().unwrap();

        let mut changes = Vec::new();
        let mut paced = 0;
        let report = storage
            .reconcile(|| paced += 1, |c| changes.push(c))
            .unwrap();
        assert_eq!(report.entries_dropped, 1);
        assert_eq!(report.files_reindexed, 1);
        assert_eq!(report.files_removed, 2);
        assert!(paced >= 3);
        assert_eq!(
            changes,
            vec![
                Change::Dropped(lost, 9),
                Change::Adopted(adopted.clone(), unindexed.len() as u64)
            ]
        );
        assert!(!corrupt_path.exists());
        assert_eq!(storage.blob_stats().unwrap().blobs, 1);
        assert!(!storage.is_unreconciled());
    }
}

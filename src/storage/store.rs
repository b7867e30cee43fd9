//! Committing verified content, and removing it: the only places where a blob file and its
//! index entries change together.
//!
//! Each of these holds its digest's lock while it places or removes the file and writes the
//! index, so that eviction's "is it private or in use?" and its removal are one step as far
//! as any store of the same digest can tell. Without it, eviction could check a blob, a push
//! could then find the file in place and link it, and eviction would unlink the file under
//! an acknowledged push. Placing a file never replaces one (`RENAME_NOREPLACE`), and the index
//! entry is added only when absent, so only the one store that adds a digest reports it as
//! new, and usage counts its bytes once however many clients upload it at the same time.
//! Every method blocks; the index is flushed after the lock is released (durable before the
//! client hears of it, without holding other stores of the stripe up).

use std::sync::{Mutex, MutexGuard};

use tempfile::NamedTempFile;

use super::blobs::Place;
use super::index::{BlobRecord, PushedManifest};
use super::{Storage, StorageError};
use crate::oci::{Digest, RepoName};

/// Lock stripes: stores of different digests rarely wait for one another.
const STRIPES: usize = 64;

/// Threads removing blobs in [`Storage::evict_many`]: mostly waiting on the disk, not the CPU.
const EVICT_WORKERS: usize = 4;

pub struct DigestLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for DigestLocks {
    fn default() -> Self {
        DigestLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl DigestLocks {
    fn stripe(digest: &Digest) -> usize {
        // Digests are uniformly distributed: their first hex digits pick a stripe evenly.
        digest
            .hex()
            .get(..2)
            .and_then(|first| usize::from_str_radix(first, 16).ok())
            .unwrap_or(0)
            % STRIPES
    }

    fn lock_stripe(&self, stripe: usize) -> MutexGuard<'_, ()> {
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn lock(&self, digest: &Digest) -> MutexGuard<'_, ()> {
        self.lock_stripe(Self::stripe(digest))
    }

    /// The locks of all of `digests`, taken in stripe order (everything else holds one lock
    /// at a time, so two holders of several cannot deadlock).
    fn lock_all(&self, digests: &[Digest]) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = digests.iter().map(Self::stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes.into_iter().map(|s| self.lock_stripe(s)).collect()
    }
}

impl Storage {
    /// Under the digest's lock: a file already at the digest's path is kept only when the
    /// index vouches for it. An unindexed one may be what a crash left (half-checked, or
    /// corrupt) before background reconciliation reached it, so a verified store replaces it.
    fn placement(&self, digest: &Digest) -> Result<Place, StorageError> {
        Ok(match self.index.blob(digest)? {
            Some(_) => Place::Beside,
            None => Place::Over,
        })
    }

    /// Makes a verified temp file (a fill) the blob `digest` and indexes it. True when the
    /// blob is new to the store (its bytes are to be counted).
    pub fn store_temp(
        &self,
        temp: NamedTempFile,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, StorageError> {
        let new = {
            let _held = self.locks.lock(digest);
            self.blobs.commit(temp, digest, self.placement(digest)?)?;
            self.index
                .put_new_blob(digest, &BlobRecord::new(size, None))?
        };
        self.index.flush()?;
        Ok(new)
    }

    /// Stores a small body whose digest the caller verified (a mirrored manifest).
    pub fn store_bytes(
        &self,
        digest: &Digest,
        body: &[u8],
        media_type: Option<String>,
    ) -> Result<bool, StorageError> {
        let new = {
            let _held = self.locks.lock(digest);
            self.blobs.write(digest, body, self.placement(digest)?)?;
            let record = BlobRecord::new(body.len() as u64, media_type);
            self.index.put_new_blob(digest, &record)?
        };
        self.index.flush()?;
        Ok(new)
    }

    /// Makes a verified upload the blob `digest` of private repository `repo`: the upload file
    /// becomes the blob (or goes, when the blob is there already), and the index entry and the
    /// repository link are written in one transaction. True when the blob is new.
    pub fn store_upload(
        &self,
        id: &str,
        digest: &Digest,
        size: u64,
        repo: &RepoName,
    ) -> Result<bool, StorageError> {
        let new = {
            let _held = self.locks.lock(digest);
            self.blobs
                .commit_upload(id, digest, self.placement(digest)?)?;
            self.index
                .put_private_blob(repo, digest, &BlobRecord::new(size, None))?
        };
        self.index.flush()?;
        Ok(new)
    }

    /// Stores a pushed manifest and records it in its repository (with its tag and referrer
    /// entry) in one transaction. True when the manifest's bytes are new to the store.
    pub fn store_pushed_manifest(
        &self,
        pushed: &PushedManifest<'_>,
        body: &[u8],
    ) -> Result<bool, StorageError> {
        let new = {
            let _held = self.locks.lock(pushed.digest);
            let place = self.placement(pushed.digest)?;
            self.blobs.write(pushed.digest, body, place)?;
            let record = BlobRecord::new(pushed.size, Some(pushed.media_type.to_owned()));
            self.index.put_private_manifest(pushed, &record)?
        };
        self.index.flush()?;
        Ok(new)
    }

    /// Links a blob of private repository `from` into `repo` too; false when `from` does not
    /// hold it (or it is no longer stored).
    pub fn mount(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<bool, StorageError> {
        {
            let _held = self.locks.lock(digest);
            if !self.index.repo_has_blob(from, digest)? || self.index.blob(digest)?.is_none() {
                return Ok(false);
            }
            self.index.link_repo_blob(repo, digest)?;
        }
        self.index.flush()?;
        Ok(true)
    }

    /// Removes a blob from the index and the disk unless a private repository holds it or
    /// `spare` (asked under the lock) says to keep it. The record removed, if any. The index
    /// goes first, so no new request finds the blob; the file is unlinked after, which keeps
    /// mappings still being read valid. The caller flushes the index.
    pub fn evict(
        &self,
        digest: &Digest,
        spare: impl FnOnce() -> bool,
    ) -> Result<Option<BlobRecord>, StorageError> {
        let _held = self.locks.lock(digest);
        if spare() || self.index.is_private(digest)? {
            return Ok(None);
        }
        let removed = self.index.remove_blob(digest)?;
        if removed.is_some() {
            self.blobs.remove(digest)?;
        }
        Ok(removed)
    }

    /// [`evict_all`](Self::evict_all) over many blobs, `chunk` at a time, by [`EVICT_WORKERS`]
    /// threads that each take the digests of their own lock stripes (so they never wait for
    /// one another's locks, and the index lookups and file unlinks, which wait on the disk,
    /// overlap). `gone` hears of each chunk's removals as soon as they are made. The records
    /// removed, with their digests. Blocks.
    pub fn evict_many(
        &self,
        digests: Vec<Digest>,
        chunk: usize,
        spare: impl Fn(&Digest) -> bool + Sync,
        gone: impl Fn(&[(Digest, BlobRecord)]) + Sync,
    ) -> Result<Vec<(Digest, BlobRecord)>, StorageError> {
        let mut shares: Vec<Vec<Digest>> = vec![Vec::new(); EVICT_WORKERS];
        for digest in digests {
            shares[DigestLocks::stripe(&digest) % EVICT_WORKERS].push(digest);
        }
        let (spare, gone) = (&spare, &gone);
        std::thread::scope(|scope| {
            let workers: Vec<_> = shares
                .iter()
                .map(|share| {
                    scope.spawn(move || {
                        let mut removed = Vec::new();
                        for digests in share.chunks(chunk.max(1)) {
                            let chunk_removed = self.evict_all(digests, spare)?;
                            gone(&chunk_removed);
                            removed.extend(chunk_removed);
                        }
                        Ok::<_, StorageError>(removed)
                    })
                })
                .collect();
            let mut removed = Vec::new();
            for worker in workers {
                match worker.join() {
                    Ok(done) => removed.extend(done?),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok(removed)
        })
    }

    /// [`evict`](Self::evict) for several blobs at once, as garbage collection removes them:
    /// all their locks held (taken in order), each blob checked under them as `evict` checks
    /// it, the index entries of those that go removed in one transaction, then their files.
    /// The records removed, with their digests. The caller flushes the index.
    pub fn evict_all(
        &self,
        digests: &[Digest],
        mut spare: impl FnMut(&Digest) -> bool,
    ) -> Result<Vec<(Digest, BlobRecord)>, StorageError> {
        let _held = self.locks.lock_all(digests);
        let mut going = Vec::with_capacity(digests.len());
        for digest in digests {
            if !spare(digest) && !self.index.is_private(digest)? {
                going.push(digest.clone());
            }
        }
        let records = self.index.remove_blobs(&going)?;
        let mut removed = Vec::with_capacity(going.len());
        for (digest, record) in going.into_iter().zip(records) {
            if let Some(record) = record {
                self.blobs.remove(&digest)?;
                removed.push((digest, record));
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        (dir, storage)
    }

    fn upload(storage: &Storage, id: &str, data: &[u8]) {
        std::fs::write(storage.blobs.upload_path(id), data).unwrap();
    }

    #[test]
    fn only_the_first_store_of_a_digest_is_new() {
        let (_dir, storage) = storage();
        let repo: RepoName = "team/app".parse().unwrap();
        let data = b"same layer".to_vec();
        let digest = Digest::of(&data);
        upload(&storage, "a1", &data);
        upload(&storage, "b2", &data);
        let size = data.len() as u64;
        assert!(storage.store_upload("a1", &digest, size, &repo).unwrap());
        assert!(!storage.store_upload("b2", &digest, size, &repo).unwrap());
        // Both upload files are gone: one became the blob, the other was dropped.
        assert!(storage.blobs.upload_ids().unwrap().is_empty());
        assert_eq!(std::fs::read(storage.blobs.path(&digest)).unwrap(), data);
        assert!(storage.index.repo_has_blob(&repo, &digest).unwrap());
        assert!(!storage.store_bytes(&digest, &data, None).unwrap());
    }

    #[test]
    fn eviction_spares_private_content_and_what_the_caller_keeps() {
        let (_dir, storage) = storage();
        let repo: RepoName = "team/app".parse().unwrap();
        let (mirrored, pushed) = (b"mirrored".to_vec(), b"pushed".to_vec());
        let (m, p) = (Digest::of(&mirrored), Digest::of(&pushed));
        assert!(storage.store_bytes(&m, &mirrored, None).unwrap());
        upload(&storage, "c3", &pushed);
        storage.store_upload("c3", &p, 6, &repo).unwrap();

        assert_eq!(storage.evict(&m, || true).unwrap(), None);
        assert_eq!(storage.evict(&p, || false).unwrap(), None);
        assert!(storage.blobs.path(&p).exists());
        assert_eq!(
            storage.evict(&m, || false).unwrap().map(|r| r.size),
            Some(8)
        );
        assert!(!storage.blobs.path(&m).exists());
        assert!(storage.index.blob(&m).unwrap().is_none());
        // Stored again after eviction, it is new again.
        assert!(storage.store_bytes(&m, &mirrored, None).unwrap());
    }

    #[test]
    fn batched_eviction_checks_each_blob_under_its_lock() {
        let (_dir, storage) = storage();
        let repo: RepoName = "team/app".parse().unwrap();
        let mut digests = Vec::new();
        for i in 0..200u32 {
            let data = format!("blob {i}").into_bytes();
            let digest = Digest::of(&data);
            assert!(storage.store_bytes(&digest, &data, None).unwrap());
            digests.push(digest);
        }
        upload(&storage, "d4", b"pushed");
        let pushed = Digest::of(b"pushed");
        storage.store_upload("d4", &pushed, 6, &repo).unwrap();
        digests.push(pushed.clone());
        let kept = digests[7].clone();
        let heard = Mutex::new(0);
        let removed = storage
            .evict_many(
                digests.clone(),
                16,
                |d| d == &kept,
                |chunk| *heard.lock().unwrap() += chunk.len(),
            )
            .unwrap();
        // Everything but the spared blob and the private one, each heard of once.
        assert_eq!(removed.len(), 199);
        assert_eq!(*heard.lock().unwrap(), 199);
        for digest in &digests {
            let stays = digest == &kept || digest == &pushed;
            assert_eq!(storage.index.blob(digest).unwrap().is_some(), stays);
            assert_eq!(storage.blobs.path(digest).exists(), stays);
        }
        assert_eq!(storage.index.totals().unwrap().blobs, 2);
    }
}

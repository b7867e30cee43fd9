//! Blob uploads into private repositories, per the distribution spec: started by a POST
//! (optionally monolithic, or a cross-repository mount), fed by PATCHes in order, finished by
//! a PUT naming the digest. Bytes accumulate in `uploads/<id>`; the state is in the index, so
//! an upload survives a restart. Nothing reaches `blobs/` unless it hashes to the digest named.

use std::io::Write;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use tokio::sync::OwnedMutexGuard;

use super::discard::Discard;
use super::Projects;
use crate::oci::ErrorCode;
use crate::oci::{Digest, RepoName};
use crate::registry::error::storage_error;
use crate::registry::error::RegistryError;
use crate::storage::blobs::hash_file;
use crate::storage::index::{now_ms, UploadRecord};
use crate::storage::Storage;

/// Request bytes gathered before each write to the upload file.
const WRITE_BLOCK: usize = 256 * 1024;

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
}

/// The outcome of a POST.
pub enum Started {
    /// The blob is in the repository already (monolithic upload, or mount).
    Complete(Digest),
    /// Continue with PATCH / PUT at this upload.
    Open(UploadState),
}

/// A request body being uploaded: chunks of bytes, or an error that says why the body broke
/// off. (One name for the bound every upload path repeats.)
pub trait UploadBody: Stream<Item = Result<Bytes, Self::Broken>> + Unpin {
    type Broken: std::fmt::Display;
}

impl<S, E> UploadBody for S
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Broken = E;
}

/// 128 bits from the OS's CSPRNG, as 32 hex characters: ids never repeat and cannot be
/// guessed from earlier ones.
pub(super) fn new_upload_id() -> Result<String, RegistryError> {
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| RegistryError::internal("upload failed", "the OS gave no random bytes"))?;
    Ok(hex::encode(id))
}

pub(super) fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id:?} is unknown (finished, cancelled, expired, or never started)"),
    )
}

impl Projects {
    /// POST: a new upload, or the finished blob when `digest` (monolithic) is given.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        monolithic: Option<Digest>,
        body: impl UploadBody,
    ) -> Result<Started, RegistryError> {
        if let Some(store) = self.cache.shared() {
            return self
                .shared_start_upload(store, repo, monolithic, body)
                .await;
        }
        let id = new_upload_id()?;
        let record = UploadRecord {
            repo: repo.to_string(),
            started_ms: now_ms(),
        };
        let storage = Arc::clone(self.storage());
        let path = storage.blobs.upload_path(&id);
        tokio::task::spawn_blocking(move || std::fs::File::create(path))
            .await
            .map_err(|e| RegistryError::internal("upload failed", e))?
            .map_err(|e| RegistryError::internal("cannot create the upload file", e))?;
        storage
            .index
            .put_upload(&id, &record)
            .map_err(storage_error)?;
        match monolithic {
            Some(digest) => {
                self.finish_upload(repo, &id, &digest, body).await?;
                Ok(Started::Complete(digest))
            }
            None => {
                storage.index.flush_async().await.map_err(storage_error)?;
                Ok(Started::Open(UploadState { id, size: 0 }))
            }
        }
    }

    /// POST with `mount`: links a blob `from` another repository, when the caller may read it
    /// (`from_readable`) and it is there. `None` means: fall back to a plain upload.
    pub async fn mount(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
        from_readable: bool,
    ) -> Result<Option<Digest>, RegistryError> {
        if !from_readable {
            return Ok(None);
        }
        if let Some(shared) = self.shared() {
            let Some(size) = shared
                .linked_blob(from, digest)
                .await
                .map_err(storage_error)?
            else {
                return Ok(None);
            };
            shared
                .link_blob(repo, digest, size)
                .await
                .map_err(storage_error)?;
            return Ok(Some(digest.clone()));
        }
        // Under the digest's lock: eviction cannot take the blob between check and link; and
        // the repository's, so gc does not unlink it between the link and the client's next
        // step. The locks and the flush block, so on the blocking pool.
        let held = self.repo_locks.shared(repo).await;
        let storage = Arc::clone(self.storage());
        let (r, f, d) = (repo.clone(), from.clone(), digest.clone());
        let mounted = tokio::task::spawn_blocking(move || {
            let _held = held;
            storage.mount(&r, &f, &d)
        })
        .await
        .map_err(|e| RegistryError::internal("mount failed", e))?
        .map_err(storage_error)?;
        if !mounted {
            return Ok(None);
        }
        Ok(Some(digest.clone()))
    }

    /// The upload `id` of `repo`, with its current size.
    pub async fn upload_status(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<UploadState, RegistryError> {
        if let Some(store) = self.cache.shared() {
            return self.shared_upload_status(store, repo, id).await;
        }
        self.check_upload(repo, id)?;
        let path = self.storage().blobs.upload_path(id);
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|_| upload_unknown(id))?
            .len();
        Ok(UploadState {
            id: id.to_owned(),
            size,
        })
    }

    fn check_upload(&self, repo: &RepoName, id: &str) -> Result<UploadRecord, RegistryError> {
        // Ids are hex that berth made; anything else cannot name an upload file.
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(upload_unknown(id));
        }
        match self.storage().index.upload(id).map_err(storage_error)? {
            Some(record) if record.repo == repo.as_str() => Ok(record),
            _ => Err(upload_unknown(id)),
        }
    }

    /// PATCH: appends `body`. `start` (from `Content-Range`) must equal the bytes received so
    /// far, else the chunk is refused with 416 and nothing is written. A body that breaks off
    /// fails the whole upload, which is discarded at once.
    pub async fn append(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: impl UploadBody,
    ) -> Result<UploadState, RegistryError> {
        if let Some(store) = self.cache.shared() {
            return self.shared_append(store, repo, id, start, body).await;
        }
        self.check_upload(repo, id)?;
        let held = self.upload_locks.acquire(id).await;
        let current = self.upload_status(repo, id).await?;
        if let Some(start) = start.filter(|&s| s != current.size) {
            return Err(RegistryError::new(
                ErrorCode::RangeInvalid,
                format!(
                    "chunk starts at byte {start}, but the upload has {} bytes: chunks must come in order",
                    current.size
                ),
            )
            .with_detail(serde_json::json!({ "size": current.size })));
        }
        let discard = Discard::armed(&self.cache, &self.upload_locks, id);
        match self.write_body(id, body, held).await {
            Ok((written, _held)) => {
                discard.keep();
                Ok(UploadState {
                    id: id.to_owned(),
                    size: current.size + written,
                })
            }
            Err(e) => {
                discard.now().await;
                Err(e)
            }
        }
    }

    /// PUT: appends the last bytes, checks the digest, and makes the blob part of `repo`.
    /// On a mismatch (or any failure) the upload is discarded and nothing is kept.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        body: impl UploadBody,
    ) -> Result<(), RegistryError> {
        if let Some(store) = self.cache.shared() {
            return self
                .shared_finish_upload(store, repo, id, digest, body)
                .await;
        }
        self.check_upload(repo, id)?;
        let held = self.upload_locks.acquire(id).await;
        self.check_upload(repo, id)?;
        let discard = Discard::armed(&self.cache, &self.upload_locks, id);
        let held = match self.write_body(id, body, held).await {
            Ok((_, held)) => held,
            Err(e) => {
                discard.now().await;
                return Err(e);
            }
        };
        discard.keep();
        // One blocking task verifies, stores or discards, and ends the upload: it runs to the
        // end even if the client goes away meanwhile, holding the repository's lock against
        // gc (`repo_locks`) while it links the blob.
        let linking = self.repo_locks.shared(repo).await;
        let (cache, locks, repo, upload, expected) = (
            Arc::clone(&self.cache),
            Arc::clone(&self.upload_locks),
            repo.clone(),
            id.to_owned(),
            digest.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let held = held;
            let storage = cache.storage();
            let result = verify_and_store(storage, &upload, &expected, &repo);
            drop(linking);
            match &result {
                Ok((size, new)) => cache.upload_stored(*size, *new),
                Err(_) => match storage.discard_upload(&upload) {
                    Ok(bytes) => cache.upload_freed(bytes),
                    Err(e) => tracing::warn!(%upload, error = %e, "cannot discard an upload"),
                },
            }
            let ended = storage
                .index
                .remove_upload(&upload)
                .and_then(|()| storage.index.flush())
                .map_err(storage_error);
            drop(held);
            locks.forget(&upload);
            ended?;
            result.map(|_| ())
        })
        .await
        .map_err(|e| RegistryError::internal("upload failed", e))?
    }

    /// DELETE: cancels an upload; its file goes at once.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<(), RegistryError> {
        if let Some(store) = self.cache.shared() {
            return self.shared_cancel_upload(store, repo, id).await;
        }
        self.check_upload(repo, id)?;
        let held = self.upload_locks.acquire(id).await;
        let (cache, locks, upload) = (
            Arc::clone(&self.cache),
            Arc::clone(&self.upload_locks),
            id.to_owned(),
        );
        // On the blocking pool from start to end: done even if the client goes away.
        tokio::task::spawn_blocking(move || {
            let storage = cache.storage();
            let freed = storage.discard_upload(&upload);
            if let Ok(bytes) = freed {
                cache.upload_freed(bytes);
            }
            let flushed = storage.index.flush();
            drop(held);
            locks.forget(&upload);
            freed?;
            flushed?;
            Ok::<_, crate::storage::StorageError>(())
        })
        .await
        .map_err(|e| RegistryError::internal("cannot remove the upload", e))?
        .map_err(|e| RegistryError::internal("cannot remove the upload", e))
    }

    /// Appends a request body to the upload file, in large blocks, off the executor. Each
    /// block's write holds the upload's lock (`held`) until it is done, even when the request
    /// is dropped meanwhile; the lock comes back at the end. Bytes written count as used at
    /// once.
    async fn write_body(
        &self,
        id: &str,
        mut body: impl UploadBody,
        held: OwnedMutexGuard<()>,
    ) -> Result<(u64, OwnedMutexGuard<()>), RegistryError> {
        let path = self.storage().blobs.upload_path(id);
        let mut file = Some(
            tokio::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .await
                .map_err(|_| upload_unknown(id))?
                .into_std()
                .await,
        );
        let mut held = Some(held);
        let mut pending = BytesMut::new();
        let mut written = 0u64;
        loop {
            let next = body.next().await;
            let done = next.is_none();
            if let Some(chunk) = next {
                let chunk = chunk.map_err(|e| {
                    RegistryError::new(
                        ErrorCode::BlobUploadInvalid,
                        format!("the request body broke off: {e}"),
                    )
                })?;
                pending.extend_from_slice(&chunk);
            }
            if pending.len() >= WRITE_BLOCK || (done && !pending.is_empty()) {
                let block = pending.split().freeze();
                let mut f = file.take().ok_or_else(|| upload_unknown(id))?;
                let guard = held.take().ok_or_else(|| upload_unknown(id))?;
                let cache = Arc::clone(&self.cache);
                let (f, guard, result) = tokio::task::spawn_blocking(move || {
                    let before = f.metadata().map(|m| m.len());
                    let result = f.write_all(&block).map(|()| block.len() as u64);
                    // What reached the disk counts, a partial write included.
                    if let (Ok(before), Ok(after)) = (before, f.metadata().map(|m| m.len())) {
                        cache.upload_grew(after.saturating_sub(before));
                    }
                    (f, guard, result)
                })
                .await
                .map_err(|e| RegistryError::internal("upload failed", e))?;
                written +=
                    result.map_err(|e| RegistryError::internal("cannot write the upload", e))?;
                file = Some(f);
                held = Some(guard);
            }
            if done {
                let held = held.ok_or_else(|| upload_unknown(id))?;
                return Ok((written, held));
            }
        }
    }
}

/// Hashes a finished upload and, when it is `expected`, stores it in `repo`: the blob's
/// size and whether it was new. Blocks.
fn verify_and_store(
    storage: &Storage,
    id: &str,
    expected: &Digest,
    repo: &RepoName,
) -> Result<(u64, bool), RegistryError> {
    let (actual, size) = hash_file(&storage.blobs.upload_path(id))
        .map_err(|e| RegistryError::internal("cannot read the upload", e))?;
    if &actual != expected {
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!("the uploaded bytes hash to {actual}, not {expected}; nothing was kept"),
        )
        .with_detail(serde_json::json!({ "digest": expected.to_string() })));
    }
    let new = storage
        .store_upload(id, expected, size, repo)
        .map_err(|e| RegistryError::internal("cannot store the blob", e))?;
    Ok((size, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_random_hex() {
        let ids: std::collections::HashSet<String> =
            (0..64).map(|_| new_upload_id().unwrap()).collect();
        assert_eq!(ids.len(), 64);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
}

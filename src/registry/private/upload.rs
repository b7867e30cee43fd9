//! Blob uploads into private repositories, per the distribution spec: started by a POST
//! (optionally monolithic, or a cross-repository mount), fed by PATCHes in order, finished by
//! a PUT naming the digest. Bytes accumulate in `uploads/<id>`; the state is in the index, so
//! an upload survives a restart. Nothing reaches `blobs/` unless it hashes to the digest named.

use std::io::Write;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::Projects;
use crate::registry::error::{ErrorCode, RegistryError};
use crate::registry::mirror::storage_error;
use crate::registry::name::{Digest, RepoName};
use crate::storage::blobs::hash_file;
use crate::storage::index::{now_ms, BlobRecord, UploadRecord};

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

fn new_upload_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS; mixed with time and a counter, ids do not repeat
    // and cannot be guessed from earlier ones.
    let mut seed = Vec::new();
    for _ in 0..2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        seed.extend_from_slice(&hasher.finish().to_le_bytes());
    }
    seed.extend_from_slice(&now_ms().to_le_bytes());
    Digest::of(&seed).hex()[..32].to_owned()
}

fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id:?} is unknown (finished, cancelled, expired, or never started)"),
    )
}

impl Projects {
    /// POST: a new upload, or the finished blob when `digest` (monolithic) is given.
    pub async fn start_upload<S, E>(
        &self,
        repo: &RepoName,
        monolithic: Option<Digest>,
        body: S,
    ) -> Result<Started, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let id = new_upload_id();
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
    pub fn mount(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
        from_readable: bool,
    ) -> Result<Option<Digest>, RegistryError> {
        let index = &self.storage().index;
        if !from_readable || !index.repo_has_blob(from, digest).map_err(storage_error)? {
            return Ok(None);
        }
        index.link_repo_blob(repo, digest).map_err(storage_error)?;
        index.flush().map_err(storage_error)?;
        Ok(Some(digest.clone()))
    }

    /// The upload `id` of `repo`, with its current size.
    pub async fn upload_status(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<UploadState, RegistryError> {
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

    fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.upload_locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(id.to_owned()).or_default())
    }

    fn forget_lock(&self, id: &str) {
        self.upload_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// PATCH: appends `body`. `start` (from `Content-Range`) must equal the bytes received so
    /// far, else the chunk is refused with 416 and nothing is written.
    pub async fn append<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: S,
    ) -> Result<UploadState, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.check_upload(repo, id)?;
        let lock = self.upload_lock(id);
        let _held = lock.lock().await;
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
        let written = self.write_body(id, body).await?;
        Ok(UploadState {
            id: id.to_owned(),
            size: current.size + written,
        })
    }

    /// PUT: appends the last bytes, checks the digest, and makes the blob part of `repo`.
    /// On a mismatch the upload is discarded and nothing is kept.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        body: S,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.check_upload(repo, id)?;
        let lock = self.upload_lock(id);
        let _held = lock.lock().await;
        self.check_upload(repo, id)?;
        let result = self.verify_and_commit(repo, id, digest, body).await;
        let storage = self.storage();
        if result.is_err() {
            let _ = storage.blobs.remove_upload(id);
        }
        storage.index.remove_upload(id).map_err(storage_error)?;
        storage.index.flush_async().await.map_err(storage_error)?;
        self.forget_lock(id);
        result
    }

    async fn verify_and_commit<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        body: S,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.write_body(id, body).await?;
        let storage = Arc::clone(self.storage());
        let (id, expected) = (id.to_owned(), digest.clone());
        let committed =
            tokio::task::spawn_blocking(move || -> Result<Option<u64>, RegistryError> {
                let (actual, size) = hash_file(&storage.blobs.upload_path(&id))
                    .map_err(|e| RegistryError::internal("cannot read the upload", e))?;
                if actual != expected {
                    return Err(RegistryError::new(
                        ErrorCode::DigestInvalid,
                        format!(
                            "the uploaded bytes hash to {actual}, not {expected}; nothing was kept"
                        ),
                    )
                    .with_detail(serde_json::json!({ "digest": expected.to_string() })));
                }
                if storage
                    .index
                    .blob(&expected)
                    .map_err(storage_error)?
                    .is_some()
                {
                    storage
                        .blobs
                        .remove_upload(&id)
                        .map_err(|e| RegistryError::internal("upload cleanup failed", e))?;
                    return Ok(None);
                }
                storage
                    .blobs
                    .commit_upload(&id, &expected)
                    .map_err(|e| RegistryError::internal("cannot store the blob", e))?;
                storage
                    .index
                    .put_blob(&expected, &BlobRecord::new(size, None))
                    .map_err(storage_error)?;
                Ok(Some(size))
            })
            .await
            .map_err(|e| RegistryError::internal("upload failed", e))??;
        let index = &self.storage().index;
        index.link_repo_blob(repo, digest).map_err(storage_error)?;
        if let Some(size) = committed {
            self.cache.note_stored(size);
        }
        Ok(())
    }

    /// DELETE: cancels an upload.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<(), RegistryError> {
        self.check_upload(repo, id)?;
        let lock = self.upload_lock(id);
        let _held = lock.lock().await;
        let storage = self.storage();
        storage.index.remove_upload(id).map_err(storage_error)?;
        storage
            .blobs
            .remove_upload(id)
            .map_err(|e| RegistryError::internal("cannot remove the upload", e))?;
        self.forget_lock(id);
        Ok(())
    }

    /// Appends a request body to the upload file, in large blocks, off the executor.
    async fn write_body<S, E>(&self, id: &str, mut body: S) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.storage().blobs.upload_path(id);
        let mut file = Some(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|_| upload_unknown(id))?,
        );
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
                let (f, result) = tokio::task::spawn_blocking(move || {
                    let result = f.write_all(&block).map(|()| block.len() as u64);
                    (f, result)
                })
                .await
                .map_err(|e| RegistryError::internal("upload failed", e))?;
                written +=
                    result.map_err(|e| RegistryError::internal("cannot write the upload", e))?;
                file = Some(f);
            }
            if done {
                return Ok(written);
            }
        }
    }
}

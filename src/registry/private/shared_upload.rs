//! Blob uploads when the shared store is the store of record: the session, every chunk and
//! the hash state after each chunk live in the shared store (`storage::shared`'s uploads), so
//! any node continues an upload any other node started, and the node that finishes it needs
//! neither the bytes nor the node that received them. The digest is still checked before the
//! blob is linked: a mismatch keeps nothing.

use std::sync::Arc;

use super::shared::SharedRecords;
use super::upload::{new_upload_id, upload_unknown, Started, UploadBody, UploadState};
use super::Projects;
use crate::oci::ErrorCode;
use crate::oci::{Digest, RepoName};
use crate::registry::error::storage_error;
use crate::registry::error::RegistryError;
use crate::storage::index::now_ms;
use crate::storage::shared::{Finished, SharedError, SharedStore, UploadChunk, UploadSession};

impl Projects {
    pub(super) async fn shared_start_upload(
        &self,
        store: &Arc<SharedStore>,
        repo: &RepoName,
        monolithic: Option<Digest>,
        body: impl UploadBody,
    ) -> Result<Started, RegistryError> {
        let id = new_upload_id()?;
        let session = UploadSession {
            repo: repo.to_string(),
            started_ms: now_ms(),
        };
        store
            .start_upload(&id, &session)
            .await
            .map_err(storage_error)?;
        match monolithic {
            Some(digest) => {
                self.shared_finish_upload(store, repo, &id, &digest, body)
                    .await?;
                Ok(Started::Complete(digest))
            }
            None => Ok(Started::Open(UploadState { id, size: 0 })),
        }
    }

    /// The session of upload `id`, when it is `repo`'s.
    async fn shared_session(
        &self,
        store: &SharedStore,
        repo: &RepoName,
        id: &str,
    ) -> Result<(), RegistryError> {
        // Ids are hex that berth made; anything else cannot name an upload.
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(upload_unknown(id));
        }
        match store.upload_session(id).await.map_err(storage_error)? {
            Some(session) if session.repo == repo.as_str() => Ok(()),
            _ => Err(upload_unknown(id)),
        }
    }

    pub(super) async fn shared_upload_status(
        &self,
        store: &SharedStore,
        repo: &RepoName,
        id: &str,
    ) -> Result<UploadState, RegistryError> {
        self.shared_session(store, repo, id).await?;
        let size = store.upload_size(id).await.map_err(storage_error)?;
        Ok(UploadState {
            id: id.to_owned(),
            size,
        })
    }

    pub(super) async fn shared_append(
        &self,
        store: &Arc<SharedStore>,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: impl UploadBody,
    ) -> Result<UploadState, RegistryError> {
        // No lock: two chunks at the same offset (on this node or two) cannot both count, as
        // the upload's hash records chain through the chunks' ETags.
        self.shared_session(store, repo, id).await?;
        let start = match start {
            Some(start) => start,
            None => store.upload_size(id).await.map_err(storage_error)?,
        };
        match store.append_upload(id, start, body).await {
            Ok(size) => Ok(UploadState {
                id: id.to_owned(),
                size,
            }),
            Err(e) => Err(self.chunk_failed(store, id, e)),
        }
    }

    /// What a failed chunk answers. A body that broke off ends the upload, as on one node.
    fn chunk_failed(
        &self,
        store: &Arc<SharedStore>,
        id: &str,
        failure: UploadChunk,
    ) -> RegistryError {
        match failure {
            UploadChunk::OutOfOrder { start, size } => RegistryError::new(
                ErrorCode::RangeInvalid,
                format!(
                    "chunk starts at byte {start}, but the upload has {size} bytes: chunks must come in order"
                ),
            )
            .with_detail(serde_json::json!({ "size": size })),
            UploadChunk::BodyBroke(reason) => {
                discard(store, id);
                RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("the request body broke off: {reason}"),
                )
            }
            UploadChunk::Store(e) => storage_error(e),
        }
    }

    pub(super) async fn shared_finish_upload(
        &self,
        store: &Arc<SharedStore>,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        body: impl UploadBody,
    ) -> Result<(), RegistryError> {
        self.shared_session(store, repo, id).await?;
        let size = store.upload_size(id).await.map_err(storage_error)?;
        if let Err(e) = store.append_upload(id, size, body).await {
            return Err(self.chunk_failed(store, id, e));
        }
        let finished = store.finish_upload(id, digest).await;
        match finished {
            Ok(Finished::Stored { size }) => {
                SharedRecords { store }
                    .link_blob(repo, digest, size)
                    .await
                    .map_err(storage_error)?;
                discard(store, id);
                Ok(())
            }
            Ok(Finished::Mismatch { actual }) => {
                discard(store, id);
                Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("the uploaded bytes hash to {actual}, not {digest}; nothing was kept"),
                )
                .with_detail(serde_json::json!({ "digest": digest.to_string() })))
            }
            Err(SharedError::Corrupt(reason)) => {
                discard(store, id);
                Err(RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!(
                        "the upload changed while it was finished ({reason}); nothing was kept"
                    ),
                ))
            }
            Err(e) => Err(storage_error(e)),
        }
    }

    pub(super) async fn shared_cancel_upload(
        &self,
        store: &SharedStore,
        repo: &RepoName,
        id: &str,
    ) -> Result<(), RegistryError> {
        self.shared_session(store, repo, id).await?;
        store.remove_upload(id).await.map_err(storage_error)
    }
}

/// Removes an upload's objects in the background: the answer does not wait for it, and what
/// a failure leaves is removed by the expiry.
fn discard(store: &Arc<SharedStore>, id: &str) {
    let (store, id) = (Arc::clone(store), id.to_owned());
    tokio::spawn(async move {
        if let Err(e) = store.remove_upload(&id).await {
            tracing::warn!(upload = %id, error = %e, "cannot remove an upload from the shared store");
        }
    });
}

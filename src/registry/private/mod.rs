//! Private projects: repositories whose first component names a configured project are
//! berth's own. They accept pushes (see [`upload`] and [`manifest`]), are listed by the tag,
//! catalog and referrers APIs ([`listing`]), and are never evicted.
//!
//! Who may do what is decided before these functions are called (the token service's
//! policy); this module only keeps the repository consistent: a manifest is accepted only
//! when everything it references is already in the repository, and a blob only when its bytes
//! hash to the digest the client named.

mod discard;
#[cfg(test)]
mod gc_tests;
mod imported;
pub mod listing;
pub mod manifest;
pub mod migrate;
mod remove;
pub mod repo_locks;
pub mod retention;
mod shared;
#[cfg(test)]
mod shared_read_tests;
#[cfg(test)]
mod shared_tests;
mod shared_upload;
pub mod upload;

use std::sync::Arc;

use self::shared::SharedRecords;
use super::error::storage_error;
use super::error::RegistryError;
use super::mirror::{not_verified, BlobRead};
use crate::cache::{BlobBody, Cache};
use crate::config;
use crate::memory::weight;
use crate::oci::ErrorCode;
use crate::oci::{Digest, RepoName};
use crate::storage::shared::SharedError;
use crate::storage::Storage;

/// How long a read from the shared store may make no progress before it fails.
const SHARED_READ_STALL: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Projects {
    /// The configured projects, the same table the access policy reads.
    configured: config::Projects,
    cache: Arc<Cache>,
    upload_locks: Arc<discard::UploadLocks>,
    /// Between garbage collection and the writes that rely on a repository's links.
    repo_locks: Arc<repo_locks::RepoLocks>,
    /// Repository links the shared store confirmed lately (repository and digest → size):
    /// while the store is out of reach, what this node's tier holds of them is still served.
    confirmed: moka::sync::Cache<(RepoName, Digest), u64>,
}

/// Memory for [`Projects::confirmed`].
const CONFIRMED_BYTES: u64 = 8 << 20;

impl Projects {
    pub fn new(configured: config::Projects, cache: Arc<Cache>) -> Self {
        Projects {
            configured,
            cache,
            upload_locks: Arc::default(),
            repo_locks: Arc::default(),
            confirmed: moka::sync::Cache::builder()
                .max_capacity(CONFIRMED_BYTES)
                .weigher(|(repo, digest): &(RepoName, Digest), _| {
                    weight(repo.as_str().len() + digest.hex().len())
                })
                .build(),
        }
    }

    /// The repository, when `name` belongs to a private project.
    pub fn repo_of(&self, name: &str) -> Option<Result<RepoName, RegistryError>> {
        self.configured.project_of(name)?;
        Some(name.parse().map_err(RegistryError::from))
    }

    /// The repository locks garbage collection takes exclusively ([`repo_locks`]).
    pub fn repo_locks(&self) -> &Arc<repo_locks::RepoLocks> {
        &self.repo_locks
    }

    fn storage(&self) -> &Arc<Storage> {
        self.cache.storage()
    }

    /// The records in the shared store, when there is one: then they, not this node's
    /// index, are the projects' store of record.
    fn shared(&self) -> Option<SharedRecords<'_>> {
        self.cache.shared().map(|store| SharedRecords {
            store: store.as_ref(),
        })
    }

    /// Size of a blob in the repository.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64, RegistryError> {
        if let Some(shared) = self.shared() {
            let key = (repo.clone(), digest.clone());
            return match shared.linked_blob(repo, digest).await {
                Ok(Some(size)) => {
                    self.confirmed.insert(key, size);
                    Ok(size)
                }
                Ok(None) => {
                    self.confirmed.invalidate(&key);
                    Err(blob_unknown(repo, digest))
                }
                Err(SharedError::Unavailable(cause)) => match self.confirmed.get(&key) {
                    Some(size)
                        if self.cache.blob_size(digest).map_err(storage_error)? == Some(size) =>
                    {
                        tracing::debug!(%repo, %digest, error = %cause, "shared store unavailable; serving from this node's tier");
                        Ok(size)
                    }
                    _ => Err(storage_error(SharedError::Unavailable(cause))),
                },
                Err(e) => Err(storage_error(e)),
            };
        }
        let index = &self.storage().index;
        if !index.repo_has_blob(repo, digest).map_err(storage_error)? {
            return Err(blob_unknown(repo, digest));
        }
        index
            .blob(digest)
            .map_err(storage_error)?
            .map(|record| record.size)
            .ok_or_else(|| blob_unknown(repo, digest))
    }

    /// A blob of the repository, memory-mapped and kept from eviction while served.
    pub async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        read: BlobRead,
    ) -> Result<BlobBody, RegistryError> {
        let size = self.blob_size(repo, digest).await?;
        if self.shared().is_some() {
            let body = self
                .cache
                .blob_from_shared(digest, size, read.keep())
                .await
                .map_err(storage_error)?
                .ok_or_else(|| blob_unknown(repo, digest))?;
            // Filled from the shared store as it is read: a range may end before the last
            // byte, which is the one a fill withholds until it is verified.
            return match (read, body.is_filling()) {
                (BlobRead::Range, true) => {
                    body.verified(SHARED_READ_STALL).await.map_err(not_verified)
                }
                _ => Ok(body),
            };
        }
        self.cache
            .stored_body(digest, size)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| blob_unknown(repo, digest))
    }

    /// Removes a blob from the repository (its bytes stay while other repositories use them).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
        if let Some(shared) = self.shared() {
            return match shared.unlink_blob(repo, digest).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(blob_unknown(repo, digest)),
                Err(e) => Err(storage_error(e)),
            };
        }
        let index = &self.storage().index;
        if index
            .unlink_repo_blob(repo, digest)
            .map_err(storage_error)?
        {
            index.flush_async().await.map_err(storage_error)?;
            Ok(())
        } else {
            Err(blob_unknown(repo, digest))
        }
    }
}

fn blob_unknown(repo: &RepoName, digest: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not in repository {repo}"),
    )
    .with_detail(serde_json::json!({ "digest": digest.to_string() }))
}

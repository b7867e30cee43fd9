//! Deleting a whole repository of a project (a maintainer's `DELETE
//! /berth/v1/repositories/<name>`, or `berth repo rm`): its tags, manifests, blob links and
//! referrer records go, in the crash-safe order of the index or the shared store; the bytes
//! stay until garbage collection finds nothing holds them.

use std::sync::Arc;

use super::Projects;
use crate::oci::{ErrorCode, RepoName};
use crate::registry::error::{storage_error, RegistryError};
use crate::storage::index::RemovedRepository;

fn name_unknown(repo: &RepoName) -> RegistryError {
    RegistryError::new(
        ErrorCode::NameUnknown,
        format!("repository {repo} is not known"),
    )
    .with_detail(serde_json::json!({ "name": repo.to_string() }))
}

impl Projects {
    /// Removes every record of `repo`; `NAME_UNKNOWN` when it has none.
    pub async fn delete_repository(
        &self,
        repo: &RepoName,
    ) -> Result<RemovedRepository, RegistryError> {
        if let Some(shared) = self.shared() {
            return shared
                .remove_repository(repo)
                .await
                .map_err(storage_error)?
                .ok_or_else(|| name_unknown(repo));
        }
        let storage = Arc::clone(self.storage());
        let owned = repo.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let index = &storage.index;
            match index.repository_exists(&owned)? {
                true => index.remove_repository(&owned).map(Some),
                false => Ok(None),
            }
        })
        .await
        .map_err(|e| RegistryError::internal("repository removal failed", e))?
        .map_err(storage_error)?
        .ok_or_else(|| name_unknown(repo))?;
        self.storage()
            .index
            .flush_async()
            .await
            .map_err(storage_error)?;
        Ok(removed)
    }
}

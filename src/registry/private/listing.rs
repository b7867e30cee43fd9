//! Listings of private content: tags (sorted, paginated with `n`/`last`), the catalog of
//! repositories the caller may see, and the referrers of a manifest.

use bytes::Bytes;

use super::Projects;
use crate::oci::media;
use crate::oci::ErrorCode;
use crate::oci::{Digest, RepoName};
use crate::registry::error::storage_error;
use crate::registry::error::RegistryError;
use crate::registry::listing::{json, paginate, Listing, PageRequest};
use crate::storage::StorageError;

impl Projects {
    pub async fn tags(
        &self,
        repo: &RepoName,
        page: &PageRequest,
    ) -> Result<Listing, RegistryError> {
        let (tags, known) = match self.shared() {
            Some(shared) => {
                let tags = shared.tags(repo).await.map_err(storage_error)?;
                let known = !tags.is_empty() || shared.exists(repo).await.map_err(storage_error)?;
                (tags, known)
            }
            None => {
                let index = &self.storage().index;
                let tags: Vec<String> = index
                    .repo_tags(repo)
                    .map_err(storage_error)?
                    .into_iter()
                    .map(|(tag, _)| tag.to_string())
                    .collect();
                let known = !tags.is_empty()
                    || index
                        .repositories()
                        .map_err(storage_error)?
                        .iter()
                        .any(|r| r == repo.as_str());
                (tags, known)
            }
        };
        if !known {
            return Err(RegistryError::new(
                ErrorCode::NameUnknown,
                format!("repository {repo} is not known"),
            ));
        }
        let (tags, next) = paginate(tags, page);
        Ok(Listing {
            body: json(serde_json::json!({ "name": repo.as_str(), "tags": tags }))?,
            next,
        })
    }

    /// The repositories for which `visible` says yes.
    pub async fn catalog(
        &self,
        visible: impl Fn(&str) -> bool,
        page: &PageRequest,
    ) -> Result<Listing, RegistryError> {
        let all = match self.shared() {
            Some(shared) => shared.repositories().await.map_err(StorageError::from),
            None => self
                .storage()
                .index
                .repositories()
                .map_err(StorageError::from),
        };
        let repos: Vec<String> = all
            .map_err(storage_error)?
            .into_iter()
            .filter(|r| visible(r))
            .collect();
        let (repos, next) = paginate(repos, page);
        Ok(Listing {
            body: json(serde_json::json!({ "repositories": repos }))?,
            next,
        })
    }

    /// The referrers of `subject` as an OCI index, filtered by `artifact_type` when given.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, RegistryError> {
        let records = match self.shared() {
            Some(shared) => shared
                .referrers(repo, subject)
                .await
                .map_err(storage_error)?,
            None => self
                .storage()
                .index
                .referrers(repo, subject)
                .map_err(storage_error)?,
        };
        let manifests: Vec<_> = records
            .into_iter()
            .filter(|r| artifact_type.is_none() || r.artifact_type.as_deref() == artifact_type)
            .collect();
        json(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        }))
    }
}

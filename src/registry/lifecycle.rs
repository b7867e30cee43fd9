//! Content lifecycle of private projects, for the HTTP API, the admin socket and the offline
//! CLI: retention ([`private::retention`](super::private::retention)) and deleting whole
//! repositories. Both delete records only; garbage collection reclaims the bytes, which is
//! why a scheduled collection calls [`Registry::apply_retention`] first.

use super::private::retention::RetentionReport;
use super::repository::Target;
use super::{Registry, RegistryError};
use crate::oci::{ErrorCode, RepoName};
use crate::storage::index::RemovedRepository;

impl Registry {
    /// Applies every project's `retention` rules; with `dry_run`, only says what would go.
    pub async fn apply_retention(&self, dry_run: bool) -> Result<RetentionReport, RegistryError> {
        let report = self.projects.apply_retention(dry_run).await?;
        tracing::info!(
            dry_run,
            repositories = report.repositories,
            tags_removed = report.removals.iter().filter(|r| r.tag.is_some()).count(),
            manifests_removed = report.removals.iter().filter(|r| r.tag.is_none()).count(),
            "retention"
        );
        Ok(report)
    }

    /// Deletes a whole repository of a private project. Who may is decided before (a
    /// maintainer's token, or the admin socket); a mirrored name is refused.
    pub async fn delete_repository(&self, name: &str) -> Result<RemovedRepository, RegistryError> {
        let repo: RepoName = match self.target(name, None)? {
            Target::Project(repo) => repo,
            Target::Mirror(_) => {
                return Err(RegistryError::new(
                    ErrorCode::Unsupported,
                    format!("{name} is not in a private project; drop cached mirror images with berth cache rm"),
                ))
            }
        };
        let removed = self.projects.delete_repository(&repo).await?;
        tracing::info!(
            repository = %repo,
            tags = removed.tags,
            manifests = removed.manifests,
            blob_links = removed.blob_links,
            referrers = removed.referrers,
            "deleted a repository"
        );
        Ok(removed)
    }
}

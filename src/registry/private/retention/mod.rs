//! Retention: each project's `retention` rules applied to its repositories. What goes is
//! decided by [`plan`] from the index; each deletion is the one a maintainer's DELETE makes
//! (a tag, or a manifest by digest with its tags and referrer record), so the bytes are left
//! for garbage collection, which runs after it.
//!
//! Every deletion is checked again just before it is made: a tag that a push moved since the
//! plan was read stays, and so does a manifest a tag names by then.
//!
//! With a shared store (`[storage.s3]`) the same plan is made from the shared records
//! ([`shared`]), push times being their objects' `LastModified`.

pub mod plan;
mod shared;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use self::plan::Removal;
use self::plan::{ManifestState, RepoState, TagState};
use super::Projects;
use crate::config::RetentionSettings;
use crate::oci::{media, Digest, Manifest, RepoName, Tag};
use crate::registry::error::{storage_error, RegistryError};
use crate::storage::index::now_ms;
use crate::storage::{Storage, StorageError};

/// What one retention run deleted, or would delete on a dry run.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    /// Repositories of projects with retention rules that were looked at.
    pub repositories: usize,
    /// In the order they were (or would be) made: each repository's tags, then manifests.
    pub removals: Vec<Removal>,
}

impl Projects {
    /// Applies every project's retention rules (only lists them when `dry_run`).
    pub async fn apply_retention(&self, dry_run: bool) -> Result<RetentionReport, RegistryError> {
        let rules: Vec<(String, RetentionSettings)> = self
            .configured
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.retention.clone()?)))
            .collect();
        if rules.is_empty() {
            return Ok(RetentionReport {
                dry_run,
                ..RetentionReport::default()
            });
        }
        if let Some(shared) = self.shared() {
            return shared::apply(&shared, &self.cache, &rules, dry_run)
                .await
                .map_err(storage_error);
        }
        let storage = Arc::clone(self.storage());
        let report = tokio::task::spawn_blocking(move || apply(&storage, &rules, dry_run))
            .await
            .map_err(|e| RegistryError::internal("retention task failed", e))?
            .map_err(storage_error)?;
        if !dry_run && !report.removals.is_empty() {
            self.storage()
                .index
                .flush_async()
                .await
                .map_err(storage_error)?;
        }
        Ok(report)
    }
}

/// Plans (and unless `dry_run`, makes) the deletions of every repository with rules. Blocks.
fn apply(
    storage: &Storage,
    rules: &[(String, RetentionSettings)],
    dry_run: bool,
) -> Result<RetentionReport, StorageError> {
    let mut report = RetentionReport {
        dry_run,
        ..RetentionReport::default()
    };
    let now = now_ms();
    for name in storage.index.repositories()? {
        let project = name.split('/').next().unwrap_or(&name);
        let Some((_, rules)) = rules.iter().find(|(p, _)| p == project) else {
            continue;
        };
        let Ok(repo) = name.parse::<RepoName>() else {
            continue;
        };
        report.repositories += 1;
        let state = read_state(storage, &repo)?;
        for removal in plan::plan(&name, rules, &state, now) {
            if dry_run || remove(storage, &repo, &removal)? {
                report.removals.push(removal);
            }
        }
    }
    Ok(report)
}

/// Makes one deletion, unless a push changed what it was decided on; true when made.
fn remove(storage: &Storage, repo: &RepoName, removal: &Removal) -> Result<bool, StorageError> {
    let index = &storage.index;
    let made = match &removal.tag {
        Some(tag) => {
            let Ok(tag) = tag.parse::<Tag>() else {
                return Ok(false);
            };
            index.repo_tag(repo, &tag)?.as_ref() == Some(&removal.digest)
                && index.remove_repo_tag(repo, &tag)?
        }
        None => {
            let target = removal.digest.to_string();
            let tagged = index.repo_tags(repo)?.iter().any(|(_, d)| *d == target);
            !tagged && index.remove_repo_manifest(repo, &removal.digest)?
        }
    };
    log_removal(removal, made);
    Ok(made)
}

/// An audit record of a deletion made, or a note of one a push overtook.
fn log_removal(removal: &Removal, made: bool) {
    match made {
        true => tracing::info!(
            target: "berth::audit",
            event = "retention",
            repository = %removal.repository,
            tag = removal.tag.as_deref().unwrap_or("-"),
            digest = %removal.digest,
            reason = %removal.reason,
            "retention deleted"
        ),
        false => tracing::info!(
            repository = %removal.repository,
            digest = %removal.digest,
            "retention: a push changed this since the plan; kept"
        ),
    }
}

/// The repository's tags, manifests (with push times and an index's manifests) and referrer
/// links. A manifest pushed before berth recorded push times counts as pushed when its blob
/// was last stored or read. Blocks.
fn read_state(storage: &Storage, repo: &RepoName) -> Result<RepoState, StorageError> {
    let index = &storage.index;
    let mut state = RepoState::default();
    for (tag, digest) in index.repo_tags(repo)? {
        let Ok(digest) = digest.parse::<Digest>() else {
            continue;
        };
        state.tags.push(TagState {
            pushed_at: index.tag_pushed_at(repo, &tag)?,
            tag: tag.to_string(),
            digest,
        });
    }
    for (digest, media_type) in index.repo_manifest_list(repo)? {
        let pushed_at = match index.manifest_pushed_at(repo, &digest)? {
            Some(at) => at,
            None => index.blob(&digest)?.map_or(0, |r| r.last_access_ms),
        };
        let children = match media::is_index(&media_type) {
            true => index_children(storage, &digest, &media_type)?,
            false => Vec::new(),
        };
        state.manifests.push(ManifestState {
            digest,
            pushed_at,
            children,
        });
    }
    state.referrers = index.repo_referrer_links(repo)?;
    Ok(state)
}

/// The manifests an index lists (none when its bytes cannot be read as one).
fn index_children(
    storage: &Storage,
    digest: &Digest,
    media_type: &str,
) -> Result<Vec<Digest>, StorageError> {
    let Some(body) = storage
        .blobs
        .read_small(digest, media::MAX_MANIFEST_BYTES as u64)?
    else {
        return Ok(Vec::new());
    };
    Ok(Manifest::parse(&body, Some(media_type))
        .map(|m| m.manifests.iter().map(|c| c.digest.clone()).collect())
        .unwrap_or_default())
}

//! Retention over the shared store (`[storage.s3]`): the same [`plan`](super::plan), read from
//! the shared records, with push times from each tag and manifest record's `LastModified`
//! (the record is written again on every push of it), and deletions made as a maintainer's
//! DELETE makes them there.

use super::plan::{self, ManifestState, RepoState, TagState};
use super::{Removal, RetentionReport};
use crate::cache::Cache;
use crate::config::RetentionSettings;
use crate::oci::{media, Digest, RepoName, Tag};
use crate::registry::private::shared::{manifest_bytes, SharedRecords};
use crate::storage::index::now_ms;
use crate::storage::StorageError;

pub(super) async fn apply(
    shared: &SharedRecords<'_>,
    cache: &std::sync::Arc<Cache>,
    rules: &[(String, RetentionSettings)],
    dry_run: bool,
) -> Result<RetentionReport, StorageError> {
    let mut report = RetentionReport {
        dry_run,
        ..RetentionReport::default()
    };
    let now = now_ms();
    for name in shared.repositories().await? {
        let project = name.split('/').next().unwrap_or(&name);
        let Some((_, rules)) = rules.iter().find(|(p, _)| p == project) else {
            continue;
        };
        let Ok(repo) = name.parse::<RepoName>() else {
            continue;
        };
        report.repositories += 1;
        let state = read_state(shared, cache, &repo).await?;
        for removal in plan::plan(&name, rules, &state, now) {
            if dry_run || remove(shared, cache, &repo, &removal).await? {
                report.removals.push(removal);
            }
        }
    }
    Ok(report)
}

async fn read_state(
    shared: &SharedRecords<'_>,
    cache: &std::sync::Arc<Cache>,
    repo: &RepoName,
) -> Result<RepoState, StorageError> {
    let mut state = RepoState::default();
    for (tag, digest, at) in shared.tag_records(repo).await? {
        state.tags.push(TagState {
            tag: tag.to_string(),
            digest,
            pushed_at: Some(at),
        });
    }
    for (digest, media_type, pushed_at) in shared.manifest_records(repo).await? {
        let children = match media::is_index(&media_type) {
            true => manifest_bytes(cache, shared.store, &digest)
                .await?
                .and_then(|m| m.parsed.clone())
                .map(|m| m.manifests.iter().map(|c| c.digest.clone()).collect())
                .unwrap_or_default(),
            false => Vec::new(),
        };
        state.manifests.push(ManifestState {
            digest,
            pushed_at,
            children,
        });
    }
    state.referrers = shared.referrer_links(repo).await?;
    Ok(state)
}

/// Makes one deletion unless a push changed what it was decided on; true when made.
async fn remove(
    shared: &SharedRecords<'_>,
    cache: &std::sync::Arc<Cache>,
    repo: &RepoName,
    removal: &Removal,
) -> Result<bool, StorageError> {
    let made = match &removal.tag {
        Some(tag) => {
            let Ok(tag) = tag.parse::<Tag>() else {
                return Ok(false);
            };
            shared.tag(repo, &tag).await?.as_ref() == Some(&removal.digest)
                && shared.remove_tag(repo, &tag).await?
        }
        None => {
            let tagged = shared
                .tag_records(repo)
                .await?
                .iter()
                .any(|(_, d, _)| *d == removal.digest);
            !tagged && {
                let subject = subject_of(shared, cache, &removal.digest).await?;
                shared
                    .remove_manifest(repo, &removal.digest, subject.as_ref())
                    .await?
            }
        }
    };
    super::log_removal(removal, made);
    Ok(made)
}

/// The subject a manifest names, for removing its referrer record with it.
async fn subject_of(
    shared: &SharedRecords<'_>,
    cache: &std::sync::Arc<Cache>,
    digest: &Digest,
) -> Result<Option<Digest>, StorageError> {
    Ok(manifest_bytes(cache, shared.store, digest)
        .await?
        .and_then(|m| m.parsed.as_ref()?.subject.clone())
        .map(|s| s.digest))
}

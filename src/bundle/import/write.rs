//! The writes of a commit, once the plan is checked: staged blobs become stored ones (as
//! a push's or a fill's would), manifests are stored, and each image is linked to its
//! repository and tagged.

use std::collections::HashSet;
use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use tempfile::{NamedTempFile, TempPath};

use super::commit::{Destination, Imported};
use super::plan::{Plan, PlannedManifest};
use super::stage::Staging;
use crate::cache::{Cache, StoredManifest};
use crate::oci::{Digest, ErrorCode, Reference, RepoName};
use crate::registry::error::storage_error;
use crate::registry::private::Projects;
use crate::registry::RegistryError;
use crate::storage::index::{now_ms, BlobRecord, PushedManifest, ReferrerRecord, TagRecord};
use crate::storage::StorageError;

fn internal(e: impl Into<StorageError>) -> RegistryError {
    storage_error(e)
}

/// What each image of the plan holds, in the plan's order.
fn holds(plan: &Plan) -> Vec<HashSet<&Digest>> {
    plan.images
        .iter()
        .map(|i| i.holds.iter().collect())
        .collect()
}

/// The project repositories among `destinations` whose image holds `digest`.
fn projects_holding(
    digest: &Digest,
    destinations: &[Destination],
    holds: &[HashSet<&Digest>],
) -> Vec<RepoName> {
    destinations
        .iter()
        .zip(holds)
        .filter(|(_, holds)| holds.contains(digest))
        .filter_map(|(destination, _)| match destination {
            Destination::Project(repo, _) => Some(repo.clone()),
            Destination::Mirror(..) => None,
        })
        .collect()
}

/// Makes the plan part of the store for `destinations` (one per image of the plan).
pub(super) async fn write(
    cache: &Arc<Cache>,
    staging: &Arc<Staging>,
    plan: &Plan,
    destinations: &[Destination],
    imported: &mut Imported,
) -> Result<(), RegistryError> {
    let holds = holds(plan);
    for (digest, size) in &plan.blobs {
        let repos = projects_holding(digest, destinations, &holds);
        let (cache, staging, digest, size) = (
            Arc::clone(cache),
            Arc::clone(staging),
            digest.clone(),
            *size,
        );
        let new = tokio::task::spawn_blocking(move || {
            store_blob(&cache, &staging, &digest, size, &repos)
        })
        .await
        .map_err(|e| RegistryError::internal("import task failed", e))??;
        if new {
            imported.blobs_added += 1;
            imported.bytes_added += size;
        }
    }
    let mirrored = destinations
        .iter()
        .any(|d| matches!(d, Destination::Mirror(..)));
    for manifest in plan.manifests.iter().filter(|_| mirrored) {
        cache
            .put_manifest(StoredManifest {
                digest: manifest.digest.clone(),
                media_type: manifest.parsed.media_type.clone(),
                body: Bytes::from(manifest.body.clone()),
                parsed: Some(Arc::clone(&manifest.parsed)),
            })
            .await
            .map_err(internal)?;
    }
    for ((image, destination), holds) in plan.images.iter().zip(destinations).zip(&holds) {
        let manifests = plan.manifests.iter().filter(|m| holds.contains(&m.digest));
        match destination {
            Destination::Project(repo, reference) => {
                for manifest in manifests {
                    let tag = match reference {
                        Reference::Tag(tag) if manifest.digest == image.digest => Some(tag),
                        _ => None,
                    };
                    push_manifest(cache, repo, manifest, tag).await?;
                }
            }
            Destination::Mirror(target, reference) => {
                let upstream = target.upstream.name();
                let types: std::collections::HashMap<&Digest, &str> = manifests
                    .map(|m| (&m.digest, m.parsed.media_type.as_str()))
                    .collect();
                for digest in &image.holds {
                    let media_type = types.get(digest).copied().unwrap_or_default();
                    cache
                        .link(upstream, &target.repo, digest, media_type)
                        .map_err(internal)?;
                }
                if let Reference::Tag(tag) = reference {
                    let record = TagRecord {
                        digest: image.digest.clone(),
                        media_type: image.media_type.clone(),
                        checked_at_ms: now_ms(),
                    };
                    cache
                        .put_tag(upstream, &target.repo, tag, record)
                        .await
                        .map_err(internal)?;
                }
            }
        }
    }
    cache.storage().index.flush_async().await.map_err(internal)
}

/// [`write`] for a node over a shared store, where only private projects are imported (see
/// `commit::destination`): each blob goes into the store and is linked into the repositories
/// that hold it, then each image's manifests (children first, as the plan orders them), the
/// image's own carrying its tag, go in through the projects' records.
pub(super) async fn write_shared(
    projects: &Projects,
    staging: &Staging,
    plan: &Plan,
    destinations: &[Destination],
    imported: &mut Imported,
) -> Result<(), RegistryError> {
    let holds = holds(plan);
    for (digest, size) in &plan.blobs {
        let repos = projects_holding(digest, destinations, &holds);
        if projects
            .import_blob(&repos, digest, *size, &staging.path(digest))
            .await?
        {
            imported.blobs_added += 1;
            imported.bytes_added += size;
        }
    }
    for ((image, destination), holds) in plan.images.iter().zip(destinations).zip(&holds) {
        let Destination::Project(repo, reference) = destination else {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("{}: with a shared store, import into a project", image.name),
            ));
        };
        for manifest in plan.manifests.iter().filter(|m| holds.contains(&m.digest)) {
            let tag = match reference {
                Reference::Tag(tag) if manifest.digest == image.digest => Some(tag),
                _ => None,
            };
            projects
                .import_manifest(
                    repo,
                    &manifest.digest,
                    &manifest.parsed,
                    Bytes::from(manifest.body.clone()),
                    tag,
                )
                .await?;
        }
    }
    Ok(())
}

/// Stores one config or layer: the staged copy becomes the blob (a private upload when a
/// project holds it, linked to every such repository; a cached blob otherwise). A blob
/// stored already is linked as it is. True when it is new to the store.
fn store_blob(
    cache: &Arc<Cache>,
    staging: &Staging,
    digest: &Digest,
    size: u64,
    repos: &[RepoName],
) -> Result<bool, RegistryError> {
    let storage = cache.storage();
    let staged = staging.path(digest);
    let mut new = false;
    if staging.staged(digest).is_some() {
        // Counted as an upload while it becomes the blob, as a push's bytes are.
        cache.upload_grew(size);
        new = match repos.first() {
            Some(repo) => {
                let id = digest.hex()[..32].to_owned();
                std::fs::rename(&staged, storage.blobs.upload_path(&id)).map_err(internal)?;
                storage
                    .store_upload(&id, digest, size, repo)
                    .map_err(internal)?
            }
            None => {
                let file = File::open(&staged).map_err(internal)?;
                let path = TempPath::try_from_path(&staged).map_err(internal)?;
                let temp = NamedTempFile::from_parts(file, path);
                storage.store_temp(temp, digest, size).map_err(internal)?
            }
        };
        cache.upload_stored(size, new);
    } else if storage.index.blob(digest).map_err(internal)?.is_none() {
        return Err(RegistryError::new(
            ErrorCode::BlobUnknown,
            format!("blob {digest} was removed from the store during the import; run it again"),
        ));
    }
    for repo in repos {
        storage
            .index
            .put_private_blob(repo, digest, &BlobRecord::new(size, None))
            .map_err(internal)?;
    }
    Ok(new)
}

async fn push_manifest(
    cache: &Arc<Cache>,
    repo: &RepoName,
    manifest: &PlannedManifest,
    tag: Option<&crate::oci::Tag>,
) -> Result<(), RegistryError> {
    let parsed = &manifest.parsed;
    let size = manifest.body.len() as u64;
    let referrer = ReferrerRecord::of(parsed, &manifest.digest, size);
    let pushed = PushedManifest {
        repo,
        digest: &manifest.digest,
        media_type: &parsed.media_type,
        size,
        tag,
        referrer: referrer.as_ref().map(|(s, r)| (s, r)),
    };
    cache
        .put_pushed_manifest(
            pushed,
            Bytes::from(manifest.body.clone()),
            Arc::clone(parsed),
        )
        .await
        .map_err(internal)
}

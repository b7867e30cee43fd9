//! The daemon's side of an import (also run by the CLI on a stopped berth): which names the
//! bundle's images get, what is there already, staging a blob from a stream, and the commit.
//!
//! The commit walks the plan again over the staged copies and the store, then writes, in
//! this order: pin records (so eviction spares what follows), blobs, manifests, links, and
//! the tags last, so a commit cut short leaves nothing a client can pull by tag; running the
//! import again completes it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::plan::{self, Roots};
use super::stage::{Staged, StagedWriter, Staging};
use super::verify::CHUNK;
use super::BundleError;
use crate::cache::Cache;
use crate::oci::{Digest, ErrorCode, ImageReference, Reference, RepoName};
use crate::registry::error::storage_error;
use crate::registry::namespace::MirrorRepo;
use crate::registry::repository::Target;
use crate::registry::{Registry, RegistryError};
use crate::storage::index::{now_ms, PinRecord, IMPORTED_PIN};

/// What the CLI tells the daemon about a bundle: where it goes, what `index.json` names, and
/// (for [`begin`]) every digest of its plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRequest {
    /// A private project; the mirror cache when `None`.
    pub into: Option<String>,
    pub roots: Roots,
    #[serde(default)]
    pub digests: Vec<Digest>,
}

/// The digests of the request that need no copy: staged or stored already.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Begun {
    pub present: Vec<Digest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Imported {
    pub images: Vec<ImportedImage>,
    /// Blobs and manifests new to the store, and their bytes.
    pub blobs_added: usize,
    pub bytes_added: u64,
    /// Child manifests the bundle left out (platforms not exported).
    pub left_out: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportedImage {
    /// As the bundle names it.
    pub name: String,
    /// Where a client pulls it from now.
    pub stored_as: String,
    pub digest: Digest,
}

/// Where one image of the bundle goes.
pub(super) enum Destination {
    Mirror(MirrorRepo, Reference),
    Project(RepoName, Reference),
}

fn refused(code: ErrorCode, message: impl Into<String>) -> RegistryError {
    RegistryError::new(code, message)
}

fn bundle_error(e: BundleError) -> RegistryError {
    let code = match &e {
        BundleError::Blob { .. } => ErrorCode::DigestInvalid,
        BundleError::Layout(_) => ErrorCode::ManifestInvalid,
        BundleError::Write(_) => return RegistryError::internal("cannot stage a blob", e),
    };
    refused(code, e.to_string())
}

fn destination(
    registry: &Registry,
    name: &str,
    into: Option<&str>,
) -> Result<Destination, RegistryError> {
    let image: ImageReference = name.parse().map_err(|e: crate::oci::ParseError| {
        refused(
            ErrorCode::NameInvalid,
            format!("the bundle names an image {name:?}, which is not an image name: {e}"),
        )
    })?;
    let reference = image.reference().clone();
    let Some(project) = into else {
        return match registry.target(&image.name(), None)? {
            // Each node keeps its own cached tags: an image seeded into one node's mirror would
            // not be seen through the others.
            Target::Mirror(_) if registry.projects.imports_to_shared_store() => Err(refused(
                ErrorCode::Unsupported,
                format!(
                    "{name}: with a shared store ([storage.s3]) berth imports into a private project \
                     only (--into PROJECT), which every node serves; a mirror's cached tags are each node's own"
                ),
            )),
            Target::Mirror(mirror) => Ok(Destination::Mirror(mirror, reference)),
            Target::Project(_) => Err(refused(
                ErrorCode::Denied,
                format!("{name} names a private project: import it with --into"),
            )),
        };
    };
    // An image exported from this project (`host/team/app:1`) goes back to `team/app`, not
    // `team/team/app`; any other lands under the project (`team/library/alpine`).
    let repository = image.repository().as_str();
    let full = match repository
        .strip_prefix(project)
        .and_then(|r| r.strip_prefix('/'))
    {
        Some(_) => repository.to_owned(),
        None => format!("{project}/{repository}"),
    };
    match registry.target(&full, None)? {
        Target::Project(repo) => Ok(Destination::Project(repo, reference)),
        Target::Mirror(_) => Err(refused(
            ErrorCode::NameUnknown,
            format!("{project:?} is not a private project configured on this berth"),
        )),
    }
}

/// Opens (creating its directory) the session's staging, on the blocking pool.
async fn staging(registry: &Registry, session: &str) -> Result<Staging, RegistryError> {
    let data_dir = registry.cache().storage().data_dir().to_owned();
    let session = session.to_owned();
    blocking(move || {
        Staging::open(&data_dir, &session)
            .map_err(|e| refused(ErrorCode::NameInvalid, e.to_string()))
    })
    .await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RegistryError::internal("import task failed", e))?
}

/// Checks every image has a place here, and says which digests need no copy.
pub async fn begin(
    registry: &Registry,
    session: &str,
    request: ImportRequest,
) -> Result<Begun, RegistryError> {
    for root in &request.roots.images {
        destination(registry, &root.name, request.into.as_deref())?;
    }
    let staging = staging(registry, session).await?;
    let cache = Arc::clone(registry.cache());
    blocking(move || {
        let staged = Staged {
            staging: &staging,
            stored: local_store(&cache),
        };
        let present = request
            .digests
            .into_iter()
            .filter(|d| plan::BlobSource::size(&staged, d).is_some())
            .collect();
        Ok(Begun { present })
    })
    .await
}

/// Stages blob `digest` of `size` bytes from `body`, checking it on the way.
pub async fn stage<E: std::fmt::Display>(
    registry: &Registry,
    session: &str,
    digest: &Digest,
    size: u64,
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
) -> Result<(), RegistryError> {
    let staging = staging(registry, session).await?;
    let d = digest.clone();
    let mut writer: StagedWriter = blocking(move || {
        staging
            .writer(&d)
            .map_err(|e| RegistryError::internal("cannot stage a blob", e))
    })
    .await?;
    let mut gathered = Vec::with_capacity(CHUNK);
    loop {
        let chunk = body.next().await.transpose().map_err(|e| {
            refused(
                ErrorCode::BlobUploadInvalid,
                format!("blob {digest}: the body broke off: {e}"),
            )
        })?;
        let end = chunk.is_none();
        if let Some(chunk) = chunk {
            gathered.extend_from_slice(&chunk);
        }
        if gathered.len() >= CHUNK || (end && !gathered.is_empty()) {
            let bytes = std::mem::replace(&mut gathered, Vec::with_capacity(CHUNK));
            writer = blocking(move || {
                writer
                    .write(&bytes)
                    .map_err(|e| RegistryError::internal("cannot stage a blob", e))?;
                Ok(writer)
            })
            .await?;
            if writer.written() > size {
                break;
            }
        }
        if end {
            break;
        }
    }
    let d = digest.clone();
    blocking(move || writer.finish(&d, size).map_err(bundle_error)).await
}

/// Drops what a session staged.
pub async fn abort(registry: &Registry, session: &str) -> Result<(), RegistryError> {
    let staging = staging(registry, session).await?;
    blocking(move || {
        staging
            .remove()
            .map_err(|e| RegistryError::internal("cannot remove the staging", e))
    })
    .await
}

/// Checks the staged bundle again and makes it part of the store.
pub async fn commit(
    registry: &Registry,
    session: &str,
    request: ImportRequest,
) -> Result<Imported, RegistryError> {
    let destinations = request
        .roots
        .images
        .iter()
        .map(|root| destination(registry, &root.name, request.into.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let staging = Arc::new(staging(registry, session).await?);
    let cache = Arc::clone(registry.cache());
    let (s, roots) = (Arc::clone(&staging), request.roots.clone());
    let plan = blocking(move || {
        let staged = Staged {
            staging: &s,
            stored: local_store(&cache),
        };
        plan::walk(&staged, &roots).map_err(bundle_error)
    })
    .await?;
    if registry.projects.imports_to_shared_store() {
        let mut imported = Imported {
            images: Vec::new(),
            blobs_added: 0,
            bytes_added: 0,
            left_out: plan.left_out,
        };
        super::write::write_shared(
            &registry.projects,
            &staging,
            &plan,
            &destinations,
            &mut imported,
        )
        .await?;
        return finished(staging, &plan, &destinations, imported).await;
    }
    let cache = Arc::clone(registry.cache());
    let guard = format!("importing:{session}");
    let mut all: Vec<Digest> = plan.manifests.iter().map(|m| m.digest.clone()).collect();
    all.extend(plan.blobs.iter().map(|(d, _)| d.clone()));
    // While it commits, one record holds everything (a project's content, too, until its
    // links keep it); the mirror's images get their own records.
    let Some(first) = all.first().cloned() else {
        return Err(refused(
            ErrorCode::ManifestInvalid,
            "the bundle holds no image",
        ));
    };
    put_pin(&cache, &guard, &first, all.clone()).await?;
    let mut imported = Imported {
        images: Vec::new(),
        blobs_added: 0,
        bytes_added: 0,
        left_out: plan.left_out,
    };
    for (image, destination) in plan.images.iter().zip(&destinations) {
        if let Destination::Mirror(target, reference) = destination {
            let key = imported_pin(target.upstream.name(), &target.repo, reference);
            put_pin(&cache, &key, &image.digest, image.holds.clone()).await?;
        }
    }
    let result = super::write::write(&cache, &staging, &plan, &destinations, &mut imported).await;
    let index = &cache.storage().index;
    index.remove_pin(&guard).map_err(storage_error)?;
    index.flush_async().await.map_err(storage_error)?;
    result?;
    finished(staging, &plan, &destinations, imported).await
}

/// Removes the session's staging and names what was imported.
async fn finished(
    staging: Arc<Staging>,
    plan: &plan::Plan,
    destinations: &[Destination],
    mut imported: Imported,
) -> Result<Imported, RegistryError> {
    blocking(move || {
        staging
            .remove()
            .map_err(|e| RegistryError::internal("cannot remove the staging", e))
    })
    .await?;
    for (image, destination) in plan.images.iter().zip(destinations) {
        let stored_as = match destination {
            Destination::Mirror(m, r) => format!("{}/{}{}", m.upstream.name(), m.repo, suffix(r)),
            Destination::Project(repo, r) => format!("{repo}{}", suffix(r)),
        };
        tracing::info!(image = %image.name, %stored_as, digest = %image.digest, "imported");
        imported.images.push(ImportedImage {
            name: image.name.clone(),
            stored_as,
            digest: image.digest.clone(),
        });
    }
    Ok(imported)
}

/// The node's store when it is the store of record (see [`Staged::stored`]).
fn local_store(cache: &Cache) -> Option<&crate::storage::Storage> {
    cache.shared().is_none().then(|| cache.storage().as_ref())
}

/// The pin record of an imported mirror image: `imported:docker.io/library/alpine:3.20`, the
/// name resolved as for a pull (see [`IMPORTED_PIN`]), so `berth cache rm` finds it.
pub fn imported_pin(upstream: &str, repo: &RepoName, reference: &Reference) -> String {
    format!("{IMPORTED_PIN}{upstream}/{repo}{}", suffix(reference))
}

fn suffix(reference: &Reference) -> String {
    match reference {
        Reference::Tag(tag) => format!(":{tag}"),
        Reference::Digest(digest) => format!("@{digest}"),
    }
}

async fn put_pin(
    cache: &Cache,
    key: &str,
    digest: &Digest,
    blobs: Vec<Digest>,
) -> Result<(), RegistryError> {
    let record = PinRecord {
        digest: digest.clone(),
        blobs,
        seeded_ms: now_ms(),
    };
    let index = &cache.storage().index;
    index.put_pin(key, &record).map_err(storage_error)?;
    index.flush_async().await.map_err(storage_error)
}

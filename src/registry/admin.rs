//! Operations on the cache as a whole, for the admin endpoint and the offline CLI: stats, the
//! cached images, dropping one (garbage collection is [`super::gc`]). The decisions and
//! removals are the cache's ([`crate::cache::collect`]); this module resolves the operator's image names the way
//! pulls resolve them and runs the blocking work off the async workers.

use std::sync::Arc;

use super::error::storage_error;
use super::repository::Target;
use super::{Registry, RegistryError};
use crate::cache::collect::Dropped;
use crate::cache::inventory::{CacheStats, CachedImage};
use crate::cache::Cache;
use crate::oci::{ErrorCode, ImageReference};
use crate::storage::index::IMPORTED_PIN;
use crate::storage::StorageError;

/// Runs blocking cache work on the blocking pool.
async fn blocking<T: Send + 'static>(
    cache: &Arc<Cache>,
    work: impl FnOnce(&Cache) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, RegistryError> {
    let cache = Arc::clone(cache);
    tokio::task::spawn_blocking(move || work(&cache))
        .await
        .map_err(|e| RegistryError::internal("admin task failed", e))?
        .map_err(|e| RegistryError::internal("storage failed", e))
}

impl Registry {
    pub async fn cache_stats(&self) -> Result<CacheStats, RegistryError> {
        blocking(self.cache(), Cache::stats).await
    }

    pub async fn cached_images(&self) -> Result<Vec<CachedImage>, RegistryError> {
        blocking(self.cache(), Cache::cached_images).await
    }

    /// Drops a cached mirror image named as a client names it (`alpine:3.20`,
    /// `docker.io/library/alpine:3.20`, `ghcr.io/org/tool@sha256:…`), or, with no tag or
    /// digest (`alpine`), every cached tag of that repository. A private project's repository
    /// is refused: its content is pushed, not cached.
    pub async fn drop_cached(&self, image: &str) -> Result<Dropped, RegistryError> {
        let reference: ImageReference = image.parse().map_err(|e: crate::oci::ParseError| {
            RegistryError::new(ErrorCode::NameInvalid, e.to_string())
        })?;
        let mirror = match self.target(&reference.name(), None)? {
            Target::Mirror(mirror) => mirror,
            Target::Project(_) => {
                return Err(RegistryError::new(
                    ErrorCode::Denied,
                    format!("{image} is in a private project; berth cache rm drops cached mirror images only"),
                ))
            }
        };
        let upstream = mirror.upstream.name().to_owned();
        let tag = reference.reference().clone();
        let whole = !names_reference(image);
        // An image `berth import` pinned is released first, or its blobs would all be spared.
        let index = &self.cache().storage().index;
        let imported = match (&tag, whole) {
            (_, true) => format!("{IMPORTED_PIN}{upstream}/{}", mirror.repo),
            (crate::oci::Reference::Tag(t), false) => {
                format!("{IMPORTED_PIN}{upstream}/{}:{t}", mirror.repo)
            }
            (crate::oci::Reference::Digest(d), false) => {
                format!("{IMPORTED_PIN}{upstream}/{}@{d}", mirror.repo)
            }
        };
        for (name, _) in index.pins().map_err(storage_error)? {
            let matches = match whole {
                true => name
                    .strip_prefix(&imported)
                    .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@')),
                false => name == imported,
            };
            if matches {
                index.remove_pin(&name).map_err(storage_error)?;
                tracing::info!(pin = %name, "imported image released");
            }
        }
        let dropped = blocking(self.cache(), move |cache| match whole {
            true => cache.drop_repository(&upstream, &mirror.repo),
            false => cache.drop_image(&upstream, &mirror.repo, &tag),
        })
        .await?;
        let Some(dropped) = dropped else {
            return Err(RegistryError::new(
                ErrorCode::ManifestUnknown,
                format!("{image} is not cached"),
            ));
        };
        tracing::info!(
            image,
            digest = ?dropped.digest.as_ref().map(ToString::to_string),
            blobs_removed = dropped.blobs_removed,
            bytes_removed = dropped.bytes_removed,
            blobs_shared = dropped.blobs_shared,
            "dropped a cached image"
        );
        Ok(dropped)
    }
}

/// Whether an image name as written names a tag or a digest (`alpine:3.20`, `a@sha256:…`),
/// rather than a whole repository (`alpine`, `localhost:5000/app`).
fn names_reference(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    image.contains('@') || last.contains(':')
}

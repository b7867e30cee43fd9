//! Fetching a whole image into the cache with no client asking: what pinning an image does.
//!
//! It walks the image as a client would, through the same paths (single flights, fills,
//! stale answers when upstream is down), and waits for every blob to be committed.

use std::collections::HashSet;

use futures_util::{StreamExt, TryStreamExt};

use super::{fill_error, storage_error, BlobRead, Mirror, PARALLEL_BLOBS};
use crate::oci::media::{self, AcceptList};
use crate::oci::{Digest, Reference};
use crate::registry::error::RegistryError;
use crate::registry::namespace::MirrorRepo;

/// An image now complete in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededImage {
    /// What the reference resolved to.
    pub digest: Digest,
    /// Every manifest and blob of the image, `digest` first.
    pub holds: Vec<Digest>,
    /// The image's manifests: `digest`, then the platform manifests taken from it.
    pub manifests: Vec<Digest>,
}

impl Mirror {
    /// Caches every manifest and every blob of `reference`; of an index, only the entries for
    /// `platforms` (all when empty).
    pub async fn seed(
        &self,
        target: &MirrorRepo,
        reference: &Reference,
        platforms: &[String],
    ) -> Result<SeededImage, RegistryError> {
        // An empty Accept list takes every type, so the answer is the one any client gets.
        let accept = AcceptList::default();
        let root = self.manifest(target, reference, &accept).await?.manifest;
        let mut holds = vec![root.digest.clone()];
        let mut manifests = vec![root.digest.clone()];
        let mut seen: HashSet<Digest> = HashSet::from([root.digest.clone()]);
        let mut pending = vec![root.clone()];
        while let Some(manifest) = pending.pop() {
            // An index names platform manifests; an image manifest, the blobs to pull.
            // A body berth cannot read (passed through from upstream) names nothing it can walk.
            let Some(parsed) = manifest.parsed.as_deref() else {
                continue;
            };
            if media::is_index(&manifest.media_type) {
                let wanted: Vec<Digest> = parsed
                    .manifests
                    .iter()
                    .filter(|child| {
                        let platform = child.platform.as_ref().map(ToString::to_string);
                        is_wanted(platform.as_deref(), platforms)
                    })
                    .map(|child| child.digest.clone())
                    .collect();
                for child in wanted {
                    if seen.insert(child.clone()) {
                        holds.push(child.clone());
                        manifests.push(child.clone());
                        let reply = self
                            .manifest(target, &Reference::Digest(child), &accept)
                            .await?;
                        pending.push(reply.manifest);
                    }
                }
                continue;
            }
            let new_blobs: Vec<Digest> = parsed
                .pulled_blobs()
                .into_iter()
                .filter(|blob| seen.insert(blob.clone()))
                .collect();
            // A few at a time, as clients pull layers.
            futures_util::stream::iter(new_blobs.iter())
                .map(|blob| self.ensure_blob(target, blob))
                .buffer_unordered(PARALLEL_BLOBS)
                .try_collect::<Vec<bool>>()
                .await?;
            holds.extend(new_blobs);
        }
        Ok(SeededImage {
            digest: root.digest.clone(),
            holds,
            manifests,
        })
    }

    /// Returns once `digest` is committed to the cache (at once if it already is); `true`
    /// when it was not stored before.
    pub(super) async fn ensure_blob(
        &self,
        target: &MirrorRepo,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        // Already stored: an index lookup says so. Going through `blob` would map (and read
        // in) the whole file. Stored for another repository, it still needs upstream's word
        // that this one holds it too (an air-gapped site must be able to serve it later).
        if self
            .cache
            .blob_size(digest)
            .map_err(storage_error)?
            .is_some()
        {
            if self.linked(target, digest)?.is_none() {
                self.confirm_blob(target, digest).await?;
            }
            return Ok(false);
        }
        let body = self.blob(target, digest, BlobRead::Keep).await?;
        if !body.is_filling() {
            return Ok(false);
        }
        body.finished().await.map(|()| true).map_err(fill_error)
    }
}

/// Whether an index entry for `platform` is wanted: every entry when no platforms are
/// configured, and an entry that names no platform always (nothing to judge it by).
/// `linux/arm64` covers every variant of it; `linux/arm64/v8` only that one.
fn is_wanted(platform: Option<&str>, platforms: &[String]) -> bool {
    let Some(platform) = platform else {
        return true;
    };
    platforms.is_empty()
        || platforms.iter().any(|wanted| {
            platform == wanted
                || platform
                    .strip_prefix(wanted.as_str())
                    .is_some_and(|rest| rest.starts_with('/') && wanted.matches('/').count() == 1)
        })
}

#[cfg(test)]
mod tests {
    use super::is_wanted;

    #[test]
    fn platform_filter() {
        let some = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_wanted(Some("linux/s390x"), &[]));
        assert!(is_wanted(None, &some(&["linux/amd64"])));
        assert!(is_wanted(Some("linux/amd64"), &some(&["linux/amd64"])));
        assert!(is_wanted(Some("linux/arm64/v8"), &some(&["linux/arm64"])));
        assert!(is_wanted(
            Some("linux/arm64/v8"),
            &some(&["linux/arm64/v8"])
        ));
        assert!(!is_wanted(Some("linux/arm/v7"), &some(&["linux/arm/v6"])));
        assert!(!is_wanted(Some("linux/amd64"), &some(&["linux/arm64"])));
        assert!(!is_wanted(Some("linux/amd64x"), &some(&["linux/amd64"])));
        assert!(!is_wanted(Some("unknown/unknown"), &some(&["linux/amd64"])));
    }
}

//! The referrers of a seeded image, brought along: how a pinned image keeps its signatures,
//! SBOMs and attestations at a site that may lose upstream.
//!
//! For each of the image's own manifests (the one its reference resolved to, and the platform
//! manifests seeded from it), the referrers are listed as a client's referrers request lists
//! them (upstream's API, else the referrers tag schema; answers kept for offline use), and each
//! referrer is seeded whole through the same paths (its manifest, its blobs, every platform of
//! a referrer that is an index), verified like any fill. One level only: the referrers of a
//! referrer (a signature on an SBOM) are not followed.

use std::collections::HashSet;

use super::Mirror;
use crate::oci::{Digest, ErrorCode, Reference};
use crate::registry::error::RegistryError;
use crate::registry::namespace::MirrorRepo;

/// What was brought along with an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attached {
    /// The referrer manifests, each now complete in the cache.
    pub referrers: Vec<Digest>,
    /// Every digest they hold (their manifests first), and the indexes of the referrers tags
    /// that listed them: what a pin must keep for its referrers to be answered offline.
    pub holds: Vec<Digest>,
}

impl Mirror {
    /// Caches the referrers of every manifest in `subjects`, whole.
    pub async fn seed_referrers(
        &self,
        target: &MirrorRepo,
        subjects: &[Digest],
    ) -> Result<Attached, RegistryError> {
        let mut attached = Attached::default();
        let mut seen: HashSet<Digest> = subjects.iter().cloned().collect();
        for subject in subjects {
            let listed = self.list_referrers(target, subject).await?;
            if let Some(index) = listed.tag_index {
                if seen.insert(index.clone()) {
                    attached.holds.push(index);
                }
            }
            for descriptor in &listed.descriptors {
                // `list_referrers` keeps only descriptors with a valid digest.
                let Some(digest) = descriptor["digest"]
                    .as_str()
                    .and_then(|d| d.parse::<Digest>().ok())
                else {
                    continue;
                };
                if attached.referrers.contains(&digest) {
                    continue;
                }
                let seeded = match self
                    .seed(target, &Reference::Digest(digest.clone()), &[])
                    .await
                {
                    Ok(seeded) => seeded,
                    // A list naming a manifest upstream does not have (a stale tag-schema
                    // index): nothing to bring.
                    Err(e) if e.code() == ErrorCode::ManifestUnknown => {
                        tracing::warn!(repo = %target.repo, %subject, referrer = %digest, error = %e, "a listed referrer is not upstream; skipped");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                attached.referrers.push(digest);
                attached
                    .holds
                    .extend(seeded.holds.into_iter().filter(|d| seen.insert(d.clone())));
            }
        }
        Ok(attached)
    }
}

//! The private half of garbage collection: a repository's live set is the closure of the
//! manifests still in it (tagged or not: an index's child manifests, every manifest's config
//! and layers, and referrers whose subject stays). A link of the repository (`repo_blobs`) to
//! anything outside that set goes, unless it was made, or its blob stored or read, within the
//! grace period. What is then linked nowhere is left to the removal pass
//! ([`super::collect`]), which takes it off the disk under the digest's lock.
//!
//! Each repository is handled while the caller's `exclusive(repo)` guard is held: the private
//! domain takes its repository lock exclusively there, which a manifest PUT, an upload's finish
//! and a mount hold shared. Under it, the repository's manifests are read again (a manifest
//! PUT that completed before is in the live set) and no PUT can check its references until the
//! links are gone (a PUT after sees the blob missing and answers `MANIFEST_BLOB_UNKNOWN`). A
//! link is removed only if it is still the entry read before the lock was taken, so an upload
//! or mount that linked the blob again meanwhile keeps it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Cache;
use crate::oci::RepoName;
use crate::storage::gc::Manifests;
use crate::storage::index::Link;
use crate::storage::StorageError;

/// What the private half did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlinked {
    /// Repository links removed (blobs and manifests no manifest of the repository needs).
    pub links_removed: usize,
    /// Outside the live set, but linked, stored or read within the grace period.
    pub recent_kept: usize,
}

impl Cache {
    /// Unlinks from each private repository what its live set does not hold (see the module
    /// docs). `manifests` gains the manifests pushed since it was scanned. Blocks.
    pub(super) fn unlink_unreachable<G>(
        &self,
        manifests: &mut Manifests,
        cutoff: u64,
        mut exclusive: impl FnMut(&RepoName) -> G,
    ) -> Result<Unlinked, StorageError> {
        let index = &self.storage.index;
        let mut by_repo: BTreeMap<RepoName, Vec<Link>> = BTreeMap::new();
        for link in index.timed_links() {
            let link = link?;
            by_repo.entry(link.repo.clone()).or_default().push(link);
        }
        let mut done = Unlinked::default();
        for (repo, links) in by_repo {
            let _held = exclusive(&repo);
            let roots = index.repo_manifest_digests(&repo)?;
            for root in &roots {
                manifests.add(&self.storage, root)?;
            }
            let live = manifests.live(&roots);
            for link in links {
                if live.contains(&link.digest) {
                    continue;
                }
                let used = index
                    .blob(&link.digest)?
                    .is_some_and(|record| record.last_access_ms > cutoff);
                if link.linked_ms > cutoff || used {
                    done.recent_kept += 1;
                } else if index.unlink_if_unchanged(&link)? {
                    done.links_removed += 1;
                }
            }
        }
        Ok(done)
    }
}

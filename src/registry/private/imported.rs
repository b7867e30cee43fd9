//! What `berth import` writes into a private project when the shared store is the store of
//! record (`[storage.s3]`): the same records a push makes, so every node serves the imported
//! images at once. The operator's bundle was hashed as it was staged and its plan checked
//! again before these calls (`bundle::import`); unlike a push, an image index may go in with
//! platforms the bundle left out, as it does into a project without a shared store.

use std::path::Path;

use bytes::Bytes;

use super::shared::{PushedRecord, SharedRecords};
use super::Projects;
use crate::oci::{Digest, Manifest, RepoName, Tag};
use crate::registry::error::storage_error;
use crate::registry::RegistryError;
use crate::storage::index::ReferrerRecord;

impl Projects {
    /// Whether imports go to the shared store ([`Self::import_blob`], [`Self::import_manifest`]).
    pub fn imports_to_shared_store(&self) -> bool {
        self.shared().is_some()
    }

    fn shared_for_import(&self) -> Result<SharedRecords<'_>, RegistryError> {
        self.shared().ok_or_else(|| {
            RegistryError::internal("import failed", "this berth has no shared store")
        })
    }

    /// Puts the staged blob at `staged` (`digest`, `size` bytes, hashed when it was staged)
    /// into the shared store unless it holds it already, then links it into `repos`. True
    /// when the store did not hold it.
    pub async fn import_blob(
        &self,
        repos: &[RepoName],
        digest: &Digest,
        size: u64,
        staged: &Path,
    ) -> Result<bool, RegistryError> {
        let shared = self.shared_for_import()?;
        let held = shared
            .store
            .blob_size(digest)
            .await
            .map_err(storage_error)?;
        let new = held != Some(size);
        if new {
            shared
                .store
                .put_blob_file(digest, staged)
                .await
                .map_err(storage_error)?;
        }
        for repo in repos {
            shared
                .link_blob(repo, digest, size)
                .await
                .map_err(storage_error)?;
        }
        Ok(new)
    }

    /// Records an imported manifest in `repo` (its blobs and present children imported
    /// before it), tagged `tag` when given, and keeps a copy in this node's tier.
    pub async fn import_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        parsed: &std::sync::Arc<Manifest>,
        body: Bytes,
        tag: Option<&Tag>,
    ) -> Result<(), RegistryError> {
        let shared = self.shared_for_import()?;
        let referrer = ReferrerRecord::of(parsed, digest, body.len() as u64);
        let pushed = PushedRecord {
            digest,
            media_type: &parsed.media_type,
            body: body.clone(),
            tag,
            referrer: referrer.as_ref().map(|(s, r)| (s, r)),
        };
        self.put_shared_manifest(&shared, repo, &pushed, parsed)
            .await
    }
}

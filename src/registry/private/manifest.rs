//! Manifests of private repositories: validated on PUT (read by the one manifest model, then
//! the digest, and that everything referenced is already in the repository), stored
//! content-addressed like every blob, and indexed by repository, tag and subject (for the
//! referrers API).

use std::sync::Arc;

use bytes::Bytes;

use super::shared::{self, PushedRecord, SharedRecords};
use super::Projects;
use crate::cache::StoredManifest;
use crate::oci::media;
use crate::oci::{Digest, ErrorCode, InvalidManifest, Manifest, ParseError, Reference, RepoName};
use crate::registry::error::storage_error;
use crate::registry::error::RegistryError;
use crate::storage::index::{PushedManifest, ReferrerRecord};

/// What a PUT stored.
pub struct PutManifest {
    pub digest: Digest,
    /// The manifest's subject, answered as `OCI-Subject`.
    pub subject: Option<Digest>,
}

fn reference_missing(repo: &RepoName, digest: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestBlobUnknown,
        format!(
            "the manifest references {digest}, which is not in repository {repo}; push it first"
        ),
    )
    .with_detail(serde_json::json!({ "digest": digest.to_string() }))
}

fn manifest_unknown(repo: &RepoName, reference: &Reference) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is not in repository {repo}"),
    )
}

impl Projects {
    /// Records a manifest in the shared store (a push or an import), then keeps a hot copy in
    /// this node's tier; the shared store has it whatever happens to that copy.
    pub(super) async fn put_shared_manifest(
        &self,
        shared: &SharedRecords<'_>,
        repo: &RepoName,
        record: &PushedRecord<'_>,
        parsed: &Arc<Manifest>,
    ) -> Result<(), RegistryError> {
        shared
            .put_manifest(repo, record)
            .await
            .map_err(storage_error)?;
        let hot = StoredManifest {
            digest: record.digest.clone(),
            media_type: record.media_type.to_owned(),
            body: record.body.clone(),
            parsed: Some(Arc::clone(parsed)),
        };
        if let Err(e) = self.cache.put_manifest(hot).await {
            tracing::warn!(digest = %record.digest, error = %e, "cannot keep a manifest in the local tier");
        }
        Ok(())
    }

    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest, RegistryError> {
        let manifest = Arc::new(Manifest::parse(&body, content_type)?);
        // A pusher must say what it pushes: in the header, or in the body.
        if content_type
            .and_then(media::normalize_content_type)
            .is_none()
            && !manifest.names_media_type
        {
            return Err(ParseError::from(InvalidManifest::NoMediaType).into());
        }
        let digest = Digest::of(&body);
        if let Reference::Digest(named) = reference {
            if named != &digest {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("the manifest hashes to {digest}, not {named}"),
                )
                .with_detail(serde_json::json!({ "digest": named.to_string() })));
            }
        }
        // What the manifest names: child manifests (true) of an index, else blobs (false).
        let references: Vec<(Digest, bool)> = if manifest.is_index() {
            manifest
                .manifests
                .iter()
                .map(|child| (child.digest.clone(), true))
                .collect()
        } else {
            manifest
                .config_and_layers()?
                .map(|descriptor| (descriptor.digest.clone(), false))
                .collect()
        };
        let referrer = ReferrerRecord::of(&manifest, &digest, body.len() as u64);
        let subject = referrer.as_ref().map(|(subject, _)| subject.clone());
        if let Some(shared) = self.shared() {
            if let Some(digest) = shared
                .first_missing(repo, &references)
                .await
                .map_err(storage_error)?
            {
                return Err(reference_missing(repo, &digest));
            }
            let record = PushedRecord {
                digest: &digest,
                media_type: &manifest.media_type,
                body: body.clone(),
                tag: match reference {
                    Reference::Tag(tag) => Some(tag),
                    Reference::Digest(_) => None,
                },
                referrer: referrer.as_ref().map(|(s, r)| (s, r)),
            };
            self.put_shared_manifest(&shared, repo, &record, &manifest)
                .await?;
            return Ok(PutManifest { digest, subject });
        }
        // Checked and stored under the repository's lock, which gc takes exclusively while
        // it unlinks (see `repo_locks`): a blob found here stays linked until the manifest
        // that needs it is in the repository.
        let held = self.repo_locks.shared(repo).await;
        self.check_references(repo, &references)?;
        // Stored and recorded in the repository in one step: eviction never sees the manifest
        // indexed but not yet linked, and it is durable before the client hears of it. A task
        // of its own, holding the lock to the end, even if the client goes away meanwhile.
        let cache = Arc::clone(&self.cache);
        let (repo, stored_digest) = (repo.clone(), digest.clone());
        let tag = match reference {
            Reference::Tag(tag) => Some(tag.clone()),
            Reference::Digest(_) => None,
        };
        tokio::spawn(async move {
            let _held = held;
            let pushed = PushedManifest {
                repo: &repo,
                digest: &stored_digest,
                media_type: &manifest.media_type,
                size: body.len() as u64,
                tag: tag.as_ref(),
                referrer: referrer.as_ref().map(|(subject, record)| (subject, record)),
            };
            cache
                .put_pushed_manifest(pushed, body.clone(), Arc::clone(&manifest))
                .await
        })
        .await
        .map_err(|e| RegistryError::internal("manifest store failed", e))?
        .map_err(storage_error)?;
        Ok(PutManifest { digest, subject })
    }

    /// Every blob and child manifest a manifest names must be in the repository already.
    fn check_references(
        &self,
        repo: &RepoName,
        references: &[(Digest, bool)],
    ) -> Result<(), RegistryError> {
        let index = &self.storage().index;
        for (digest, is_manifest) in references {
            let present = match is_manifest {
                true => index
                    .repo_manifest(repo, digest)
                    .map_err(storage_error)?
                    .is_some(),
                false => index.repo_has_blob(repo, digest).map_err(storage_error)?,
            };
            if !present {
                return Err(reference_missing(repo, digest));
            }
        }
        Ok(())
    }

    /// The digest a reference names in the repository, and the media type it was pushed as
    /// there (the same bytes may be another repository's manifest under another type).
    pub async fn resolve_reference(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, String), RegistryError> {
        if let Some(shared) = self.shared() {
            let digest = match reference {
                Reference::Tag(tag) => shared.tag(repo, tag).await.map_err(storage_error)?,
                Reference::Digest(digest) => Some(digest.clone()),
            };
            if let Some(digest) = digest {
                if let Some(media_type) = shared
                    .manifest_type(repo, &digest)
                    .await
                    .map_err(storage_error)?
                {
                    return Ok((digest, media_type));
                }
            }
            return Err(manifest_unknown(repo, reference));
        }
        let index = &self.storage().index;
        let digest = match reference {
            Reference::Tag(tag) => index.repo_tag(repo, tag).map_err(storage_error)?,
            Reference::Digest(digest) => Some(digest.clone()),
        };
        let found = match digest {
            Some(digest) => index
                .repo_manifest(repo, &digest)
                .map_err(storage_error)?
                .map(|media_type| (digest, media_type)),
            None => None,
        };
        found.ok_or_else(|| manifest_unknown(repo, reference))
    }

    pub async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Arc<StoredManifest>, RegistryError> {
        let (digest, media_type) = self.resolve_reference(repo, reference).await?;
        let stored = match self.cache.shared() {
            Some(store) => shared::manifest_bytes(&self.cache, store, &digest).await,
            None => self.cache.manifest(&digest).await,
        };
        stored
            .map_err(storage_error)?
            .map(|manifest| manifest.served_as(&media_type))
            .ok_or_else(|| manifest_unknown(repo, reference))
    }

    /// DELETE by digest removes the manifest (and its tags) from the repository; by tag, only
    /// the tag.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        if let Some(shared) = self.shared() {
            let removed = match reference {
                Reference::Tag(tag) => shared.remove_tag(repo, tag).await,
                Reference::Digest(digest) => {
                    // Its referrer record goes too: the subject is in the manifest itself.
                    let subject = shared::manifest_bytes(&self.cache, shared.store, digest)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|m| m.parsed.as_ref()?.subject.clone())
                        .map(|s| s.digest);
                    shared.remove_manifest(repo, digest, subject.as_ref()).await
                }
            }
            .map_err(storage_error)?;
            return match removed {
                true => Ok(()),
                false => Err(manifest_unknown(repo, reference)),
            };
        }
        let index = &self.storage().index;
        let removed = match reference {
            Reference::Tag(tag) => index.remove_repo_tag(repo, tag),
            Reference::Digest(digest) => index.remove_repo_manifest(repo, digest),
        }
        .map_err(storage_error)?;
        if !removed {
            return Err(manifest_unknown(repo, reference));
        }
        index.flush_async().await.map_err(storage_error)?;
        Ok(())
    }
}

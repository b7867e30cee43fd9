//! Manifests of private repositories: validated on PUT (read by the one manifest model, then
//! the digest, and that everything referenced is already in the repository), stored
//! content-addressed like every blob, and indexed by repository, tag and subject (for the
//! referrers API).

use std::sync::Arc;

use bytes::Bytes;

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

fn manifest_unknown(repo: &RepoName, reference: &Reference) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is not in repository {repo}"),
    )
}

impl Projects {
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
        self.check_references(repo, &manifest)?;
        let subject = manifest.subject.as_ref().map(|s| s.digest.clone());
        let referrer = subject.as_ref().map(|subject| {
            let record = ReferrerRecord {
                media_type: manifest.media_type.clone(),
                digest: digest.clone(),
                size: body.len() as u64,
                artifact_type: manifest.artifact_type().map(str::to_owned),
                annotations: manifest.annotations.clone(),
            };
            (subject, record)
        });
        // Stored and recorded in the repository in one step: eviction never sees the manifest
        // indexed but not yet linked, and it is durable before the client hears of it.
        let pushed = PushedManifest {
            repo,
            digest: &digest,
            media_type: &manifest.media_type,
            size: body.len() as u64,
            tag: match reference {
                Reference::Tag(tag) => Some(tag),
                Reference::Digest(_) => None,
            },
            referrer: referrer
                .as_ref()
                .map(|(subject, record)| (*subject, record)),
        };
        self.cache
            .put_pushed_manifest(pushed, body, Arc::clone(&manifest))
            .await
            .map_err(storage_error)?;
        Ok(PutManifest { digest, subject })
    }

    /// Every blob and child manifest a manifest names must be in the repository already.
    fn check_references(&self, repo: &RepoName, manifest: &Manifest) -> Result<(), RegistryError> {
        let index = &self.storage().index;
        let missing = |digest: &Digest| {
            RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!("the manifest references {digest}, which is not in repository {repo}; push it first"),
            )
            .with_detail(serde_json::json!({ "digest": digest.to_string() }))
        };
        if manifest.is_index() {
            for child in &manifest.manifests {
                if index
                    .repo_manifest(repo, &child.digest)
                    .map_err(storage_error)?
                    .is_none()
                {
                    return Err(missing(&child.digest));
                }
            }
            return Ok(());
        }
        for descriptor in manifest.config_and_layers()? {
            let digest = &descriptor.digest;
            if !index.repo_has_blob(repo, digest).map_err(storage_error)? {
                return Err(missing(digest));
            }
        }
        Ok(())
    }

    /// The digest a reference names in the repository.
    pub fn resolve_reference(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Digest, RegistryError> {
        let index = &self.storage().index;
        let digest = match reference {
            Reference::Tag(tag) => index.repo_tag(repo, tag).map_err(storage_error)?,
            Reference::Digest(digest) => index
                .repo_manifest(repo, digest)
                .map_err(storage_error)?
                .map(|_| digest.clone()),
        };
        digest.ok_or_else(|| manifest_unknown(repo, reference))
    }

    pub async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Arc<StoredManifest>, RegistryError> {
        let digest = self.resolve_reference(repo, reference)?;
        // The media type is the repository's own: the same bytes may be another repository's
        // manifest under another type.
        let media_type = self
            .storage()
            .index
            .repo_manifest(repo, &digest)
            .map_err(storage_error)?
            .unwrap_or_default();
        self.cache
            .manifest(&digest)
            .await
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

//! Manifests of private repositories: validated on PUT (size, JSON, media type, digest, and
//! that everything referenced is already in the repository), stored content-addressed like
//! every blob, and indexed by repository, tag and subject (for the referrers API).

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::Projects;
use crate::cache::StoredManifest;
use crate::oci::media;
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::ErrorCode;
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::error::storage_error;
use crate::registry::error::RegistryError;
use crate::storage::index::{PushedManifest, ReferrerRecord};

/// What a PUT stored.
pub struct PutManifest {
    pub digest: Digest,
    /// The manifest's subject, answered as `OCI-Subject`.
    pub subject: Option<Digest>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
}

#[derive(Deserialize)]
struct ManifestShape {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Value>,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, message)
}

fn parse_digest(text: &str) -> Result<Digest, RegistryError> {
    text.parse()
        .map_err(|_| invalid(format!("manifest references an invalid digest {text:?}")))
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
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!(
                    "manifest is {} bytes; the limit is {MAX_MANIFEST_BYTES}",
                    body.len()
                ),
            ));
        }
        let shape: ManifestShape = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
        if shape.schema_version != Some(2) {
            return Err(invalid("only schemaVersion 2 manifests are accepted"));
        }
        let content_type = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase())
            .filter(|ct| !ct.is_empty());
        let media_type = match (content_type, &shape.media_type) {
            (Some(ct), Some(declared)) if &ct != declared => {
                return Err(invalid(format!(
                    "Content-Type {ct} does not match the manifest's mediaType {declared}"
                )))
            }
            (Some(ct), _) => ct,
            (None, Some(declared)) => declared.clone(),
            (None, None) => return Err(invalid("no Content-Type and no mediaType")),
        };
        if !media::SUPPORTED.contains(&media_type.as_str()) {
            return Err(invalid(format!(
                "unsupported manifest media type {media_type}"
            )));
        }
        let is_index = media::is_index(&media_type);
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
        self.check_references(repo, &shape, is_index)?;
        let subject = shape
            .subject
            .as_ref()
            .map(|s| parse_digest(&s.digest))
            .transpose()?;

        let referrer = subject.as_ref().map(|subject| {
            let artifact_type = shape
                .artifact_type
                .clone()
                .or_else(|| shape.config.as_ref().and_then(|c| c.media_type.clone()));
            let record = ReferrerRecord {
                media_type: media_type.clone(),
                digest: digest.to_string(),
                size: body.len() as u64,
                artifact_type,
                annotations: shape.annotations.clone(),
            };
            (subject, record)
        });
        // Stored and recorded in the repository in one step: eviction never sees the manifest
        // indexed but not yet linked, and it is durable before the client hears of it.
        let pushed = PushedManifest {
            repo,
            digest: &digest,
            media_type: &media_type,
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
            .put_pushed_manifest(pushed, body)
            .await
            .map_err(storage_error)?;
        Ok(PutManifest { digest, subject })
    }

    /// Every blob and child manifest a manifest names must be in the repository already.
    fn check_references(
        &self,
        repo: &RepoName,
        shape: &ManifestShape,
        is_index: bool,
    ) -> Result<(), RegistryError> {
        let index = &self.storage().index;
        let missing = |digest: &Digest| {
            RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!("the manifest references {digest}, which is not in repository {repo}; push it first"),
            )
            .with_detail(serde_json::json!({ "digest": digest.to_string() }))
        };
        if is_index {
            for child in shape.manifests.iter().flatten() {
                let digest = parse_digest(&child.digest)?;
                if index
                    .repo_manifest(repo, &digest)
                    .map_err(storage_error)?
                    .is_none()
                {
                    return Err(missing(&digest));
                }
            }
            return Ok(());
        }
        let config = shape
            .config
            .as_ref()
            .ok_or_else(|| invalid("an image manifest needs a config"))?;
        for descriptor in std::iter::once(config).chain(&shape.layers) {
            let digest = parse_digest(&descriptor.digest)?;
            if !index.repo_has_blob(repo, &digest).map_err(storage_error)? {
                return Err(missing(&digest));
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

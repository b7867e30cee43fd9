//! The referrers of a mirrored manifest (OCI distribution 1.1): upstream's referrers API, else
//! the referrers tag schema (tag `sha256-<hex>`, an index kept by the clients that attach
//! artifacts to a registry without the API, as Distribution 2.8).
//!
//! Every step is an ordinary mirror read as the caller: the subject is resolved like a
//! manifest GET by digest (guard, links, confirmation upstream), and the fallback tag like a
//! manifest GET by tag, so it is cached, linked and guarded like other content. Offline, the
//! API cannot be asked: the cached fallback tag answers, else an empty index. When upstream
//! fails instead of answering, a cached fallback tag answers as a stale tag would (within
//! `max_stale`); without one the failure is the answer, never an empty list. A subject this
//! repository does not hold has no referrers: an empty index, as the spec asks of a registry
//! with the API (never a 404, which clients read as "no API").
//!
//! Upstream's answer is filtered here by `artifactType` (upstream is asked unfiltered, so one
//! remembered 404 covers every filter) and only its first page is read.

use bytes::Bytes;
use serde_json::Value;

use super::{storage_error, Mirror};
use crate::oci::media::{self, AcceptList};
use crate::oci::{Digest, ErrorCode, Reference, Tag};
use crate::registry::error::RegistryError;
use crate::registry::listing::json;
use crate::registry::namespace::MirrorRepo;

impl Mirror {
    /// The referrers of `subject` in `target`'s repository, as an OCI image index.
    pub async fn referrers(
        &self,
        target: &MirrorRepo,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, RegistryError> {
        let all = AcceptList::default();
        let descriptors = match self
            .manifest(target, &Reference::Digest(subject.clone()), &all)
            .await
        {
            Ok(_) => match self.upstream_referrers(target, subject).await? {
                Some(descriptors) => descriptors,
                None => self.tagged_referrers(target, subject).await?,
            },
            Err(e) if e.code() == ErrorCode::ManifestUnknown => Vec::new(),
            Err(e) => return Err(e),
        };
        index(descriptors, artifact_type)
    }

    /// Upstream's referrers API; `None` when it has none (a 404), is offline, or cannot answer
    /// while the fallback tag is cached (served then as a cached tag is: within `max_stale`).
    async fn upstream_referrers(
        &self,
        target: &MirrorRepo,
        subject: &Digest,
    ) -> Result<Option<Vec<Value>>, RegistryError> {
        if target.upstream.is_offline() {
            return Ok(None);
        }
        let body = match target
            .upstream
            .get_referrers(&target.repo, subject, &target.identity)
            .await
        {
            Ok(body) => body,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) if e.is_transient() && self.has_fallback_tag(target, subject)? => {
                tracing::warn!(repo = %target.repo, %subject, error = %e, "upstream cannot list referrers; trying the cached referrers tag");
                return Ok(None);
            }
            Err(e) => return Err(self.refused(target, e, ErrorCode::ManifestUnknown).await),
        };
        descriptors(&body).map(Some).map_err(|reason| {
            RegistryError::new(
                ErrorCode::Unavailable,
                format!(
                    "upstream {} answered the referrers of {subject} in {} with {reason}",
                    target.upstream.name(),
                    target.repo
                ),
            )
        })
    }

    /// Whether the cache holds the subject's fallback tag (whether it may be served is for
    /// the ordinary tag read to say).
    fn has_fallback_tag(
        &self,
        target: &MirrorRepo,
        subject: &Digest,
    ) -> Result<bool, RegistryError> {
        let Ok(tag) = fallback_tag(subject).parse::<Tag>() else {
            return Ok(false);
        };
        Ok(self
            .cache
            .tag(target.upstream.name(), &target.repo, &tag)
            .map_err(storage_error)?
            .is_some())
    }

    /// The index under the subject's fallback tag, read like any tag; none is no referrers.
    async fn tagged_referrers(
        &self,
        target: &MirrorRepo,
        subject: &Digest,
    ) -> Result<Vec<Value>, RegistryError> {
        let tag: Tag = fallback_tag(subject)
            .parse()
            .map_err(|e| RegistryError::internal("the referrers tag is not a tag", e))?;
        let reply = match self
            .manifest(target, &Reference::Tag(tag), &AcceptList::default())
            .await
        {
            Ok(reply) => reply,
            Err(e) if e.code() == ErrorCode::ManifestUnknown => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(descriptors(&reply.manifest.body).unwrap_or_else(|reason| {
            tracing::warn!(repo = %target.repo, %subject, reason, "the referrers tag holds no index; no referrers");
            Vec::new()
        }))
    }
}

/// The tag the referrers tag schema keeps a subject's referrers under.
fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.hex())
}

/// The descriptors of an image index; those without a valid digest are dropped.
fn descriptors(body: &[u8]) -> Result<Vec<Value>, &'static str> {
    let Ok(Value::Object(mut index)) = serde_json::from_slice::<Value>(body) else {
        return Err("no JSON object");
    };
    let Some(Value::Array(manifests)) = index.remove("manifests") else {
        return Err("no list of manifests");
    };
    Ok(manifests
        .into_iter()
        .filter(|d| {
            d["digest"]
                .as_str()
                .is_some_and(|digest| digest.parse::<Digest>().is_ok())
        })
        .collect())
}

/// The answer: an OCI image index of the descriptors of `artifact_type` (all when `None`).
fn index(descriptors: Vec<Value>, artifact_type: Option<&str>) -> Result<Bytes, RegistryError> {
    let manifests: Vec<Value> = descriptors
        .into_iter()
        .filter(|d| artifact_type.is_none() || d["artifactType"].as_str() == artifact_type)
        .collect();
    json(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_tag_is_the_digest_with_a_dash() {
        let subject = Digest::of(b"subject");
        let tag = fallback_tag(&subject);
        assert_eq!(tag, format!("sha256-{}", subject.hex()));
        assert!(tag.parse::<Tag>().is_ok());
    }

    #[test]
    fn descriptors_are_read_and_filtered_by_artifact_type() {
        let sig = Digest::of(b"sig").to_string();
        let sbom = Digest::of(b"sbom").to_string();
        let body = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"digest": sig, "artifactType": "application/sig", "size": 1},
                {"digest": sbom, "artifactType": "application/sbom", "size": 2},
                {"digest": "not a digest", "artifactType": "application/sig"},
            ],
        })
        .to_string();
        let all = descriptors(body.as_bytes()).unwrap();
        assert_eq!(all.len(), 2);
        let filtered: Value =
            serde_json::from_slice(&index(all, Some("application/sig")).unwrap()).unwrap();
        assert_eq!(filtered["mediaType"], media::OCI_INDEX);
        assert_eq!(filtered["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(filtered["manifests"][0]["digest"], sig.as_str());
        assert!(descriptors(b"[]").is_err());
        assert!(descriptors(b"{\"manifests\": 3}").is_err());
    }
}

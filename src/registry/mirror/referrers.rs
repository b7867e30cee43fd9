//! The referrers of a mirrored manifest (OCI distribution 1.1): upstream's referrers API, else
//! the referrers tag schema (tag `sha256-<hex>`, an index kept by the clients that attach
//! artifacts to a registry without the API, as Distribution 2.8).
//!
//! Every step is an ordinary mirror read as the caller: the subject is resolved like a
//! manifest GET by digest (guard, links, confirmation upstream), and the fallback tag like a
//! manifest GET by tag, so it is cached, linked and guarded like other content. A subject this
//! repository does not hold has no referrers: an empty index, as the spec asks of a registry
//! with the API (never a 404, which clients read as "no API").
//!
//! Upstream's API is read page by page, following its `Link: <…>; rel="next"` (at most
//! [`MAX_PAGES`] pages, at most [`MAX_REFERRERS`] referrers; beyond either the list is cut and
//! the cut logged and recorded). Each answer is kept in the index (`answers`), so that:
//! - offline, the kept answer is served (any age, as offline tags are), else the cached
//!   fallback tag, else an empty index;
//! - when upstream fails instead of answering, the kept answer is served as a stale tag would
//!   be (within `max_stale` of upstream's last answer), else a cached fallback tag within
//!   `max_stale`; without either the failure is the answer, never an empty list.
//!
//! Both go through the subject's resolution first, so the guard's checks hold offline too: a
//! guarded subject is refused to a caller upstream has not accepted for it.
//!
//! Upstream's answer is filtered here by `artifactType` (upstream is asked unfiltered, so one
//! answer covers every filter, kept or live).

use std::collections::HashSet;

use bytes::Bytes;
use serde_json::Value;

use super::{storage_error, Mirror};
use crate::metrics;
use crate::oci::media::{self, AcceptList};
use crate::oci::{Digest, ErrorCode, Reference, Tag};
use crate::registry::error::RegistryError;
use crate::registry::listing::json;
use crate::registry::namespace::MirrorRepo;
use crate::storage::index::ReferrersAnswer;
use crate::upstream::UpstreamError;

/// Pages of upstream's referrers answer followed at most.
pub(super) const MAX_PAGES: usize = 16;
/// Referrers of one subject kept and served at most (a signed image has a handful).
pub(super) const MAX_REFERRERS: usize = 1000;

/// A subject's referrers, with where they were found.
#[derive(Debug, Default)]
pub(super) struct Listed {
    /// The descriptors, unfiltered.
    pub descriptors: Vec<Value>,
    /// The index under the fallback tag, when the referrers tag schema answered.
    pub tag_index: Option<Digest>,
}

/// Why upstream's API gave no list.
enum Unlisted {
    Upstream(UpstreamError),
    /// It answered with something that is not an image index.
    Unreadable(&'static str),
}

impl Mirror {
    /// The referrers of `subject` in `target`'s repository, as an OCI image index.
    pub async fn referrers(
        &self,
        target: &MirrorRepo,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, RegistryError> {
        let listed = self.list_referrers(target, subject).await?;
        index(listed.descriptors, artifact_type)
    }

    /// Every referrer of `subject` berth can learn of now: upstream's API, a kept answer, or
    /// the fallback tag.
    pub(super) async fn list_referrers(
        &self,
        target: &MirrorRepo,
        subject: &Digest,
    ) -> Result<Listed, RegistryError> {
        let all = AcceptList::default();
        match self
            .manifest(target, &Reference::Digest(subject.clone()), &all)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::ManifestUnknown => return Ok(Listed::default()),
            Err(e) => return Err(e),
        }
        if let Some(descriptors) = self.upstream_referrers(target, subject).await? {
            return Ok(Listed {
                descriptors,
                tag_index: None,
            });
        }
        self.tagged_referrers(target, subject).await
    }

    /// Upstream's referrers API, or its kept answer; `None` when it has no API (a 404), or is
    /// offline or failing with no kept answer to serve (then the fallback tag may answer).
    async fn upstream_referrers(
        &self,
        target: &MirrorRepo,
        subject: &Digest,
    ) -> Result<Option<Vec<Value>>, RegistryError> {
        if target.upstream.is_offline() {
            return Ok(self
                .kept_referrers(target, subject, None)
                .await?
                .map(|kept| kept.descriptors));
        }
        let e = match self.all_pages(target, subject).await {
            Ok(answer) => {
                let descriptors = answer.descriptors.clone();
                self.cache
                    .put_referrers_answer(target.upstream.name(), &target.repo, subject, answer)
                    .await
                    .map_err(storage_error)?;
                return Ok(Some(descriptors));
            }
            Err(Unlisted::Unreadable(reason)) => {
                return Err(RegistryError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "upstream {} answered the referrers of {subject} in {} with {reason}",
                        target.upstream.name(),
                        target.repo
                    ),
                ))
            }
            Err(Unlisted::Upstream(e)) => e,
        };
        if e.is_not_found() {
            return Ok(None);
        }
        if !e.is_transient() {
            return Err(self.refused(target, e, ErrorCode::ManifestUnknown).await);
        }
        let metrics = self.cache.metrics();
        metrics::inc(&metrics.upstream_errors);
        let max_stale = target.upstream.settings().max_stale.as_millis();
        if let Some(kept) = self
            .kept_referrers(target, subject, Some(max_stale))
            .await?
        {
            metrics::inc(&metrics.stale_serves);
            tracing::warn!(repo = %target.repo, %subject, error = %e, "upstream cannot list referrers; serving its last answer");
            return Ok(Some(kept.descriptors));
        }
        if self.has_fallback_tag(target, subject)? {
            tracing::warn!(repo = %target.repo, %subject, error = %e, "upstream cannot list referrers; trying the cached referrers tag");
            return Ok(None);
        }
        Err(self.refused(target, e, ErrorCode::ManifestUnknown).await)
    }

    /// Every page of upstream's answer, merged (a referrer listed twice counts once) and
    /// bounded.
    async fn all_pages(
        &self,
        target: &MirrorRepo,
        subject: &Digest,
    ) -> Result<ReferrersAnswer, Unlisted> {
        let mut merged = Merged::default();
        let mut query = Vec::new();
        for page in 0..MAX_PAGES {
            let answer = target
                .upstream
                .get_referrers(&target.repo, subject, &query, &target.identity)
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                // A page that went away between two requests ends the list there.
                Err(e) if page > 0 && e.is_not_found() => {
                    merged.truncated = true;
                    break;
                }
                Err(e) => return Err(Unlisted::Upstream(e)),
            };
            merged.add(descriptors(&answer.body).map_err(Unlisted::Unreadable)?);
            match answer.next {
                Some(next) if merged.descriptors.len() < MAX_REFERRERS => query = next,
                Some(_) => {
                    merged.truncated = true;
                    break;
                }
                None => break,
            }
            if page + 1 == MAX_PAGES {
                merged.truncated = true;
            }
        }
        if merged.truncated {
            tracing::warn!(
                repo = %target.repo,
                %subject,
                kept = merged.descriptors.len(),
                "upstream lists more referrers than berth follows ({MAX_REFERRERS} referrers, {MAX_PAGES} pages); the rest are left out"
            );
        }
        Ok(ReferrersAnswer {
            descriptors: merged.descriptors,
            truncated: merged.truncated,
            checked_at_ms: self.clock.unix_ms(),
        })
    }

    /// The answer upstream last gave, if it is at most `max_age_ms` old (any age for `None`).
    async fn kept_referrers(
        &self,
        target: &MirrorRepo,
        subject: &Digest,
        max_age_ms: Option<u128>,
    ) -> Result<Option<ReferrersAnswer>, RegistryError> {
        let kept = self
            .cache
            .referrers_answer(target.upstream.name(), &target.repo, subject)
            .await
            .map_err(storage_error)?;
        let now = self.clock.unix_ms();
        Ok(kept.filter(|kept| {
            max_age_ms.is_none_or(|max| u128::from(now.saturating_sub(kept.checked_at_ms)) <= max)
        }))
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
    ) -> Result<Listed, RegistryError> {
        let tag: Tag = fallback_tag(subject)
            .parse()
            .map_err(|e| RegistryError::internal("the referrers tag is not a tag", e))?;
        let reply = match self
            .manifest(target, &Reference::Tag(tag), &AcceptList::default())
            .await
        {
            Ok(reply) => reply,
            Err(e) if e.code() == ErrorCode::ManifestUnknown => return Ok(Listed::default()),
            Err(e) => return Err(e),
        };
        let mut descriptors = descriptors(&reply.manifest.body).unwrap_or_else(|reason| {
            tracing::warn!(repo = %target.repo, %subject, reason, "the referrers tag holds no index; no referrers");
            Vec::new()
        });
        descriptors.truncate(MAX_REFERRERS);
        Ok(Listed {
            descriptors,
            tag_index: Some(reply.manifest.digest.clone()),
        })
    }
}

/// Descriptors gathered over pages: each digest once, at most [`MAX_REFERRERS`].
#[derive(Default)]
struct Merged {
    descriptors: Vec<Value>,
    seen: HashSet<String>,
    truncated: bool,
}

impl Merged {
    fn add(&mut self, page: Vec<Value>) {
        for descriptor in page {
            let digest = descriptor["digest"].as_str().unwrap_or_default().to_owned();
            if !self.seen.insert(digest) {
                continue;
            }
            if self.descriptors.len() == MAX_REFERRERS {
                self.truncated = true;
                return;
            }
            self.descriptors.push(descriptor);
        }
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

    #[test]
    fn pages_merge_each_referrer_once_up_to_the_cap() {
        let descriptor =
            |i: usize| serde_json::json!({"digest": Digest::of(&i.to_be_bytes()).to_string()});
        let mut merged = Merged::default();
        merged.add((0..3).map(descriptor).collect());
        merged.add((2..5).map(descriptor).collect());
        assert_eq!(
            merged.descriptors,
            (0..5).map(descriptor).collect::<Vec<_>>()
        );
        assert!(!merged.truncated);
        merged.add((0..2 * MAX_REFERRERS).map(descriptor).collect());
        assert_eq!(merged.descriptors.len(), MAX_REFERRERS);
        assert!(merged.truncated);
    }
}

//! Private repositories whose store of record is the shared store (`[storage.s3]`): every
//! node reads and writes the same records, so a tag pushed through one node is read through
//! any other at once. Nothing here is answered from node memory: a tag, a repository link and
//! a manifest's membership are asked of the shared store each time; only content-addressed
//! bytes (verified again whenever they are read) come from this node's tier.
//!
//! Records (see `storage::shared` for the whole key layout):
//! `repositories/<repo>/_blobs/<hex>` (body: the blob's size),
//! `repositories/<repo>/_manifests/<hex>` (body: the media type it was pushed as),
//! `repositories/<repo>/_tags/<tag>` (body: the digest),
//! `repositories/<repo>/_referrers/<subject hex>/<hex>` (body: the referrer record, JSON),
//! `catalog/<repo>`.
//! Writes go content first, then the manifest record, the referrer, the tag and the catalog
//! entry: a node dying between two of them leaves at worst an unreferenced manifest.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::try_join_all;

use crate::cache::{Cache, StoredManifest};
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, Manifest, RepoName, Tag};
use crate::storage::index::{ReferrerRecord, RemovedRepository};
use crate::storage::shared::{SharedError, SharedStore};

/// The private projects' records in the shared store.
pub struct SharedRecords<'a> {
    pub store: &'a SharedStore,
}

fn repo_dir(repo: &RepoName) -> String {
    format!("repositories/{repo}")
}
fn link_name(repo: &RepoName, digest: &Digest) -> String {
    format!("{}/_blobs/{}", repo_dir(repo), digest.hex())
}
fn manifest_name(repo: &RepoName, digest: &Digest) -> String {
    format!("{}/_manifests/{}", repo_dir(repo), digest.hex())
}
fn tag_name(repo: &RepoName, tag: &Tag) -> String {
    format!("{}/_tags/{tag}", repo_dir(repo))
}
fn referrers_dir(repo: &RepoName, subject: &Digest) -> String {
    format!("{}/_referrers/{}/", repo_dir(repo), subject.hex())
}
const CATALOG: &str = "catalog/";

fn corrupt(what: String) -> SharedError {
    SharedError::Corrupt(what)
}

fn text(body: &Bytes) -> Option<&str> {
    std::str::from_utf8(body).ok().map(str::trim)
}

impl SharedRecords<'_> {
    /// The size of a blob the repository holds, or `None`.
    pub async fn linked_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, SharedError> {
        let Some(body) = self.store.get(&link_name(repo, digest)).await? else {
            return Ok(None);
        };
        text(&body)
            .and_then(|t| t.parse().ok())
            .map(Some)
            .ok_or_else(|| corrupt(format!("the link of {digest} in {repo} is malformed")))
    }

    pub async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), SharedError> {
        self.store
            .put(&link_name(repo, digest), size.to_string().into())
            .await?;
        self.store
            .put(&format!("{CATALOG}{repo}"), Bytes::new())
            .await
            .map(|_| ())
    }

    /// True when the link was there.
    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, SharedError> {
        self.remove_present(&link_name(repo, digest)).await
    }

    /// Removes an object; true when it was there.
    async fn remove_present(&self, name: &str) -> Result<bool, SharedError> {
        if self.store.size(name).await?.is_none() {
            return Ok(false);
        }
        self.store.delete(name).await?;
        Ok(true)
    }

    /// The media type a manifest of the repository was pushed as, or `None`.
    pub async fn manifest_type(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<String>, SharedError> {
        let body = self.store.get(&manifest_name(repo, digest)).await?;
        Ok(body.and_then(|b| text(&b).map(str::to_owned)))
    }

    pub async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, SharedError> {
        let Some(body) = self.store.get(&tag_name(repo, tag)).await? else {
            return Ok(None);
        };
        text(&body)
            .and_then(|t| t.parse().ok())
            .map(Some)
            .ok_or_else(|| corrupt(format!("tag {tag} of {repo} is malformed")))
    }

    /// Every blob (`false`) and child manifest (`true`) named must already be in the
    /// repository: the first that is not.
    pub async fn first_missing(
        &self,
        repo: &RepoName,
        references: &[(Digest, bool)],
    ) -> Result<Option<Digest>, SharedError> {
        let names: Vec<String> = references
            .iter()
            .map(|(digest, is_manifest)| match is_manifest {
                true => manifest_name(repo, digest),
                false => link_name(repo, digest),
            })
            .collect();
        let present = try_join_all(names.iter().map(|name| self.store.size(name))).await?;
        Ok(references
            .iter()
            .zip(present)
            .find(|(_, size)| size.is_none())
            .map(|((digest, _), _)| digest.clone()))
    }

    /// Stores a validated manifest and records it in the repository.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        pushed: &PushedRecord<'_>,
    ) -> Result<(), SharedError> {
        let digest = pushed.digest;
        self.store
            .put_blob_bytes(digest, pushed.body.clone())
            .await?;
        self.store
            .put(
                &manifest_name(repo, digest),
                pushed.media_type.to_owned().into(),
            )
            .await?;
        if let Some((subject, record)) = pushed.referrer {
            let body = serde_json::to_vec(record).map_err(|e| corrupt(e.to_string()))?;
            self.store
                .put(
                    &format!("{}{}", referrers_dir(repo, subject), digest.hex()),
                    Bytes::from(body),
                )
                .await?;
        }
        if let Some(tag) = pushed.tag {
            self.put_tag(repo, tag, digest).await?;
        }
        self.store
            .put(&format!("{CATALOG}{repo}"), Bytes::new())
            .await
            .map(|_| ())
    }

    /// Points `tag` at a manifest of the repository.
    pub async fn put_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), SharedError> {
        self.store
            .put(&tag_name(repo, tag), digest.to_string().into())
            .await
            .map(|_| ())
    }

    /// True when the tag was there.
    pub async fn remove_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, SharedError> {
        self.remove_present(&tag_name(repo, tag)).await
    }

    /// Removes a manifest from the repository with the tags that name it and its referrer
    /// record (`subject`, when it has one). True when it was there.
    pub async fn remove_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        subject: Option<&Digest>,
    ) -> Result<bool, SharedError> {
        let name = manifest_name(repo, digest);
        if self.store.size(&name).await?.is_none() {
            return Ok(false);
        }
        for tag in self.tags(repo).await? {
            if let Ok(parsed) = tag.parse::<Tag>() {
                if self.tag(repo, &parsed).await?.as_ref() == Some(digest) {
                    self.store.delete(&tag_name(repo, &parsed)).await?;
                }
            }
        }
        if let Some(subject) = subject {
            self.store
                .delete(&format!("{}{}", referrers_dir(repo, subject), digest.hex()))
                .await?;
        }
        self.store.delete(&name).await?;
        Ok(true)
    }

    /// Removes every record of the repository, in the order that never leaves a tag naming a
    /// missing manifest: tags, referrer records, manifests, blob links, then its catalog entry.
    /// `None` when there was nothing. Bytes stay for garbage collection.
    pub async fn remove_repository(
        &self,
        repo: &RepoName,
    ) -> Result<Option<RemovedRepository>, SharedError> {
        let dir = repo_dir(repo);
        let mut removed = RemovedRepository::default();
        for (kind, count) in [
            ("_tags", &mut removed.tags),
            ("_referrers", &mut removed.referrers),
            ("_manifests", &mut removed.manifests),
            ("_blobs", &mut removed.blob_links),
        ] {
            let under = format!("{dir}/{kind}/");
            for listed in self.store.list(&under).await? {
                self.store
                    .delete(&format!("{under}{}", listed.name))
                    .await?;
                *count += 1;
            }
        }
        let listed = self.exists(repo).await?;
        self.store.delete(&format!("{CATALOG}{repo}")).await?;
        Ok((listed || !removed.is_empty()).then_some(removed))
    }

    /// The repository's tags with the digest each names and when it was last pushed (the
    /// tag object's `LastModified`), for retention.
    pub async fn tag_records(
        &self,
        repo: &RepoName,
    ) -> Result<Vec<(Tag, Digest, u64)>, SharedError> {
        let listed = self
            .store
            .list(&format!("{}/_tags/", repo_dir(repo)))
            .await?;
        let tags: Vec<(Tag, u64)> = listed
            .into_iter()
            .filter_map(|l| Some((l.name.parse().ok()?, l.modified_ms)))
            .collect();
        let digests = try_join_all(tags.iter().map(|(tag, _)| self.tag(repo, tag))).await?;
        Ok(tags
            .into_iter()
            .zip(digests)
            .filter_map(|((tag, at), digest)| Some((tag, digest?, at)))
            .collect())
    }

    /// The repository's manifests with the media type each was pushed as and when it was
    /// last pushed, for retention.
    pub async fn manifest_records(
        &self,
        repo: &RepoName,
    ) -> Result<Vec<(Digest, String, u64)>, SharedError> {
        let listed = self
            .store
            .list(&format!("{}/_manifests/", repo_dir(repo)))
            .await?;
        let manifests: Vec<(Digest, u64)> = listed
            .into_iter()
            .filter_map(|l| Some((format!("sha256:{}", l.name).parse().ok()?, l.modified_ms)))
            .collect();
        let types =
            try_join_all(manifests.iter().map(|(d, _)| self.manifest_type(repo, d))).await?;
        Ok(manifests
            .into_iter()
            .zip(types)
            .filter_map(|((digest, at), media_type)| Some((digest, media_type?, at)))
            .collect())
    }

    /// The repository's referrer links, `(subject, referrer)`.
    pub async fn referrer_links(
        &self,
        repo: &RepoName,
    ) -> Result<Vec<(Digest, Digest)>, SharedError> {
        let listed = self
            .store
            .list(&format!("{}/_referrers/", repo_dir(repo)))
            .await?;
        Ok(listed
            .into_iter()
            .filter_map(|l| {
                let (subject, referrer) = l.name.split_once('/')?;
                Some((
                    format!("sha256:{subject}").parse().ok()?,
                    format!("sha256:{referrer}").parse().ok()?,
                ))
            })
            .collect())
    }

    /// The repository's tags, sorted.
    pub async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, SharedError> {
        Ok(self
            .store
            .list(&format!("{}/_tags/", repo_dir(repo)))
            .await?
            .into_iter()
            .map(|listed| listed.name)
            .collect())
    }

    pub async fn exists(&self, repo: &RepoName) -> Result<bool, SharedError> {
        Ok(self
            .store
            .size(&format!("{CATALOG}{repo}"))
            .await?
            .is_some())
    }

    /// Every repository, sorted.
    pub async fn repositories(&self) -> Result<Vec<String>, SharedError> {
        Ok(self
            .store
            .list(CATALOG)
            .await?
            .into_iter()
            .map(|listed| listed.name)
            .collect())
    }

    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerRecord>, SharedError> {
        let dir = referrers_dir(repo, subject);
        let names: Vec<String> = self
            .store
            .list(&dir)
            .await?
            .into_iter()
            .map(|listed| format!("{dir}{}", listed.name))
            .collect();
        let bodies = try_join_all(names.iter().map(|name| self.store.get(name))).await?;
        Ok(bodies
            .into_iter()
            .flatten()
            .filter_map(|body| serde_json::from_slice(&body).ok())
            .collect())
    }
}

/// A validated manifest on its way into the shared store.
pub struct PushedRecord<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub body: Bytes,
    pub tag: Option<&'a Tag>,
    pub referrer: Option<(&'a Digest, &'a ReferrerRecord)>,
}

/// A manifest's bytes: from this node's tier, else from the shared store (verified, then kept
/// in the tier). `None` when neither has bytes that hash to `digest`.
pub async fn manifest_bytes(
    cache: &Arc<Cache>,
    store: &SharedStore,
    digest: &Digest,
) -> Result<Option<Arc<StoredManifest>>, crate::storage::StorageError> {
    if let Some(manifest) = cache.manifest(digest).await? {
        return Ok(Some(manifest));
    }
    let Some(blob) = store.blob(digest, None).await? else {
        return Ok(None);
    };
    if blob.size > MAX_MANIFEST_BYTES as u64 {
        return Ok(None);
    }
    let chunks: Vec<Bytes> = futures_util::TryStreamExt::try_collect(blob.body)
        .await
        .map_err(SharedError::from)?;
    let body = Bytes::from(chunks.concat());
    if Digest::of(&body) != *digest {
        tracing::warn!(%digest, "a manifest in the shared store does not match its digest");
        return Ok(None);
    }
    let parsed = Manifest::parse(&body, None).ok();
    let media_type = parsed
        .as_ref()
        .map(|m| m.media_type.clone())
        .unwrap_or_default();
    let manifest = StoredManifest {
        digest: digest.clone(),
        media_type,
        body,
        parsed: parsed.map(Arc::new),
    };
    Ok(Some(cache.put_manifest(manifest).await?))
}

//! The index trees of private projects (pushed content, never evicted).
//!
//! | tree             | key                                  | value             |
//! |------------------|--------------------------------------|-------------------|
//! | `repo_blobs`     | `sha256:<hex>@<repo>`                | link time (ms, BE)|
//! | `repo_manifests` | `<repo>@sha256:<hex>`                | media type        |
//! | `manifest_repos` | `sha256:<hex>@<repo>`                | empty             |
//! | `repo_tags`      | `<repo>:<tag>`                       | `sha256:<hex>`    |
//! | `referrers`      | `<repo>@<subject>@<manifest>`        | [`ReferrerRecord`]|
//! | `pushed_at`      | `<repo>:<tag>` or `<repo>@sha256:<hex>` | ms, big-endian |
//!
//! `repo_blobs` and `manifest_repos` (the digest-first twin of `repo_manifests`, written in
//! the same transactions) are keyed digest-first, so that "is this digest private anywhere?"
//! (which eviction and gc ask) is two prefix lookups, whatever a client unlinked with a blob
//! DELETE. A pushed blob or manifest gets its index entry and its repository link in one
//! transaction, so there is no moment at which it is indexed but unprotected.
//! Repository names contain no `@` or `:`, tags no `:`, digests no `@`, so every key splits
//! back unambiguously.
//!
//! `pushed_at` records when a tag or a repository's manifest was last pushed, for retention
//! (see [`lifecycle`]); it is written in the PUT's transaction and dropped with the tag or
//! manifest. Entries pushed before it existed have none.

use serde::{Deserialize, Serialize};
use sled::Transactional;

pub mod lifecycle;
mod links;
mod scan;

use self::links::link_value;
pub use self::links::Link;

use super::{
    decode, encode, insert_new_blob, now_ms, transaction_error, BlobRecord, Index, IndexError,
};
use crate::oci::{Digest, Manifest, RepoName, Tag};

pub(super) struct Trees {
    repo_blobs: sled::Tree,
    repo_manifests: sled::Tree,
    /// `repo_manifests` keyed digest-first: which repositories hold a manifest.
    manifest_repos: sled::Tree,
    repo_tags: sled::Tree,
    referrers: sled::Tree,
    /// When a tag or a repository's manifest was last pushed.
    pushed_at: sled::Tree,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> Result<Self, IndexError> {
        Ok(Trees {
            repo_blobs: db.open_tree("repo_blobs")?,
            repo_manifests: db.open_tree("repo_manifests")?,
            manifest_repos: db.open_tree("manifest_repos")?,
            repo_tags: db.open_tree("repo_tags")?,
            referrers: db.open_tree("referrers")?,
            pushed_at: db.open_tree("pushed_at")?,
        })
    }
}

/// What the referrers API lists for one manifest that names a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferrerRecord {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

impl ReferrerRecord {
    /// The subject `manifest` names (stored as `digest`, `size` bytes), with the record the
    /// referrers API lists for it there; `None` when it names no subject.
    pub fn of(manifest: &Manifest, digest: &Digest, size: u64) -> Option<(Digest, ReferrerRecord)> {
        let subject = manifest.subject.as_ref()?.digest.clone();
        let record = ReferrerRecord {
            media_type: manifest.media_type.clone(),
            digest: digest.clone(),
            size,
            artifact_type: manifest.artifact_type().map(str::to_owned),
            annotations: manifest.annotations.clone(),
        };
        Some((subject, record))
    }
}

pub fn repo_blob_key(digest: &Digest, repo: &RepoName) -> Vec<u8> {
    format!("{digest}@{repo}").into_bytes()
}

pub fn repo_manifest_key(repo: &RepoName, digest: &Digest) -> Vec<u8> {
    format!("{repo}@{digest}").into_bytes()
}

/// `repo_manifests`' key turned digest-first, for `manifest_repos`; `None` when it does not
/// parse.
fn manifest_repo_key_of(repo_manifest_key: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(repo_manifest_key).ok()?;
    let (repo, digest) = text.rsplit_once('@')?;
    let (repo, digest): (RepoName, Digest) = (repo.parse().ok()?, digest.parse().ok()?);
    Some(repo_blob_key(&digest, &repo))
}

/// A pushed manifest, with what its PUT records beside it.
pub struct PushedManifest<'a> {
    pub repo: &'a RepoName,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: u64,
    pub tag: Option<&'a Tag>,
    /// The subject it refers to, and its entry in the referrers list.
    pub referrer: Option<(&'a Digest, &'a ReferrerRecord)>,
}

pub fn repo_tag_key(repo: &RepoName, tag: &Tag) -> Vec<u8> {
    format!("{repo}:{tag}").into_bytes()
}

pub fn parse_repo_tag_key(key: &[u8]) -> Option<(RepoName, Tag)> {
    let text = std::str::from_utf8(key).ok()?;
    let (repo, tag) = text.rsplit_once(':')?;
    Some((repo.parse().ok()?, tag.parse().ok()?))
}

fn referrer_prefix(repo: &RepoName, subject: &Digest) -> Vec<u8> {
    format!("{repo}@{subject}@").into_bytes()
}

impl Index {
    /// Makes `digest` part of private repository `repo`.
    pub fn link_repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), IndexError> {
        self.project
            .repo_blobs
            .insert(repo_blob_key(digest, repo), &link_value()[..])?;
        Ok(())
    }

    pub fn unlink_repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, IndexError> {
        Ok(self
            .project
            .repo_blobs
            .remove(repo_blob_key(digest, repo))?
            .is_some())
    }

    pub fn repo_has_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, IndexError> {
        Ok(self
            .project
            .repo_blobs
            .contains_key(repo_blob_key(digest, repo))?)
    }

    /// Whether any private repository holds `digest`, as a blob or as a manifest (private
    /// content is never evicted).
    pub fn is_private(&self, digest: &Digest) -> Result<bool, IndexError> {
        let prefix = format!("{digest}@");
        for tree in [&self.project.repo_blobs, &self.project.manifest_repos] {
            if tree
                .scan_prefix(prefix.as_bytes())
                .next()
                .transpose()?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Indexes a pushed blob (unless it is already) and links it to `repo`, in one
    /// transaction. True when this call indexed it.
    pub fn put_private_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        record: &BlobRecord,
    ) -> Result<bool, IndexError> {
        let link = repo_blob_key(digest, repo);
        let _writes = self.blob_writes();
        (&self.blobs, &self.legacy.blobs, &self.project.repo_blobs)
            .transaction(|(blobs, legacy, repo_blobs)| {
                let new = insert_new_blob(blobs, legacy, digest, record)?;
                repo_blobs.insert(link.as_slice(), &link_value()[..])?;
                Ok(new)
            })
            .map_err(transaction_error)
    }

    /// Indexes a pushed manifest (unless it is already) and records it in its repository,
    /// with its tag and referrer entry, in one transaction. True when this call indexed it.
    pub fn put_private_manifest(
        &self,
        pushed: &PushedManifest<'_>,
        record: &BlobRecord,
    ) -> Result<bool, IndexError> {
        let (repo, digest) = (pushed.repo, pushed.digest);
        let manifest_key = repo_manifest_key(repo, digest);
        let digest_first = repo_blob_key(digest, repo);
        let tag = pushed.tag.map(|tag| repo_tag_key(repo, tag));
        let referrer = pushed.referrer.map(|(subject, record)| {
            let mut key = referrer_prefix(repo, subject);
            key.extend_from_slice(record.digest.to_string().as_bytes());
            (key, encode(record))
        });
        let p = &self.project;
        let now = now_ms().to_be_bytes();
        let _writes = self.blob_writes();
        (
            &self.blobs,
            &self.legacy.blobs,
            &p.repo_manifests,
            &p.manifest_repos,
            &p.repo_blobs,
            &p.repo_tags,
            &p.referrers,
            &p.pushed_at,
        )
            .transaction(
                |(blobs, legacy, manifests, manifest_repos, repo_blobs, tags, referrers, times)| {
                    let new = insert_new_blob(blobs, legacy, digest, record)?;
                    manifests.insert(manifest_key.as_slice(), pushed.media_type.as_bytes())?;
                    times.insert(manifest_key.as_slice(), &now)?;
                    manifest_repos.insert(digest_first.as_slice(), &[] as &[u8])?;
                    // A manifest is also a blob of its repository (an index references it).
                    repo_blobs.insert(digest_first.as_slice(), &link_value()[..])?;
                    if let Some(tag) = &tag {
                        tags.insert(tag.as_slice(), digest.to_string().as_bytes())?;
                        times.insert(tag.as_slice(), &now)?;
                    }
                    if let Some((key, value)) = &referrer {
                        referrers.insert(key.as_slice(), value.as_slice())?;
                    }
                    Ok(new)
                },
            )
            .map_err(transaction_error)
    }

    /// Restores `manifest_repos` from `repo_manifests` (data directories written before it
    /// existed, or any disagreement); returns how many entries it added or dropped. Blocks.
    pub fn repair_manifest_repos(&self) -> Result<usize, IndexError> {
        let p = &self.project;
        let mut fixed = 0;
        for key in p.repo_manifests.iter().keys() {
            let Some(twin) = manifest_repo_key_of(&key?) else {
                continue;
            };
            if p.manifest_repos.insert(twin, &[] as &[u8])?.is_none() {
                fixed += 1;
            }
        }
        for key in p.manifest_repos.iter().keys() {
            let key = key?;
            let text = String::from_utf8_lossy(&key);
            let orphan = match text.split_once('@') {
                Some((digest, repo)) => !p
                    .repo_manifests
                    .contains_key(format!("{repo}@{digest}").as_bytes())?,
                None => true,
            };
            if orphan {
                p.manifest_repos.remove(key)?;
                fixed += 1;
            }
        }
        Ok(fixed)
    }

    pub fn repo_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<String>, IndexError> {
        Ok(self
            .project
            .repo_manifests
            .get(repo_manifest_key(repo, digest))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Removes a manifest from a repository with every tag pointing at it and its referrer
    /// entries; returns false when it was not there.
    pub fn remove_repo_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, IndexError> {
        let p = &self.project;
        let manifest_key = repo_manifest_key(repo, digest);
        let digest_first = repo_blob_key(digest, repo);
        let removed = (&p.repo_manifests, &p.manifest_repos, &p.repo_blobs)
            .transaction(|(manifests, manifest_repos, repo_blobs)| {
                if manifests.remove(manifest_key.as_slice())?.is_none() {
                    return Ok(false);
                }
                manifest_repos.remove(digest_first.as_slice())?;
                repo_blobs.remove(digest_first.as_slice())?;
                Ok(true)
            })
            .map_err(transaction_error)?;
        if !removed {
            return Ok(false);
        }
        p.pushed_at.remove(manifest_key)?;
        let target = digest.to_string();
        for (tag, points_at) in self.repo_tags(repo)? {
            if points_at == target {
                self.remove_repo_tag(repo, &tag)?;
            }
        }
        let suffix = format!("@{digest}");
        let prefix = format!("{repo}@");
        for key in p.referrers.scan_prefix(prefix.as_bytes()).keys() {
            let key = key?;
            if key.ends_with(suffix.as_bytes()) {
                p.referrers.remove(key)?;
            }
        }
        Ok(true)
    }

    pub fn put_repo_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), IndexError> {
        let key = repo_tag_key(repo, tag);
        self.project
            .pushed_at
            .insert(&key, &now_ms().to_be_bytes())?;
        self.project
            .repo_tags
            .insert(key, digest.to_string().as_bytes())?;
        Ok(())
    }

    pub fn repo_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, IndexError> {
        Ok(self
            .project
            .repo_tags
            .get(repo_tag_key(repo, tag))?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
    }

    pub fn remove_repo_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, IndexError> {
        let key = repo_tag_key(repo, tag);
        self.project.pushed_at.remove(&key)?;
        Ok(self.project.repo_tags.remove(key)?.is_some())
    }

    /// A repository's tags with the digests they point at, sorted by tag.
    pub fn repo_tags(&self, repo: &RepoName) -> Result<Vec<(Tag, String)>, IndexError> {
        let prefix = format!("{repo}:");
        let mut tags = Vec::new();
        for item in self.project.repo_tags.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            if let Some((_, tag)) = parse_repo_tag_key(&key) {
                tags.push((tag, String::from_utf8_lossy(&value).into_owned()));
            }
        }
        tags.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(tags)
    }

    /// Every private repository that holds at least one manifest, sorted.
    pub fn repositories(&self) -> Result<Vec<String>, IndexError> {
        let mut repos: Vec<String> = Vec::new();
        for key in self.project.repo_manifests.iter().keys() {
            let key = key?;
            let text = String::from_utf8_lossy(&key);
            if let Some((repo, _)) = text.rsplit_once('@') {
                if repos.last().map(String::as_str) != Some(repo) {
                    repos.push(repo.to_owned());
                }
            }
        }
        // Key order puts `a/b2@…` before `a/b@…` ('2' < '@'): sort by name.
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerRecord>, IndexError> {
        self.project
            .referrers
            .scan_prefix(referrer_prefix(repo, subject))
            .map(|item| {
                let (key, value) = item?;
                decode(&key, &value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

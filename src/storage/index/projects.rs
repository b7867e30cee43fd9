//! The index trees of private projects (pushed content, never evicted).
//!
//! | tree             | key                                  | value             |
//! |------------------|--------------------------------------|-------------------|
//! | `repo_blobs`     | `sha256:<hex>@<repo>`                | empty             |
//! | `repo_manifests` | `<repo>@sha256:<hex>`                | media type        |
//! | `repo_tags`      | `<repo>:<tag>`                       | `sha256:<hex>`    |
//! | `referrers`      | `<repo>@<subject>@<manifest>`        | [`ReferrerRecord`]|
//! | `uploads`        | upload id                            | [`UploadRecord`]  |
//!
//! `repo_blobs` is keyed digest-first so that "is this blob private anywhere?" (which eviction
//! asks) is one prefix scan. Repository names contain no `@` or `:`, tags no `:`, digests no
//! `@`, so every key splits back unambiguously.

use serde::{Deserialize, Serialize};

use super::{decode, encode, text_keyed, Index, IndexError};
use crate::registry::name::{Digest, RepoName, Tag};

pub(super) struct Trees {
    repo_blobs: sled::Tree,
    repo_manifests: sled::Tree,
    repo_tags: sled::Tree,
    referrers: sled::Tree,
    uploads: sled::Tree,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> Result<Self, IndexError> {
        Ok(Trees {
            repo_blobs: db.open_tree("repo_blobs")?,
            repo_manifests: db.open_tree("repo_manifests")?,
            repo_tags: db.open_tree("repo_tags")?,
            referrers: db.open_tree("referrers")?,
            uploads: db.open_tree("uploads")?,
        })
    }
}

/// A blob upload in progress; its bytes are in `uploads/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub repo: String,
    pub started_ms: u64,
}

/// What the referrers API lists for one manifest that names a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferrerRecord {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
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

pub fn repo_blob_key(digest: &Digest, repo: &RepoName) -> Vec<u8> {
    format!("{digest}@{repo}").into_bytes()
}

pub fn repo_manifest_key(repo: &RepoName, digest: &Digest) -> Vec<u8> {
    format!("{repo}@{digest}").into_bytes()
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
            .insert(repo_blob_key(digest, repo), &[] as &[u8])?;
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

    /// Whether any private repository holds `digest` (private content is never evicted).
    pub fn is_private_blob(&self, digest: &Digest) -> Result<bool, IndexError> {
        let prefix = format!("{digest}@");
        Ok(self
            .project
            .repo_blobs
            .scan_prefix(prefix.as_bytes())
            .next()
            .transpose()?
            .is_some())
    }

    pub fn put_repo_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), IndexError> {
        self.project
            .repo_manifests
            .insert(repo_manifest_key(repo, digest), media_type.as_bytes())?;
        self.link_repo_blob(repo, digest)
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
        if self
            .project
            .repo_manifests
            .remove(repo_manifest_key(repo, digest))?
            .is_none()
        {
            return Ok(false);
        }
        self.unlink_repo_blob(repo, digest)?;
        let target = digest.to_string();
        for (tag, points_at) in self.repo_tags(repo)? {
            if points_at == target {
                self.project.repo_tags.remove(repo_tag_key(repo, &tag))?;
            }
        }
        let suffix = format!("@{digest}");
        let prefix = format!("{repo}@");
        for key in self.project.referrers.scan_prefix(prefix.as_bytes()).keys() {
            let key = key?;
            if key.ends_with(suffix.as_bytes()) {
                self.project.referrers.remove(key)?;
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
        self.project
            .repo_tags
            .insert(repo_tag_key(repo, tag), digest.to_string().as_bytes())?;
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
        Ok(self
            .project
            .repo_tags
            .remove(repo_tag_key(repo, tag))?
            .is_some())
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

    pub fn put_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        record: &ReferrerRecord,
    ) -> Result<(), IndexError> {
        let mut key = referrer_prefix(repo, subject);
        key.extend_from_slice(record.digest.as_bytes());
        self.project.referrers.insert(key, encode(record))?;
        Ok(())
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

    pub fn put_upload(&self, id: &str, record: &UploadRecord) -> Result<(), IndexError> {
        self.project.uploads.insert(id.as_bytes(), encode(record))?;
        Ok(())
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>, IndexError> {
        self.project
            .uploads
            .get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    pub fn remove_upload(&self, id: &str) -> Result<(), IndexError> {
        self.project.uploads.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn uploads(&self) -> Result<Vec<(String, UploadRecord)>, IndexError> {
        text_keyed(&self.project.uploads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_trees() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let other: RepoName = "team/app2".parse().unwrap();
        let d = Digest::of(b"m");
        let layer = Digest::of(b"l");
        index.link_repo_blob(&repo, &layer).unwrap();
        assert!(index.repo_has_blob(&repo, &layer).unwrap());
        assert!(!index.repo_has_blob(&other, &layer).unwrap());
        assert!(index.is_private_blob(&layer).unwrap());
        assert!(!index.is_private_blob(&d).unwrap());

        index.put_repo_manifest(&repo, &d, "x/y").unwrap();
        index.put_repo_manifest(&other, &d, "x/y").unwrap();
        let (v1, v2): (Tag, Tag) = ("v1".parse().unwrap(), "v2".parse().unwrap());
        index.put_repo_tag(&repo, &v2, &d).unwrap();
        index.put_repo_tag(&repo, &v1, &d).unwrap();
        let tags: Vec<String> = index
            .repo_tags(&repo)
            .unwrap()
            .into_iter()
            .map(|(t, _)| t.to_string())
            .collect();
        assert_eq!(tags, ["v1", "v2"]);
        assert!(
            index.repo_tags(&other).unwrap().is_empty(),
            "prefix scan leaked into team/app2"
        );
        assert_eq!(index.repositories().unwrap(), ["team/app", "team/app2"]);

        let record = ReferrerRecord {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::of(b"sig").to_string(),
            size: 3,
            artifact_type: Some("application/example".into()),
            annotations: None,
        };
        index.put_referrer(&repo, &d, &record).unwrap();
        assert_eq!(index.referrers(&repo, &d).unwrap(), vec![record]);

        assert!(index.remove_repo_manifest(&repo, &d).unwrap());
        assert!(
            index.repo_tags(&repo).unwrap().is_empty(),
            "tags of a deleted manifest remain"
        );
        assert!(index.repo_manifest(&repo, &d).unwrap().is_none());
        assert!(index.repo_manifest(&other, &d).unwrap().is_some());
        assert!(!index.remove_repo_manifest(&repo, &d).unwrap());
        assert_eq!(
            parse_repo_tag_key(b"team/app:v1").map(|(r, t)| (r.to_string(), t.to_string())),
            Some(("team/app".into(), "v1".into()))
        );
    }
}

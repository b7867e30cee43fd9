//! What retention and repository deletion read and remove: when tags and manifests were
//! pushed, a repository's manifests and referrer links, and removing a whole repository.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::{repo_blob_key, repo_manifest_key, repo_tag_key};
use crate::oci::{Digest, RepoName, Tag};
use crate::storage::index::{transaction_error, Index, IndexError};

/// What removing a repository removed from the index.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedRepository {
    pub tags: usize,
    pub manifests: usize,
    pub blob_links: usize,
    pub referrers: usize,
}

impl RemovedRepository {
    pub fn is_empty(&self) -> bool {
        self.tags + self.manifests + self.blob_links + self.referrers == 0
    }
}

fn millis(value: Option<sled::IVec>) -> Option<u64> {
    let bytes: [u8; 8] = value?.as_ref().try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Whether a `repo_blobs` key, `sha256:<hex>@<repo>`, links into `repo` (the digest has no
/// `@`, so the repository is everything after the first one).
fn links_to(key: &[u8], repo: &RepoName) -> bool {
    std::str::from_utf8(key)
        .ok()
        .and_then(|text| text.split_once('@'))
        .is_some_and(|(_, name)| name == repo.as_str())
}

impl Index {
    /// When `tag` of `repo` was last pushed (ms since the epoch); `None` for a tag pushed
    /// before berth recorded it.
    pub fn tag_pushed_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<u64>, IndexError> {
        Ok(millis(self.project.pushed_at.get(repo_tag_key(repo, tag))?))
    }

    /// When the manifest was last pushed into `repo`; `None` for one pushed before berth
    /// recorded it.
    pub fn manifest_pushed_at(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, IndexError> {
        Ok(millis(
            self.project
                .pushed_at
                .get(repo_manifest_key(repo, digest))?,
        ))
    }

    /// The manifests of one repository with the media type each was pushed as.
    pub fn repo_manifest_list(&self, repo: &RepoName) -> Result<Vec<(Digest, String)>, IndexError> {
        let prefix = format!("{repo}@");
        let mut manifests = Vec::new();
        for item in self.project.repo_manifests.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            let digest = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(|d| d.parse().ok());
            if let Some(digest) = digest {
                manifests.push((digest, String::from_utf8_lossy(&value).into_owned()));
            }
        }
        Ok(manifests)
    }

    /// The referrer links of one repository, `(subject, referrer)`.
    pub fn repo_referrer_links(
        &self,
        repo: &RepoName,
    ) -> Result<Vec<(Digest, Digest)>, IndexError> {
        let prefix = format!("{repo}@");
        let mut links = Vec::new();
        for key in self.project.referrers.scan_prefix(prefix.as_bytes()).keys() {
            let key = key?;
            let link = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(|rest| rest.split_once('@'))
                .and_then(|(s, r)| Some((s.parse().ok()?, r.parse().ok()?)));
            if let Some(link) = link {
                links.push(link);
            }
        }
        Ok(links)
    }

    /// Removes everything recorded of a repository: its tags first (so nothing resolves by
    /// name any more), then its referrer records, its manifests (each with its digest-first
    /// twin, in one transaction), and last its blob links. A crash part-way leaves a
    /// repository with fewer entries, never a tag naming a missing manifest; running it again
    /// finishes. The bytes stay for garbage collection. Blocks (a scan of every blob link).
    pub fn remove_repository(&self, repo: &RepoName) -> Result<RemovedRepository, IndexError> {
        let p = &self.project;
        let mut removed = RemovedRepository::default();
        for (tag, _) in self.repo_tags(repo)? {
            if self.remove_repo_tag(repo, &tag)? {
                removed.tags += 1;
            }
        }
        let prefix = format!("{repo}@");
        for key in p.referrers.scan_prefix(prefix.as_bytes()).keys() {
            if p.referrers.remove(key?)?.is_some() {
                removed.referrers += 1;
            }
        }
        for (digest, _) in self.repo_manifest_list(repo)? {
            let manifest_key = repo_manifest_key(repo, &digest);
            let digest_first = repo_blob_key(&digest, repo);
            let gone = (&p.repo_manifests, &p.manifest_repos, &p.repo_blobs)
                .transaction(|(manifests, manifest_repos, repo_blobs)| {
                    manifest_repos.remove(digest_first.as_slice())?;
                    repo_blobs.remove(digest_first.as_slice())?;
                    Ok(manifests.remove(manifest_key.as_slice())?.is_some())
                })
                .map_err(transaction_error)?;
            if gone {
                removed.manifests += 1;
            }
            p.pushed_at.remove(manifest_key)?;
        }
        for key in p.repo_blobs.iter().keys() {
            let key = key?;
            if links_to(&key, repo) && p.repo_blobs.remove(&key)?.is_some() {
                removed.blob_links += 1;
            }
        }
        Ok(removed)
    }

    /// Whether anything is recorded of `repo` (a tag, a manifest or a blob link). Blocks (a
    /// scan of every blob link when it has no manifest).
    pub fn repository_exists(&self, repo: &RepoName) -> Result<bool, IndexError> {
        let p = &self.project;
        if p.repo_tags
            .scan_prefix(format!("{repo}:").as_bytes())
            .next()
            .is_some()
            || p.repo_manifests
                .scan_prefix(format!("{repo}@").as_bytes())
                .next()
                .is_some()
        {
            return Ok(true);
        }
        for key in p.repo_blobs.iter().keys() {
            if links_to(&key?, repo) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::super::PushedManifest;
    use super::*;
    use crate::storage::index::{BlobRecord, ReferrerRecord};

    #[test]
    fn a_repository_is_removed_whole_and_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let other: RepoName = "team/app2".parse().unwrap();
        let (image, signature, layer) = (Digest::of(b"m"), Digest::of(b"s"), Digest::of(b"l"));
        let v1: Tag = "v1".parse().unwrap();
        let referrer = ReferrerRecord {
            media_type: "x/y".into(),
            digest: signature.clone(),
            size: 1,
            artifact_type: None,
            annotations: None,
        };
        for r in [&repo, &other] {
            index.link_repo_blob(r, &layer).unwrap();
            let pushed = PushedManifest {
                repo: r,
                digest: &image,
                media_type: "x/y",
                size: 1,
                tag: Some(&v1),
                referrer: None,
            };
            index
                .put_private_manifest(&pushed, &BlobRecord::new(1, None))
                .unwrap();
        }
        let signed = PushedManifest {
            repo: &repo,
            digest: &signature,
            media_type: "x/y",
            size: 1,
            tag: None,
            referrer: Some((&image, &referrer)),
        };
        index
            .put_private_manifest(&signed, &BlobRecord::new(1, None))
            .unwrap();
        assert!(index.tag_pushed_at(&repo, &v1).unwrap().is_some());
        assert!(index
            .manifest_pushed_at(&repo, &signature)
            .unwrap()
            .is_some());
        assert_eq!(
            index.repo_referrer_links(&repo).unwrap(),
            vec![(image.clone(), signature.clone())]
        );

        let removed = index.remove_repository(&repo).unwrap();
        assert_eq!(
            removed,
            RemovedRepository {
                tags: 1,
                manifests: 2,
                blob_links: 1,
                referrers: 1
            }
        );
        assert!(!index.repository_exists(&repo).unwrap());
        assert!(index.tag_pushed_at(&repo, &v1).unwrap().is_none());
        assert!(index.repository_exists(&other).unwrap());
        assert!(index.repo_has_blob(&other, &layer).unwrap());
        assert_eq!(index.repo_tag(&other, &v1).unwrap(), Some(image.clone()));
        assert!(index.is_private(&image).unwrap());
        assert!(!index.is_private(&signature).unwrap());
        assert!(index.remove_repository(&repo).unwrap().is_empty());
    }
}

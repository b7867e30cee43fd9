//! Every private project's records in turn, for moving them elsewhere
//! (`berth storage migrate`).

use super::parse_repo_tag_key;
use crate::oci::{Digest, RepoName, Tag};
use crate::storage::index::{Index, IndexError};

impl Index {
    /// Every repository's blob links, `(repo, digest)`. Keys that do not parse are skipped.
    pub fn repo_blob_links(
        &self,
    ) -> impl Iterator<Item = Result<(RepoName, Digest), IndexError>> + '_ {
        self.project.repo_blobs.iter().keys().filter_map(|key| {
            let key = match key {
                Ok(key) => key,
                Err(e) => return Some(Err(e.into())),
            };
            let (digest, repo) = std::str::from_utf8(&key).ok()?.split_once('@')?;
            Some(Ok((repo.parse().ok()?, digest.parse().ok()?)))
        })
    }

    /// Every repository's manifests, `(repo, digest, media type)`. Keys that do not parse
    /// are skipped.
    pub fn repo_manifest_records(
        &self,
    ) -> impl Iterator<Item = Result<(RepoName, Digest, String), IndexError>> + '_ {
        self.project.repo_manifests.iter().filter_map(|item| {
            let (key, value) = match item {
                Ok(item) => item,
                Err(e) => return Some(Err(e.into())),
            };
            let (repo, digest) = std::str::from_utf8(&key).ok()?.rsplit_once('@')?;
            let media_type = String::from_utf8_lossy(&value).into_owned();
            Some(Ok((repo.parse().ok()?, digest.parse().ok()?, media_type)))
        })
    }

    /// Every repository's tags, `(repo, tag, digest)`. Entries that do not parse are skipped.
    pub fn repo_tag_records(
        &self,
    ) -> impl Iterator<Item = Result<(RepoName, Tag, Digest), IndexError>> + '_ {
        self.project.repo_tags.iter().filter_map(|item| {
            let (key, value) = match item {
                Ok(item) => item,
                Err(e) => return Some(Err(e.into())),
            };
            let (repo, tag) = parse_repo_tag_key(&key)?;
            let digest = std::str::from_utf8(&value).ok()?.parse().ok()?;
            Some(Ok((repo, tag, digest)))
        })
    }
}

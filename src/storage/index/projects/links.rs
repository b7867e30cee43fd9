//! When each repository link was made, for garbage collection: a blob linked to a repository
//! within the grace period stays linked, and gc removes a link only if it is still the one it
//! read (a link made again meanwhile, by an upload or a mount, carries a newer time and stays).

use crate::oci::{Digest, RepoName};
use crate::storage::index::{now_ms, Index, IndexError};

/// The value of a `repo_blobs` entry: when it was written (ms since the epoch, big-endian).
pub(super) fn link_value() -> [u8; 8] {
    now_ms().to_be_bytes()
}

/// Links written before link times were recorded have an empty value: as old as can be.
fn linked_ms(value: &[u8]) -> u64 {
    <[u8; 8]>::try_from(value).map_or(0, u64::from_be_bytes)
}

/// One `repo_blobs` entry as gc read it.
#[derive(Debug, Clone)]
pub struct Link {
    pub repo: RepoName,
    pub digest: Digest,
    pub linked_ms: u64,
    value: sled::IVec,
}

impl Index {
    /// Every repository link with the time it was made. Keys that do not parse are skipped.
    pub fn timed_links(&self) -> impl Iterator<Item = Result<Link, IndexError>> + '_ {
        self.project.repo_blobs.iter().filter_map(|item| {
            let (key, value) = match item {
                Ok(item) => item,
                Err(e) => return Some(Err(e.into())),
            };
            let (digest, repo) = std::str::from_utf8(&key).ok()?.split_once('@')?;
            Some(Ok(Link {
                repo: repo.parse().ok()?,
                digest: digest.parse().ok()?,
                linked_ms: linked_ms(&value),
                value,
            }))
        })
    }

    /// The manifests a repository holds, tagged or not.
    pub fn repo_manifest_digests(&self, repo: &RepoName) -> Result<Vec<Digest>, IndexError> {
        let prefix = format!("{repo}@");
        let mut digests = Vec::new();
        for key in self
            .project
            .repo_manifests
            .scan_prefix(prefix.as_bytes())
            .keys()
        {
            let key = key?;
            let digest = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(|d| d.parse().ok());
            digests.extend(digest);
        }
        Ok(digests)
    }

    /// Removes `link` if it is still the entry gc read; false when it is gone or was written
    /// again since.
    pub fn unlink_if_unchanged(&self, link: &Link) -> Result<bool, IndexError> {
        let key = super::repo_blob_key(&link.digest, &link.repo);
        let swapped = self.project.repo_blobs.compare_and_swap(
            key,
            Some(link.value.clone()),
            None as Option<&[u8]>,
        )?;
        Ok(swapped.is_ok())
    }

    /// Dates an existing link back to `linked_ms` (data built for tests and benchmarks).
    pub fn age_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
        linked_ms: u64,
    ) -> Result<(), IndexError> {
        let key = super::repo_blob_key(digest, repo);
        self.project
            .repo_blobs
            .insert(key, &linked_ms.to_be_bytes()[..])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_made_again_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let layer = Digest::of(b"layer");
        let before = now_ms();
        index.link_repo_blob(&repo, &layer).unwrap();
        let read: Vec<Link> = index.timed_links().map(Result::unwrap).collect();
        assert_eq!(read.len(), 1);
        assert!(read[0].linked_ms >= before && read[0].linked_ms <= now_ms());
        // Written again (an upload of the same blob) after gc read it, with a newer time.
        std::thread::sleep(std::time::Duration::from_millis(2));
        index.link_repo_blob(&repo, &layer).unwrap();
        assert!(!index.unlink_if_unchanged(&read[0]).unwrap());
        assert!(index.repo_has_blob(&repo, &layer).unwrap());
        let again: Vec<Link> = index.timed_links().map(Result::unwrap).collect();
        assert!(index.unlink_if_unchanged(&again[0]).unwrap());
        assert!(!index.repo_has_blob(&repo, &layer).unwrap());
        assert!(!index.unlink_if_unchanged(&again[0]).unwrap());
        // A link from before link times: empty value, as old as can be.
        index
            .project
            .repo_blobs
            .insert(super::super::repo_blob_key(&layer, &repo), &[] as &[u8])
            .unwrap();
        let old: Vec<Link> = index.timed_links().map(Result::unwrap).collect();
        assert_eq!(old[0].linked_ms, 0);
        assert_eq!(
            index.repo_manifest_digests(&repo).unwrap(),
            Vec::<Digest>::new()
        );
    }
}

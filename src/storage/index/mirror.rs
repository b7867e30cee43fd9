//! The mirror's trees: cached tag answers (`tags`), which repositories upstream guards
//! (`guarded`), and the ids of mirrored repositories (`repos`) that the digests' buckets link
//! (which mirrored repository holds which digest, see [`super::bucket`]).

use serde::{Deserialize, Serialize};

use super::bucket::{bucket_key, change_bucket};
use super::{decode, encode, transaction_error, Index, IndexError};
use crate::oci::{Digest, RepoName, Tag};

/// Whether upstream serves a repository only with credentials, as far as berth knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarding {
    /// Upstream serves it to berth's default identity (or nobody has asked yet).
    Open,
    /// Upstream failed when asked: treated as guarded until a later check gets an answer.
    Unsure,
    /// Upstream refused the default identity.
    Guarded,
}

/// The `guarded` tree's value for [`Guarding::Unsure`]; an empty value is [`Guarding::Guarded`],
/// as written before unsure marks existed.
pub(super) const UNSURE: &[u8] = b"unsure";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: Digest,
    pub media_type: String,
    /// When upstream last confirmed this tag, in milliseconds since the Unix epoch.
    pub checked_at_ms: u64,
}

pub fn tag_key(upstream: &str, repo: &RepoName, tag: &Tag) -> Vec<u8> {
    format!("{upstream}/{repo}:{tag}").into_bytes()
}

pub fn parse_tag_key(key: &[u8]) -> Option<(String, RepoName, Tag)> {
    let text = std::str::from_utf8(key).ok()?;
    let (upstream, rest) = text.split_once('/')?;
    let (repo, tag) = rest.rsplit_once(':')?;
    Some((upstream.to_owned(), repo.parse().ok()?, tag.parse().ok()?))
}

pub fn link_key(upstream: &str, repo: &RepoName, digest: &Digest) -> Vec<u8> {
    format!("{upstream}/{repo}@{digest}").into_bytes()
}

pub fn parse_link_key(key: &[u8]) -> Option<(String, RepoName, Digest)> {
    let text = std::str::from_utf8(key).ok()?;
    let (upstream, rest) = text.split_once('/')?;
    let (repo, digest) = rest.rsplit_once('@')?;
    Some((
        upstream.to_owned(),
        repo.parse().ok()?,
        digest.parse().ok()?,
    ))
}

impl Index {
    pub fn tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<TagRecord>, IndexError> {
        let key = tag_key(upstream, repo, tag);
        self.tags.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    pub fn put_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
        record: &TagRecord,
    ) -> Result<(), IndexError> {
        self.tags
            .insert(tag_key(upstream, repo, tag), encode(record))?;
        Ok(())
    }

    pub fn remove_tag(&self, upstream: &str, repo: &RepoName, tag: &Tag) -> Result<(), IndexError> {
        self.tags.remove(tag_key(upstream, repo, tag))?;
        Ok(())
    }

    pub fn guarding(&self, key: &str) -> Result<Guarding, IndexError> {
        Ok(match self.guarded.get(key.as_bytes())? {
            None => Guarding::Open,
            Some(value) if value.as_ref() == UNSURE => Guarding::Unsure,
            Some(_) => Guarding::Guarded,
        })
    }

    /// Upstream refused the default identity: guarded, whatever was known before.
    pub fn mark_guarded(&self, key: &str) -> Result<(), IndexError> {
        self.guarded.insert(key.as_bytes(), &[] as &[u8])?;
        Ok(())
    }

    /// Guarded until upstream can be asked; leaves a repository already guarded alone.
    pub fn mark_unsure(&self, key: &str) -> Result<(), IndexError> {
        // A failed swap means some other request marked it first: nothing to do.
        let _ =
            self.guarded
                .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(UNSURE))?;
        Ok(())
    }

    /// Upstream serves an unsure repository to the default identity after all. Only an unsure
    /// mark goes: a refusal recorded meanwhile stands.
    pub fn clear_unsure(&self, key: &str) -> Result<(), IndexError> {
        let _ =
            self.guarded
                .compare_and_swap(key.as_bytes(), Some(UNSURE), None as Option<&[u8]>)?;
        Ok(())
    }

    /// Upstream serves the repository to the default identity again: open, whatever was
    /// known before.
    pub fn mark_open(&self, key: &str) -> Result<(), IndexError> {
        self.guarded.remove(key.as_bytes())?;
        Ok(())
    }

    /// Every cached tag answer: `(upstream, repository, tag, record)`. Keys that do not
    /// parse are skipped.
    pub fn tag_records(&self) -> Result<Vec<(String, RepoName, Tag, TagRecord)>, IndexError> {
        let mut records = Vec::new();
        for item in self.tags.iter() {
            let (key, value) = item?;
            if let Some((upstream, repo, tag)) = parse_tag_key(&key) {
                records.push((upstream, repo, tag, decode(&key, &value)?));
            }
        }
        Ok(records)
    }

    /// The cached tags of one repository.
    pub fn tags_of(&self, upstream: &str, repo: &RepoName) -> Result<Vec<String>, IndexError> {
        let prefix = format!("{upstream}/{repo}:");
        self.tags
            .scan_prefix(prefix.as_bytes())
            .keys()
            .map(|key| {
                let key = key?;
                Ok(String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
            })
            .collect()
    }

    /// The id of `upstream/repo` in the buckets' links, if it has one.
    pub(super) fn repo_id(
        &self,
        upstream: &str,
        repo: &RepoName,
    ) -> Result<Option<u64>, IndexError> {
        Ok(self
            .repos
            .get(repo_name_key(upstream, repo))?
            .and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))))
    }

    /// The id of `upstream/repo`, given one now if it had none (ids are never reused). Ids
    /// come from a counter in `repos` (a CAS, no flush: this runs on async workers).
    pub(super) fn repo_id_or_new(
        &self,
        upstream: &str,
        repo: &RepoName,
    ) -> Result<u64, IndexError> {
        if let Some(id) = self.repo_id(upstream, repo)? {
            return Ok(id);
        }
        let counted = self.repos.update_and_fetch(NEXT_REPO_ID, |last| {
            let last = last.and_then(|v| Some(u64::from_be_bytes(v.try_into().ok()?)));
            Some(last.unwrap_or(0).wrapping_add(1).to_be_bytes().to_vec())
        })?;
        let id = counted
            .and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?)))
            .unwrap_or(0);
        let key = repo_name_key(upstream, repo);
        match self.repos.compare_and_swap(
            &key,
            None as Option<&[u8]>,
            Some(&id.to_be_bytes()[..]),
        )? {
            Ok(()) => Ok(id),
            // Another link named it first: its id stands.
            Err(taken) => Ok(taken
                .current
                .and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?)))
                .unwrap_or(id)),
        }
    }

    /// Records that `upstream/repo` holds `digest`; `media_type` is a manifest's, empty for a
    /// blob. A later link of the same digest replaces the media type.
    pub fn link(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), IndexError> {
        use sled::Transactional;
        let id = self.repo_id_or_new(upstream, repo)?;
        let raw = digest.sha256_bytes();
        let legacy_key = link_key(upstream, repo, digest);
        (&self.blobs, &self.legacy.links)
            .transaction(|(digests, legacy)| {
                change_bucket(digests, &bucket_key(&raw), |bucket| {
                    bucket.entry(&raw).set_link(id, media_type)
                })?;
                legacy.remove(legacy_key.as_slice())?;
                Ok(())
            })
            .map_err(transaction_error)
    }

    /// `Some(media type)` (empty for a blob) when `upstream/repo` holds `digest`.
    pub fn linked(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<String>, IndexError> {
        if let Some(id) = self.repo_id(upstream, repo)? {
            let linked = self.with_entry(digest, |entry| entry?.link(id).map(str::to_owned))?;
            if linked.is_some() {
                return Ok(linked);
            }
        }
        self.legacy_link(&link_key(upstream, repo, digest))
    }
}

/// The key of the last id given in `repos`: no repository's (those hold a `/`).
const NEXT_REPO_ID: &[u8] = b"next";

fn repo_name_key(upstream: &str, repo: &RepoName) -> Vec<u8> {
    format!("{upstream}/{repo}").into_bytes()
}

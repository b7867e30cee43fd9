//! The metadata index, in sled. One struct owns every tree; each tree's key encoding is
//! written out below, with an encoder and a parser beside it.
//!
//! | tree    | key                                   | value          |
//! |---------|---------------------------------------|----------------|
//! | `blobs` | `sha256:<hex>`                        | [`BlobRecord`] |
//! | `tags`  | `<upstream>/<repo>:<tag>`             | [`TagRecord`]  |
//! | `links` | `<upstream>/<repo>@sha256:<hex>`      | empty          |
//!
//! Upstream names contain no `/`, repository names no `:` or `@`, tags no `:`, so each key
//! splits back unambiguously. Values are JSON, so records can gain optional fields.
//! An entry in `blobs` exists only for a verified file in the blob store; `links` records which
//! repository a blob was fetched through.

use serde::{Deserialize, Serialize};

use crate::registry::name::{Digest, RepoName, Tag};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database: {0}")]
    Db(#[from] sled::Error),
    #[error("index record {key:?} is corrupt: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    /// Set for manifests, whose media type must be answered as `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: String,
    pub media_type: String,
    /// When upstream last confirmed this tag, in milliseconds since the Unix epoch.
    pub checked_at_ms: u64,
}

pub struct Index {
    db: sled::Db,
    blobs: sled::Tree,
    tags: sled::Tree,
    links: sled::Tree,
}

pub fn blob_key(digest: &Digest) -> Vec<u8> {
    digest.to_string().into_bytes()
}

pub fn parse_blob_key(key: &[u8]) -> Option<Digest> {
    std::str::from_utf8(key).ok()?.parse().ok()
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

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, IndexError> {
    serde_json::from_slice(value).map_err(|source| IndexError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain records cannot fail; an empty value would read back as corrupt.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Index {
    pub fn open(path: &std::path::Path) -> Result<Self, IndexError> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(500))
            .open()?;
        Ok(Index {
            blobs: db.open_tree("blobs")?,
            tags: db.open_tree("tags")?,
            links: db.open_tree("links")?,
            db,
        })
    }

    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, IndexError> {
        let key = blob_key(digest);
        self.blobs.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    pub fn put_blob(&self, digest: &Digest, record: &BlobRecord) -> Result<(), IndexError> {
        self.blobs.insert(blob_key(digest), encode(record))?;
        Ok(())
    }

    pub fn remove_blob(&self, digest: &Digest) -> Result<(), IndexError> {
        self.blobs.remove(blob_key(digest))?;
        Ok(())
    }

    /// Every indexed blob. Entries whose key does not parse are skipped.
    pub fn blobs(&self) -> impl Iterator<Item = Result<(Digest, BlobRecord), IndexError>> + '_ {
        self.blobs.iter().filter_map(|item| match item {
            Err(e) => Some(Err(e.into())),
            Ok((key, value)) => {
                let digest = parse_blob_key(&key)?;
                Some(decode(&key, &value).map(|record| (digest, record)))
            }
        })
    }

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

    pub fn link(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> Result<(), IndexError> {
        self.links
            .insert(link_key(upstream, repo, digest), &[] as &[u8])?;
        Ok(())
    }

    pub fn is_linked(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, IndexError> {
        Ok(self.links.contains_key(link_key(upstream, repo, digest))?)
    }

    /// Writes everything to disk now (sled otherwise flushes on its own timer). Blocks.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }

    pub async fn flush_async(&self) -> Result<(), IndexError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> Digest {
        Digest::of(&[byte])
    }

    #[test]
    fn keys_round_trip() {
        let repo: RepoName = "library/my.app".parse().unwrap();
        let tag: Tag = "v1.2".parse().unwrap();
        let d = digest(1);
        assert_eq!(
            tag_key("docker.io", &repo, &tag),
            b"docker.io/library/my.app:v1.2".to_vec()
        );
        assert_eq!(
            parse_tag_key(&tag_key("127.0.0.1:5000", &repo, &tag)),
            Some(("127.0.0.1:5000".into(), repo.clone(), tag.clone()))
        );
        assert_eq!(
            parse_link_key(&link_key("ghcr.io", &repo, &d)),
            Some(("ghcr.io".into(), repo, d.clone()))
        );
        assert_eq!(parse_blob_key(&blob_key(&d)), Some(d));
        assert_eq!(parse_blob_key(b"sha256:nothex"), None);
        assert_eq!(parse_tag_key(b"no-slash"), None);
    }

    #[test]
    fn records_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "library/x".parse().unwrap();
        let tag: Tag = "latest".parse().unwrap();
        let d = digest(7);
        {
            let index = Index::open(dir.path()).unwrap();
            index
                .put_blob(
                    &d,
                    &BlobRecord {
                        size: 3,
                        media_type: None,
                    },
                )
                .unwrap();
            let record = TagRecord {
                digest: d.to_string(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                checked_at_ms: 42,
            };
            index.put_tag("docker.io", &repo, &tag, &record).unwrap();
            index.link("docker.io", &repo, &d).unwrap();
            index.flush().unwrap();
        }
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.blob(&d).unwrap().unwrap().size, 3);
        assert_eq!(
            index
                .tag("docker.io", &repo, &tag)
                .unwrap()
                .unwrap()
                .checked_at_ms,
            42
        );
        assert!(index.is_linked("docker.io", &repo, &d).unwrap());
        assert!(!index.is_linked("ghcr.io", &repo, &d).unwrap());
        let all: Vec<_> = index.blobs().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 1);
        index.remove_blob(&d).unwrap();
        assert!(index.blob(&d).unwrap().is_none());
    }
}

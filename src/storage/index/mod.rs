//! The metadata index, in sled. One struct owns every tree; each tree's key encoding is
//! written out below, with an encoder and a parser beside it.
//!
//! | tree    | key                                   | value          |
//! |---------|---------------------------------------|----------------|
//! | `blobs` | `sha256:<hex>`                        | [`BlobRecord`] |
//! | `tags`  | `<upstream>/<repo>:<tag>`             | [`TagRecord`]  |
//! | `links` | `<upstream>/<repo>@sha256:<hex>`      | a manifest's media type, or empty |
//! | `access`| 8-byte big-endian ms timestamp ++ `sha256:<hex>` | empty |
//! | `guarded` | `<upstream>/<repo>`                 | empty, or `unsure` ([`Guarding`]) |
//!
//! Private projects keep their own trees, described in [`projects`]; pinned images theirs, in
//! [`pins`].
//!
//! Upstream names contain no `/`, repository names no `:` or `@`, tags no `:`, so each key
//! splits back unambiguously. Values are JSON, so records can gain optional fields.
//! An entry in `blobs` exists only for a verified file in the blob store; `links` records which
//! mirrored repository may hold a digest (fetched through it, or confirmed by its upstream), and
//! for a manifest the media type that repository serves it with. `access` is the inverse of each blob's
//! `last_access_ms`, so that a scan in key order visits blobs least recently used first; the
//! two trees change together, in one transaction.

mod pins;
mod projects;

pub use self::pins::PinRecord;
pub use self::projects::{PushedManifest, ReferrerRecord, UploadRecord};

use serde::{Deserialize, Serialize};

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
const UNSURE: &[u8] = b"unsure";

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
    /// When the blob was stored or last served, in ms since the Unix epoch (LRU order).
    #[serde(default)]
    pub last_access_ms: u64,
}

impl BlobRecord {
    /// A record for a blob stored now.
    pub fn new(size: u64, media_type: Option<String>) -> Self {
        BlobRecord {
            size,
            media_type,
            last_access_ms: now_ms(),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const INDEX_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// Served blobs are re-stamped at most this often, to keep hits from writing the index.
const TOUCH_GRANULARITY_MS: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: Digest,
    pub media_type: String,
    /// When upstream last confirmed this tag, in milliseconds since the Unix epoch.
    pub checked_at_ms: u64,
}

pub struct Index {
    db: sled::Db,
    blobs: sled::Tree,
    tags: sled::Tree,
    links: sled::Tree,
    access: sled::Tree,
    /// `upstream/repo` of mirrored repositories upstream serves only with credentials.
    guarded: sled::Tree,
    /// Pinned images and the digests each holds: see [`pins`].
    pins: sled::Tree,
    /// Private projects' trees: see [`projects`].
    project: projects::Trees,
}

pub fn blob_key(digest: &Digest) -> Vec<u8> {
    digest.to_string().into_bytes()
}

pub fn parse_blob_key(key: &[u8]) -> Option<Digest> {
    std::str::from_utf8(key).ok()?.parse().ok()
}

pub fn access_key(last_access_ms: u64, digest: &Digest) -> Vec<u8> {
    let mut key = last_access_ms.to_be_bytes().to_vec();
    key.extend_from_slice(&blob_key(digest));
    key
}

pub fn parse_access_key(key: &[u8]) -> Option<(u64, Digest)> {
    let (stamp, digest) = key.split_at_checked(8)?;
    Some((
        u64::from_be_bytes(stamp.try_into().ok()?),
        parse_blob_key(digest)?,
    ))
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

/// Inside a transaction: indexes a blob unless it is already; true when this call did.
fn insert_new_blob(
    blobs: &sled::transaction::TransactionalTree,
    access: &sled::transaction::TransactionalTree,
    digest: &Digest,
    record: &BlobRecord,
) -> sled::transaction::ConflictableTransactionResult<bool, sled::Error> {
    let key = blob_key(digest);
    if blobs.get(&key)?.is_some() {
        return Ok(false);
    }
    blobs.insert(key, encode(record))?;
    access.insert(access_key(record.last_access_ms, digest), &[] as &[u8])?;
    Ok(true)
}

pub(crate) fn transaction_error(e: sled::transaction::TransactionError) -> IndexError {
    match e {
        sled::transaction::TransactionError::Storage(e)
        | sled::transaction::TransactionError::Abort(e) => IndexError::Db(e),
    }
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    key: &[u8],
    value: &[u8],
) -> Result<T, IndexError> {
    serde_json::from_slice(value).map_err(|source| IndexError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// Every record of a tree whose keys are text, with its key.
pub(crate) fn text_keyed<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
) -> Result<Vec<(String, T)>, IndexError> {
    tree.iter()
        .map(|item| {
            let (key, value) = item?;
            Ok((
                String::from_utf8_lossy(&key).into_owned(),
                decode(&key, &value)?,
            ))
        })
        .collect()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain records cannot fail; an empty value would read back as corrupt.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Index {
    pub fn open(path: &std::path::Path) -> Result<Self, IndexError> {
        let db = sled::Config::new()
            .path(path)
            // sled's default page cache is 1 GiB; the index is small and its hot part is in
            // moka already.
            .cache_capacity(INDEX_CACHE_BYTES)
            .flush_every_ms(Some(500))
            .open()?;
        Ok(Index {
            blobs: db.open_tree("blobs")?,
            tags: db.open_tree("tags")?,
            links: db.open_tree("links")?,
            access: db.open_tree("access")?,
            guarded: db.open_tree("guarded")?,
            pins: db.open_tree("pins")?,
            project: projects::Trees::open(&db)?,
            db,
        })
    }

    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, IndexError> {
        let key = blob_key(digest);
        self.blobs.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// Inserts or replaces a blob's record, moving its `access` entry along.
    pub fn put_blob(&self, digest: &Digest, record: &BlobRecord) -> Result<(), IndexError> {
        use sled::Transactional;
        let key = blob_key(digest);
        let value = encode(record);
        (&self.blobs, &self.access)
            .transaction(|(blobs, access)| {
                if let Some(old) = blobs.insert(key.as_slice(), value.as_slice())? {
                    if let Ok(old) = serde_json::from_slice::<BlobRecord>(&old) {
                        access.remove(access_key(old.last_access_ms, digest))?;
                    }
                }
                access.insert(access_key(record.last_access_ms, digest), &[] as &[u8])?;
                Ok(())
            })
            .map_err(transaction_error)
    }

    /// Indexes a blob unless it is already: true when this call did, so that only the one
    /// store that added a digest counts its bytes.
    pub fn put_new_blob(&self, digest: &Digest, record: &BlobRecord) -> Result<bool, IndexError> {
        use sled::Transactional;
        (&self.blobs, &self.access)
            .transaction(|(blobs, access)| insert_new_blob(blobs, access, digest, record))
            .map_err(transaction_error)
    }

    /// Removes a blob's record and its `access` entry; returns the record that was there.
    pub fn remove_blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, IndexError> {
        use sled::Transactional;
        let key = blob_key(digest);
        (&self.blobs, &self.access)
            .transaction(|(blobs, access)| {
                let old = blobs.remove(key.as_slice())?;
                let old = old.and_then(|v| serde_json::from_slice::<BlobRecord>(&v).ok());
                if let Some(old) = &old {
                    access.remove(access_key(old.last_access_ms, digest))?;
                }
                Ok(old)
            })
            .map_err(transaction_error)
    }

    /// Marks a blob as just used (coarsely: at most once per second).
    /// `record` is the blob's record as just read, so a hit reads the index once.
    pub fn touch(&self, digest: &Digest, mut record: BlobRecord) -> Result<(), IndexError> {
        let now = now_ms();
        if record.last_access_ms + TOUCH_GRANULARITY_MS > now {
            return Ok(());
        }
        record.last_access_ms = now;
        self.put_blob(digest, &record)
    }

    /// Blobs from least to most recently used.
    pub fn least_recently_used(&self) -> impl Iterator<Item = Result<Digest, IndexError>> + '_ {
        self.access.iter().keys().filter_map(|key| match key {
            Err(e) => Some(Err(e.into())),
            Ok(key) => parse_access_key(&key).map(|(_, digest)| Ok(digest)),
        })
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

    /// Records that `upstream/repo` holds `digest`; `media_type` is a manifest's, empty for a
    /// blob. A later link of the same digest replaces the media type.
    pub fn link(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), IndexError> {
        self.links
            .insert(link_key(upstream, repo, digest), media_type.as_bytes())?;
        Ok(())
    }

    /// `Some(media type)` (empty for a blob) when `upstream/repo` holds `digest`.
    pub fn linked(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<String>, IndexError> {
        Ok(self
            .links
            .get(link_key(upstream, repo, digest))?
            .map(|value| String::from_utf8_lossy(&value).into_owned()))
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
    fn an_unsure_mark_never_overrides_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let (open, flaky, refused) = ("docker.io/a", "docker.io/b", "docker.io/c");
        assert_eq!(index.guarding(open).unwrap(), Guarding::Open);

        index.mark_unsure(flaky).unwrap();
        assert_eq!(index.guarding(flaky).unwrap(), Guarding::Unsure);
        index.clear_unsure(flaky).unwrap();
        assert_eq!(index.guarding(flaky).unwrap(), Guarding::Open);

        // A refusal replaces an unsure mark; neither unsure call undoes it.
        index.mark_unsure(refused).unwrap();
        index.mark_guarded(refused).unwrap();
        index.mark_unsure(refused).unwrap();
        index.clear_unsure(refused).unwrap();
        assert_eq!(index.guarding(refused).unwrap(), Guarding::Guarded);
        // Marks written before unsure existed (an empty value) read as guarded.
        assert_eq!(
            index.guarded.get(refused.as_bytes()).unwrap().as_deref(),
            Some(&[] as &[u8])
        );
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
    fn access_order_follows_puts_and_touches() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let (a, b, c) = (digest(1), digest(2), digest(3));
        for (d, stamp) in [(&a, 30), (&b, 10), (&c, 20)] {
            let mut record = BlobRecord::new(1, None);
            record.last_access_ms = stamp;
            index.put_blob(d, &record).unwrap();
        }
        let order = |index: &Index| -> Vec<Digest> {
            index
                .least_recently_used()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(order(&index), vec![b.clone(), c.clone(), a.clone()]);
        index.touch(&b, index.blob(&b).unwrap().unwrap()).unwrap();
        assert_eq!(order(&index), vec![c.clone(), a.clone(), b.clone()]);
        assert_eq!(index.remove_blob(&a).unwrap().map(|r| r.size), Some(1));
        assert_eq!(order(&index), vec![c.clone(), b.clone()]);
        assert_eq!(index.remove_blob(&a).unwrap(), None);
        assert_eq!(parse_access_key(&access_key(7, &c)), Some((7, c)));
    }

    #[test]
    fn records_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "library/x".parse().unwrap();
        let tag: Tag = "latest".parse().unwrap();
        let d = digest(7);
        {
            let index = Index::open(dir.path()).unwrap();
            index.put_blob(&d, &BlobRecord::new(3, None)).unwrap();
            let record = TagRecord {
                digest: d.clone(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                checked_at_ms: 42,
            };
            index.put_tag("docker.io", &repo, &tag, &record).unwrap();
            index.link("docker.io", &repo, &d, "").unwrap();
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
        assert_eq!(
            index.linked("docker.io", &repo, &d).unwrap().as_deref(),
            Some("")
        );
        assert_eq!(index.linked("ghcr.io", &repo, &d).unwrap(), None);
        index
            .link(
                "docker.io",
                &repo,
                &d,
                "application/vnd.oci.image.manifest.v1+json",
            )
            .unwrap();
        assert_eq!(
            index.linked("docker.io", &repo, &d).unwrap().as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        let all: Vec<_> = index.blobs().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 1);
        index.remove_blob(&d).unwrap();
        assert!(index.blob(&d).unwrap().is_none());
    }

    /// Tag records written when the digest was a plain string still read back.
    #[test]
    fn tag_records_keep_their_stored_form() {
        let d = digest(7);
        let old = format!(
            r#"{{"digest":"{d}","media_type":"application/vnd.oci.image.index.v1+json","checked_at_ms":42}}"#
        );
        let record: TagRecord = decode(b"docker.io/library/x:latest", old.as_bytes()).unwrap();
        assert_eq!(record.digest, d);
        assert_eq!(record.checked_at_ms, 42);
        assert_eq!(encode(&record), old.as_bytes());
        let bad = old.replace(&d.to_string(), "sha256:nothex");
        assert!(matches!(
            decode::<TagRecord>(b"k", bad.as_bytes()),
            Err(IndexError::Corrupt { .. })
        ));
    }
}

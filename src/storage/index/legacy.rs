//! The index's layout before buckets: `blobs` keyed `sha256:<hex>` with JSON records, `access`
//! (the LRU order, and the running totals), `links` keyed `<upstream>/<repo>@sha256:<hex>`.
//! Three sled entries per blob, each a `page-table` entry in memory once sled holds 16 or so.
//!
//! An index written so opens at once and serves as it is. Reads fall back to the legacy trees;
//! every write of a digest moves its legacy record into its bucket in the same transaction;
//! and [`Index::migrate_legacy`] moves the rest in the background after serving begins, a
//! chunk at a time, then empties the legacy trees. No start waits for it.

use sled::transaction::{ConflictableTransactionResult, TransactionalTree};
use sled::Transactional;

use super::blobs::{BlobRecord, TOTALS_KEY};
use super::bucket::{bucket_key, change_bucket};
use super::kinds::{is_present, KINDS_KEY};
use super::mirror::parse_link_key;
use super::{decode, transaction_error, Index, IndexError};
use crate::oci::Digest;

pub(super) struct Legacy {
    pub blobs: sled::Tree,
    pub access: sled::Tree,
    pub links: sled::Tree,
}

impl Legacy {
    pub fn open(db: &sled::Db) -> Result<Self, IndexError> {
        Ok(Legacy {
            blobs: db.open_tree("blobs")?,
            access: db.open_tree("access")?,
            links: db.open_tree("links")?,
        })
    }

    fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.links.is_empty() && self.access.is_empty()
    }
}

pub(super) fn legacy_blob_key(digest: &Digest) -> Vec<u8> {
    digest.to_string().into_bytes()
}

/// Inside a transaction: removes a digest's legacy record and returns it (`None` when there
/// is none, or it does not parse: then it counted as no blob, and still goes).
pub(super) fn take_legacy_blob(
    legacy: &TransactionalTree,
    digest: &Digest,
) -> ConflictableTransactionResult<Option<BlobRecord>, sled::Error> {
    Ok(legacy
        .remove(legacy_blob_key(digest))?
        .and_then(|value| serde_json::from_slice(&value).ok()))
}

/// What [`Index::migrate_legacy`] moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub blobs: u64,
    pub links: u64,
}

impl Index {
    /// Whether legacy records are left to move.
    pub fn has_legacy(&self) -> bool {
        !self.legacy.is_empty()
    }

    pub(super) fn legacy_blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, IndexError> {
        let key = legacy_blob_key(digest);
        self.legacy
            .blobs
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    /// The legacy blob records, in key order (records that do not parse are skipped).
    pub(super) fn legacy_blobs(
        &self,
    ) -> impl Iterator<Item = Result<(Digest, BlobRecord), IndexError>> + '_ {
        self.legacy.blobs.iter().filter_map(|item| match item {
            Err(e) => Some(Err(e.into())),
            Ok((key, value)) => {
                let digest = std::str::from_utf8(&key).ok()?.parse().ok()?;
                let record = serde_json::from_slice(&value).ok()?;
                Some(Ok((digest, record)))
            }
        })
    }

    pub(super) fn legacy_link(&self, key: &[u8]) -> Result<Option<String>, IndexError> {
        Ok(self
            .legacy
            .links
            .get(key)?
            .map(|value| String::from_utf8_lossy(&value).into_owned()))
    }

    /// On open, for an index without totals of its own: takes the legacy layout's running
    /// totals (and its per-kind totals, when counted). False when it has none either.
    pub(super) fn carry_legacy_totals(&self) -> Result<bool, IndexError> {
        let Some(totals) = self.legacy.access.get(TOTALS_KEY)? else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        batch.insert(TOTALS_KEY, totals);
        if let Some(kinds) = self.legacy.access.get(KINDS_KEY)? {
            if is_present(&kinds) {
                batch.insert(KINDS_KEY, kinds);
            }
        }
        self.blobs.apply_batch(batch)?;
        Ok(true)
    }

    /// Moves every legacy record into its bucket, `chunk` at a time, calling `pace` between
    /// chunks, then empties the legacy trees. Safe while requests are served (each chunk is
    /// one transaction, blob moves under the lock every change to blobs holds) and after a
    /// crash part way (what is moved is gone from the legacy trees). Blocks.
    pub fn migrate_legacy(
        &self,
        chunk: usize,
        mut pace: impl FnMut(),
    ) -> Result<Migrated, IndexError> {
        let mut done = Migrated::default();
        loop {
            let writes = self.blob_writes();
            let keys = first_keys(&self.legacy.blobs, chunk)?;
            if keys.is_empty() {
                break;
            }
            done.blobs += (&self.blobs, &self.legacy.blobs)
                .transaction(|(digests, legacy)| {
                    let mut moved = 0;
                    for key in &keys {
                        let Some(value) = legacy.remove(key.as_slice())? else {
                            continue;
                        };
                        let digest = std::str::from_utf8(key).ok().and_then(|k| k.parse().ok());
                        let record = serde_json::from_slice::<BlobRecord>(&value).ok();
                        // A key or record that does not parse was no blob: it just goes.
                        let (Some(digest), Some(record)) = (digest, record) else {
                            continue;
                        };
                        let raw = Digest::sha256_bytes(&digest);
                        change_bucket(digests, &bucket_key(&raw), |bucket| {
                            bucket.entry(&raw).blob.get_or_insert(record);
                        })?;
                        moved += 1;
                    }
                    Ok(moved)
                })
                .map_err(transaction_error)?;
            drop(writes);
            pace();
        }
        loop {
            let keys = first_keys(&self.legacy.links, chunk)?;
            if keys.is_empty() {
                break;
            }
            let mut moves = Vec::with_capacity(keys.len());
            for key in keys {
                let link = match parse_link_key(&key) {
                    Some((upstream, repo, digest)) => {
                        Some((self.repo_id_or_new(&upstream, &repo)?, digest))
                    }
                    None => None,
                };
                moves.push((key, link));
            }
            done.links += (&self.blobs, &self.legacy.links)
                .transaction(|(digests, legacy)| {
                    let mut moved = 0;
                    for (key, link) in &moves {
                        let Some(media_type) = legacy.remove(key.as_slice())? else {
                            continue;
                        };
                        // A key that does not parse was no link: it just goes.
                        let Some((repo, digest)) = link else {
                            continue;
                        };
                        let repo = *repo;
                        let media_type = String::from_utf8_lossy(&media_type);
                        let raw = digest.sha256_bytes();
                        change_bucket(digests, &bucket_key(&raw), |bucket| {
                            let entry = bucket.entry(&raw);
                            // A link made since is newer, and removed its legacy key: never met.
                            if entry.link(repo).is_none() {
                                entry.set_link(repo, &media_type);
                            }
                        })?;
                        moved += 1;
                    }
                    Ok(moved)
                })
                .map_err(transaction_error)?;
            pace();
        }
        {
            let _writes = self.blob_writes();
            self.legacy.access.clear()?;
        }
        self.flush()?;
        Ok(done)
    }
}

fn first_keys(tree: &sled::Tree, chunk: usize) -> Result<Vec<Vec<u8>>, IndexError> {
    tree.iter()
        .keys()
        .take(chunk.max(1))
        .map(|key| Ok(key?.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::RepoName;
    use crate::storage::index::{KindTotals, Totals};

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn digest(n: u32) -> Digest {
        Digest::of(&n.to_be_bytes())
    }

    fn record(n: u32) -> BlobRecord {
        BlobRecord {
            size: 100 + u64::from(n),
            media_type: n.is_multiple_of(4).then(|| MANIFEST.to_owned()),
            last_access_ms: 1_000 + u64::from(n),
        }
    }

    /// Writes an index as berth wrote it before buckets: blobs 0..30 (every fourth a manifest)
    /// with their stamps and totals, links of blobs 0..10 and of digest 99 (never stored) to
    /// `docker.io/library/app`, and a key of each tree that parses as nothing.
    fn write_legacy(dir: &std::path::Path) {
        let db = sled::open(dir).unwrap();
        let (blobs, access, links) = (
            db.open_tree("blobs").unwrap(),
            db.open_tree("access").unwrap(),
            db.open_tree("links").unwrap(),
        );
        let mut totals = Totals::default();
        for n in 0..30 {
            let (d, r) = (digest(n), record(n));
            blobs
                .insert(legacy_blob_key(&d), serde_json::to_vec(&r).unwrap())
                .unwrap();
            let mut stamp = r.last_access_ms.to_be_bytes().to_vec();
            stamp.extend_from_slice(&legacy_blob_key(&d));
            access.insert(stamp, &[] as &[u8]).unwrap();
            totals.blobs += 1;
            totals.bytes += r.size;
        }
        blobs.insert(b"sha256:junk", b"{}".as_slice()).unwrap();
        let mut value = totals.blobs.to_be_bytes().to_vec();
        value.extend_from_slice(&totals.bytes.to_be_bytes());
        access.insert(TOTALS_KEY, value).unwrap();
        for n in (0..10).chain([99]) {
            let key = format!("docker.io/library/app@{}", digest(n));
            let media_type = if n.is_multiple_of(4) { MANIFEST } else { "" };
            links.insert(key.as_bytes(), media_type.as_bytes()).unwrap();
        }
        links.insert(b"no-slash", b"".as_slice()).unwrap();
        db.flush().unwrap();
    }

    fn recount(index: &Index) -> (Totals, KindTotals) {
        let (mut totals, mut kinds) = (Totals::default(), KindTotals::default());
        for entry in index.blobs() {
            let record = entry.unwrap().1;
            totals.blobs += 1;
            totals.bytes += record.size;
            kinds.add(&record, 1);
        }
        (totals, kinds)
    }

    #[test]
    fn a_legacy_index_serves_as_it_is_and_moves_into_buckets_while_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path());
        let repo: RepoName = "library/app".parse().unwrap();
        let index = crate::storage::reopened(|| Index::open(dir.path()));
        assert!(index.has_legacy());
        // Read as it is: records, links, totals carried over, the LRU order.
        assert_eq!(index.totals().unwrap(), recount(&index).0);
        assert_eq!(index.totals().unwrap().blobs, 30);
        assert_eq!(index.kind_totals().unwrap(), None);
        for n in 0..30 {
            assert_eq!(index.blob(&digest(n)).unwrap(), Some(record(n)));
        }
        assert_eq!(
            index.linked("docker.io", &repo, &digest(4)).unwrap(),
            Some(MANIFEST.to_owned())
        );
        assert_eq!(
            index.linked("docker.io", &repo, &digest(99)).unwrap(),
            Some(String::new())
        );
        assert_eq!(index.linked("docker.io", &repo, &digest(10)).unwrap(), None);
        let oldest = index.least_recently_used(None, u64::MAX, 2).unwrap();
        let oldest: Vec<_> = oldest
            .into_iter()
            .map(|u| (u.stamp, u.digest, u.size))
            .collect();
        assert_eq!(oldest, [(1_000, digest(0), 100), (1_001, digest(1), 101)]);

        // Writes move what they touch, and the totals stay exact.
        index.touch(&digest(1), record(1)).unwrap();
        assert!(index.remove_blob(&digest(2)).unwrap().is_some());
        assert!(!index.put_new_blob(&digest(3), &record(3)).unwrap());
        index
            .link("docker.io", &repo, &digest(5), "text/moved")
            .unwrap();
        assert_eq!(index.totals().unwrap(), recount(&index).0);
        assert!(index.blob(&digest(2)).unwrap().is_none());

        // Moved in chunks while blobs come and go between them.
        let mut n = 200;
        let moved = index
            .migrate_legacy(4, || {
                n += 1;
                index.put_new_blob(&digest(n), &record(n)).unwrap();
                index.remove_blob(&digest(n - 190)).unwrap();
                index.link("docker.io", &repo, &digest(n), "").unwrap();
            })
            .unwrap();
        assert!(!index.has_legacy());
        assert!(moved.blobs > 0 && moved.links > 0, "{moved:?}");
        let (totals, kinds) = recount(&index);
        assert_eq!(index.totals().unwrap(), totals);
        // Blobs 1, 3 and the last few stayed (2, and 11 on, one a chunk, were removed as the
        // move went on).
        assert!(n - 200 < 18, "{} chunks", n - 200);
        for kept in [1, 3, 29] {
            assert!(index.blob(&digest(kept)).unwrap().is_some(), "blob {kept}");
        }
        assert_eq!(index.count_kinds(8, || {}).unwrap(), kinds);
        let check_links = |index: &Index| {
            let linked = |n| index.linked("docker.io", &repo, &digest(n)).unwrap();
            assert_eq!(linked(5), Some("text/moved".to_owned()));
            assert_eq!(linked(8), Some(MANIFEST.to_owned()));
            assert_eq!(
                linked(2),
                Some(String::new()),
                "a removed blob keeps its link"
            );
            assert_eq!(linked(99), Some(String::new()));
            assert_eq!(linked(201), Some(String::new()));
            assert_eq!(linked(15), None);
        };
        check_links(&index);
        index.flush().unwrap();
        drop(index);
        let index = crate::storage::reopened(|| Index::open(dir.path()));
        assert!(!index.has_legacy());
        assert_eq!(index.totals().unwrap(), totals);
        assert_eq!(index.kind_totals().unwrap(), Some(kinds));
        check_links(&index);
    }
}

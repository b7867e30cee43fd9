//! Stored blobs' records, kept in their digests' buckets (see [`super::bucket`]), and the
//! running totals beside them.

use serde::{Deserialize, Serialize};

use super::bucket::{bucket_key, change_bucket, find, read_bucket, Bucket, View};
use super::kinds::{adjust_kinds, KindTotals};
use super::legacy::take_legacy_blob;
use super::{now_ms, transaction_error, Index, IndexError};
use crate::oci::Digest;

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

/// Served blobs are re-stamped at most this often, to keep hits from writing the index.
const TOUCH_GRANULARITY_MS: u64 = 1000;

/// A stored blob as [`Index::least_recently_used`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Used {
    /// When it was stored or last served, in ms since the Unix epoch.
    pub stamp: u64,
    pub digest: Digest,
    pub size: u64,
}

/// The key of the running totals in `digests`: no bucket's (those are two bytes), after every
/// bucket, and changed in the same transactions as the blobs it counts.
pub(super) const TOTALS_KEY: &[u8] = b"\xff\xff\xff\xff\xff\xff\xff\xfftotals";

/// How many blobs are indexed and their bytes, kept as they change (never by a scan).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub blobs: u64,
    pub bytes: u64,
}

impl Totals {
    fn encode(self) -> [u8; 16] {
        let mut value = [0; 16];
        value[..8].copy_from_slice(&self.blobs.to_be_bytes());
        value[8..].copy_from_slice(&self.bytes.to_be_bytes());
        value
    }

    fn decode(value: &[u8]) -> Totals {
        let word = |range: std::ops::Range<usize>| {
            value
                .get(range)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes)
        };
        Totals {
            blobs: word(0..8),
            bytes: word(8..16),
        }
    }
}

type Txn = sled::transaction::TransactionalTree;
type TxnResult<T> = sled::transaction::ConflictableTransactionResult<T, sled::Error>;

/// Inside a transaction: the blob in bucket `key` went from `old` to `new` (`None`: absent);
/// the overall and per-kind totals follow.
fn adjust_totals(
    digests: &Txn,
    key: &[u8],
    old: Option<&BlobRecord>,
    new: Option<&BlobRecord>,
) -> TxnResult<()> {
    let size = |record: Option<&BlobRecord>| record.map_or(0, |r| r.size as i64);
    let blobs = new.is_some() as i64 - old.is_some() as i64;
    let bytes = size(new) - size(old);
    if blobs != 0 || bytes != 0 {
        let old = digests
            .get(TOTALS_KEY)?
            .map(|v| Totals::decode(&v))
            .unwrap_or_default();
        let new = Totals {
            blobs: old.blobs.saturating_add_signed(blobs),
            bytes: old.bytes.saturating_add_signed(bytes),
        };
        digests.insert(TOTALS_KEY, &new.encode()[..])?;
    }
    let kind = |record: Option<&BlobRecord>| record.map(|r| (r.media_type.is_some(), r.size));
    if kind(old) != kind(new) {
        adjust_kinds(digests, key, old, new)?;
    }
    Ok(())
}

/// Inside a transaction: sets (`Some`) or removes (`None`) a blob's record, moving one the
/// legacy layout still holds; returns the record that was there.
fn replace_blob(
    digests: &Txn,
    legacy: &Txn,
    digest: &Digest,
    record: Option<&BlobRecord>,
) -> TxnResult<Option<BlobRecord>> {
    let raw = digest.sha256_bytes();
    let key = bucket_key(&raw);
    let moved = take_legacy_blob(legacy, digest)?;
    let was = change_bucket(digests, &key, |bucket| {
        std::mem::replace(&mut bucket.entry(&raw).blob, record.cloned())
    })?;
    let old = was.or(moved);
    adjust_totals(digests, &key, old.as_ref(), record)?;
    Ok(old)
}

/// Inside a transaction: indexes a blob unless it is already; true when this call did.
pub(super) fn insert_new_blob(
    digests: &Txn,
    legacy: &Txn,
    digest: &Digest,
    record: &BlobRecord,
) -> TxnResult<bool> {
    if legacy
        .get(super::legacy::legacy_blob_key(digest))?
        .is_some()
    {
        return Ok(false);
    }
    let raw = digest.sha256_bytes();
    let key = bucket_key(&raw);
    let inserted = change_bucket(digests, &key, |bucket| {
        let entry = bucket.entry(&raw);
        let absent = entry.blob.is_none();
        if absent {
            entry.blob = Some(record.clone());
        }
        absent
    })?;
    if inserted {
        adjust_totals(digests, &key, None, Some(record))?;
    }
    Ok(inserted)
}

impl Index {
    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, IndexError> {
        match self.with_entry(digest, |entry| entry.and_then(|e| e.blob()))? {
            Some(record) => Ok(Some(record)),
            None => self.legacy_blob(digest),
        }
    }

    /// Reads the entry of `digest` in place in its bucket (a hit's lookup: nothing else of
    /// the bucket is decoded).
    pub(super) fn with_entry<T>(
        &self,
        digest: &Digest,
        read: impl FnOnce(Option<View<'_>>) -> T,
    ) -> Result<T, IndexError> {
        let raw = digest.sha256_bytes();
        let key = bucket_key(&raw);
        let value = self.blobs.get(key)?;
        let entry = match &value {
            None => None,
            Some(value) => find(value, &raw).map_err(|()| IndexError::Malformed {
                key: hex::encode(key),
            })?,
        };
        Ok(read(entry))
    }

    /// Inserts or replaces a blob's record.
    pub fn put_blob(&self, digest: &Digest, record: &BlobRecord) -> Result<(), IndexError> {
        use sled::Transactional;
        let _writes = self.blob_writes();
        (&self.blobs, &self.legacy.blobs)
            .transaction(|(digests, legacy)| {
                replace_blob(digests, legacy, digest, Some(record)).map(drop)
            })
            .map_err(transaction_error)
    }

    /// Indexes a blob unless it is already: true when this call did, so that only the one
    /// store that added a digest counts its bytes.
    pub fn put_new_blob(&self, digest: &Digest, record: &BlobRecord) -> Result<bool, IndexError> {
        use sled::Transactional;
        let _writes = self.blob_writes();
        (&self.blobs, &self.legacy.blobs)
            .transaction(|(digests, legacy)| insert_new_blob(digests, legacy, digest, record))
            .map_err(transaction_error)
    }

    /// Removes a blob's record (its repository links stay); returns the record that was there.
    pub fn remove_blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, IndexError> {
        Ok(self
            .remove_blobs(std::slice::from_ref(digest))?
            .pop()
            .flatten())
    }

    /// Removes several blobs' records in one transaction (one commit instead of one per
    /// blob); returns the record that was there for each, in order.
    pub fn remove_blobs(&self, digests: &[Digest]) -> Result<Vec<Option<BlobRecord>>, IndexError> {
        use sled::Transactional;
        let _writes = self.blob_writes();
        (&self.blobs, &self.legacy.blobs)
            .transaction(|(tree, legacy)| {
                digests
                    .iter()
                    .map(|digest| replace_blob(tree, legacy, digest, None))
                    .collect::<TxnResult<Vec<_>>>()
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

    /// The `max` least recently used blobs stamped at or before `until_ms` and after `after`
    /// in LRU order (stamp, then digest), oldest first. One scan of the index, holding only
    /// `max` candidates: eviction reads the LRU order a round at a time, never all of it.
    pub fn least_recently_used(
        &self,
        after: Option<&Used>,
        until_ms: u64,
        max: usize,
    ) -> Result<Vec<Used>, IndexError> {
        use std::collections::BinaryHeap;
        let after = after.map(|used| (used.stamp, used.digest.sha256_bytes()));
        // (stamp, digest, size): ordered by stamp then digest, which are unique together.
        let mut heap: BinaryHeap<(u64, [u8; 32], u64)> = BinaryHeap::with_capacity(max + 1);
        let mut consider = |candidate: (u64, [u8; 32], u64)| {
            let key = (candidate.0, candidate.1);
            if candidate.0 > until_ms || after.is_some_and(|after| key <= after) {
                return;
            }
            if heap.len() < max {
                heap.push(candidate);
            } else if heap.peek().is_some_and(|newest| candidate < *newest) {
                heap.pop();
                heap.push(candidate);
            }
        };
        for entry in self.legacy_blobs() {
            let (digest, record) = entry?;
            consider((record.last_access_ms, digest.sha256_bytes(), record.size));
        }
        for bucket in self.buckets(std::ops::Bound::Unbounded) {
            for entry in bucket?.1.entries() {
                if let Some(record) = &entry.blob {
                    consider((record.last_access_ms, entry.digest, record.size));
                }
            }
        }
        Ok(heap
            .into_sorted_vec()
            .into_iter()
            .map(|(stamp, raw, size)| Used {
                stamp,
                digest: Digest::from_sha256_bytes(&raw),
                size,
            })
            .collect())
    }

    /// How many blobs are indexed, and their bytes: read, not counted.
    pub fn totals(&self) -> Result<Totals, IndexError> {
        Ok(self
            .blobs
            .get(TOTALS_KEY)?
            .map(|v| Totals::decode(&v))
            .unwrap_or_default())
    }

    /// Counts the totals, overall and per kind, again from every entry (an index from before
    /// they were kept, or after a full recovery). Blocks, for as long as a scan of the index
    /// takes; nothing may store or remove blobs meanwhile.
    pub fn recount_totals(&self) -> Result<Totals, IndexError> {
        let mut totals = Totals::default();
        let mut kinds = KindTotals::default();
        for entry in self.blobs() {
            let record = entry?.1;
            totals.blobs += 1;
            totals.bytes += record.size;
            kinds.add(&record, 1);
        }
        self.blobs.insert(TOTALS_KEY, &totals.encode()[..])?;
        self.set_kinds(kinds)?;
        Ok(totals)
    }

    pub(super) fn has_totals(&self) -> Result<bool, IndexError> {
        Ok(self.blobs.contains_key(TOTALS_KEY)?)
    }

    /// The buckets from `start` on, in key order, each decoded (the records after the last
    /// bucket are not buckets).
    pub(super) fn buckets(
        &self,
        start: std::ops::Bound<Vec<u8>>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Bucket), IndexError>> + '_ {
        self.blobs
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|item| !matches!(item, Ok((key, _)) if key.len() != 2))
            .map(|item| {
                let (key, value) = item?;
                let bucket = read_bucket(&key, Some(&value))?;
                Ok((key.to_vec(), bucket))
            })
    }

    /// Every stored blob, in digest order, read from the index as the caller goes. While an
    /// index in the legacy layout is moved over, its blobs come first: a blob moved during
    /// the walk may be seen twice, never missed.
    pub fn blobs(&self) -> impl Iterator<Item = Result<(Digest, BlobRecord), IndexError>> + '_ {
        let current = self.buckets(std::ops::Bound::Unbounded).flat_map(
            |bucket| -> Vec<Result<(Digest, BlobRecord), IndexError>> {
                match bucket {
                    Err(e) => vec![Err(e)],
                    Ok((_, bucket)) => bucket
                        .into_entries()
                        .into_iter()
                        .filter_map(|entry| {
                            let digest = entry.digest();
                            entry.blob.map(|record| Ok((digest, record)))
                        })
                        .collect(),
                }
            },
        );
        self.legacy_blobs().chain(current)
    }
}

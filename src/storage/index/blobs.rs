//! The `blobs` tree and its inverse `access` (LRU order), which change together.

use serde::{Deserialize, Serialize};

use super::kinds::{adjust_kinds, KindTotals};
use super::{decode, encode, now_ms, transaction_error, Index, IndexError};
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

/// The key of the running totals, the one record of `access` that is not a blob's: it sorts
/// after every real stamp, and changes in the same transactions as the blobs it counts.
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

/// Inside a transaction: the entry at `key` went from `old` to `new` (`None`: absent); the
/// overall and per-kind totals follow.
fn adjust_totals(
    access: &sled::transaction::TransactionalTree,
    key: &[u8],
    old: Option<&BlobRecord>,
    new: Option<&BlobRecord>,
) -> sled::transaction::ConflictableTransactionResult<(), sled::Error> {
    let size = |record: Option<&BlobRecord>| record.map_or(0, |r| r.size as i64);
    let blobs = new.is_some() as i64 - old.is_some() as i64;
    let bytes = size(new) - size(old);
    if blobs != 0 || bytes != 0 {
        let old = access
            .get(TOTALS_KEY)?
            .map(|v| Totals::decode(&v))
            .unwrap_or_default();
        let new = Totals {
            blobs: old.blobs.saturating_add_signed(blobs),
            bytes: old.bytes.saturating_add_signed(bytes),
        };
        access.insert(TOTALS_KEY, &new.encode()[..])?;
    }
    let kind = |record: Option<&BlobRecord>| record.map(|r| (r.media_type.is_some(), r.size));
    if kind(old) != kind(new) {
        adjust_kinds(access, key, old, new)?;
    }
    Ok(())
}

/// Inside a transaction: indexes a blob unless it is already; true when this call did.
pub(super) fn insert_new_blob(
    blobs: &sled::transaction::TransactionalTree,
    access: &sled::transaction::TransactionalTree,
    digest: &Digest,
    record: &BlobRecord,
) -> sled::transaction::ConflictableTransactionResult<bool, sled::Error> {
    let key = blob_key(digest);
    if blobs.get(&key)?.is_some() {
        return Ok(false);
    }
    blobs.insert(key.as_slice(), encode(record))?;
    access.insert(access_key(record.last_access_ms, digest), &[] as &[u8])?;
    adjust_totals(access, &key, None, Some(record))?;
    Ok(true)
}

impl Index {
    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, IndexError> {
        let key = blob_key(digest);
        self.blobs.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// Inserts or replaces a blob's record, moving its `access` entry along.
    pub fn put_blob(&self, digest: &Digest, record: &BlobRecord) -> Result<(), IndexError> {
        use sled::Transactional;
        let key = blob_key(digest);
        let value = encode(record);
        let _writes = self.blob_writes();
        (&self.blobs, &self.access)
            .transaction(|(blobs, access)| {
                match blobs.insert(key.as_slice(), value.as_slice())? {
                    Some(old) => {
                        if let Ok(old) = serde_json::from_slice::<BlobRecord>(&old) {
                            access.remove(access_key(old.last_access_ms, digest))?;
                            adjust_totals(access, &key, Some(&old), Some(record))?;
                        }
                    }
                    None => adjust_totals(access, &key, None, Some(record))?,
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
        let _writes = self.blob_writes();
        (&self.blobs, &self.access)
            .transaction(|(blobs, access)| insert_new_blob(blobs, access, digest, record))
            .map_err(transaction_error)
    }

    /// Removes a blob's record and its `access` entry; returns the record that was there.
    pub fn remove_blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, IndexError> {
        use sled::Transactional;
        let key = blob_key(digest);
        let _writes = self.blob_writes();
        (&self.blobs, &self.access)
            .transaction(|(blobs, access)| {
                let old = blobs.remove(key.as_slice())?;
                let old = old.and_then(|v| serde_json::from_slice::<BlobRecord>(&v).ok());
                if let Some(old) = &old {
                    access.remove(access_key(old.last_access_ms, digest))?;
                    adjust_totals(access, &key, Some(old), None)?;
                }
                Ok(old)
            })
            .map_err(transaction_error)
    }

    /// Removes several blobs' records and `access` entries in one transaction (one commit
    /// instead of one per blob); returns the record that was there for each, in order.
    pub fn remove_blobs(&self, digests: &[Digest]) -> Result<Vec<Option<BlobRecord>>, IndexError> {
        use sled::Transactional;
        let _writes = self.blob_writes();
        (&self.blobs, &self.access)
            .transaction(|(blobs, access)| {
                let mut removed = Vec::with_capacity(digests.len());
                for digest in digests {
                    let key = blob_key(digest);
                    let old = blobs.remove(key.as_slice())?;
                    let old = old.and_then(|v| serde_json::from_slice::<BlobRecord>(&v).ok());
                    if let Some(old) = &old {
                        access.remove(access_key(old.last_access_ms, digest))?;
                        adjust_totals(access, &key, Some(old), None)?;
                    }
                    removed.push(old);
                }
                Ok(removed)
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

    /// Blobs from least to most recently used, with their stamps, read from the index as the
    /// caller goes (nothing is collected).
    pub fn least_recently_used(
        &self,
    ) -> impl Iterator<Item = Result<(u64, Digest), IndexError>> + '_ {
        self.access.iter().keys().filter_map(|key| match key {
            Err(e) => Some(Err(e.into())),
            Ok(key) => parse_access_key(&key).map(Ok),
        })
    }

    /// How many blobs are indexed, and their bytes: read, not counted.
    pub fn totals(&self) -> Result<Totals, IndexError> {
        Ok(self
            .access
            .get(TOTALS_KEY)?
            .map(|v| Totals::decode(&v))
            .unwrap_or_default())
    }

    /// Counts the totals, overall and per kind, again from every entry (an index from before
    /// they were kept, or after a full recovery). Blocks, for as long as a scan of `blobs`
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
        self.access.insert(TOTALS_KEY, &totals.encode()[..])?;
        self.set_kinds(kinds)?;
        Ok(totals)
    }

    pub(super) fn has_totals(&self) -> Result<bool, IndexError> {
        Ok(self.access.contains_key(TOTALS_KEY)?)
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
}

//! The `digests` tree's records: every digest the index knows is an entry in the bucket named
//! by its first two bytes, which holds the stored blob's record (if the blob is stored here)
//! and the mirrored repositories linked to it. One sled entry per bucket instead of three per
//! blob: sled keeps a page-table entry in memory for every 16 or so entries, so at a million
//! blobs this is what keeps the index's memory and size flat (issue 17, `bench/scale.sh`).
//! 65,536 buckets hold a few entries each at a hundred thousand blobs and about 150 at ten
//! million; a change rewrites one bucket.
//!
//! A bucket is a version byte, then its entries in digest order:
//!
//! ```text
//! entry = digest[32] flags:u8
//!         (size:varint last_access_ms:varint)?   flags & STORED
//!         (len:varint media_type)?               flags & MEDIA_TYPE
//!         links:varint (repo:varint len:varint media_type)*
//! ```
//!
//! Numbers are LEB128 varints; `repo` is an id from the `repos` tree (see [`super::mirror`]).

use super::blobs::BlobRecord;
use super::IndexError;
use crate::oci::Digest;

const VERSION: u8 = 1;
const STORED: u8 = 1;
const MEDIA_TYPE: u8 = 2;

pub(super) type BucketKey = [u8; 2];

pub(super) fn bucket_key(digest: &[u8; 32]) -> BucketKey {
    [digest[0], digest[1]]
}

/// One digest's entry: its blob when stored here, and the mirrored repositories that hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub digest: [u8; 32],
    pub blob: Option<BlobRecord>,
    pub links: Vec<RepoLink>,
}

/// A mirrored repository holds the digest; a manifest's media type as that repository serves
/// it (empty for other blobs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RepoLink {
    pub repo: u64,
    pub media_type: String,
}

impl Entry {
    pub fn digest(&self) -> Digest {
        Digest::from_sha256_bytes(&self.digest)
    }

    pub fn link(&self, repo: u64) -> Option<&RepoLink> {
        self.links.iter().find(|link| link.repo == repo)
    }

    /// Links `repo`, replacing the media type of an existing link.
    pub fn set_link(&mut self, repo: u64, media_type: &str) {
        match self.links.iter_mut().find(|link| link.repo == repo) {
            Some(link) => media_type.clone_into(&mut link.media_type),
            None => self.links.push(RepoLink {
                repo,
                media_type: media_type.to_owned(),
            }),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Bucket {
    entries: Vec<Entry>,
}

impl Bucket {
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    pub fn get(&self, digest: &[u8; 32]) -> Option<&Entry> {
        let at = self
            .entries
            .binary_search_by(|e| e.digest.cmp(digest))
            .ok()?;
        self.entries.get(at)
    }

    /// The digest's entry, made empty if there was none. An entry left with neither blob nor
    /// link is dropped by [`Bucket::tidy`].
    pub fn entry(&mut self, digest: &[u8; 32]) -> &mut Entry {
        let at = match self.entries.binary_search_by(|e| e.digest.cmp(digest)) {
            Ok(at) => at,
            Err(at) => {
                self.entries.insert(
                    at,
                    Entry {
                        digest: *digest,
                        blob: None,
                        links: Vec::new(),
                    },
                );
                at
            }
        };
        &mut self.entries[at]
    }

    /// Drops entries that hold nothing any more.
    pub fn tidy(&mut self) {
        self.entries
            .retain(|e| e.blob.is_some() || !e.links.is_empty());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.entries.len() * 48);
        out.push(VERSION);
        for entry in &self.entries {
            out.extend_from_slice(&entry.digest);
            let media = entry.blob.as_ref().and_then(|b| b.media_type.as_deref());
            let flags = if entry.blob.is_some() { STORED } else { 0 }
                | if media.is_some() { MEDIA_TYPE } else { 0 };
            out.push(flags);
            if let Some(blob) = &entry.blob {
                put_varint(&mut out, blob.size);
                put_varint(&mut out, blob.last_access_ms);
            }
            if let Some(media) = media {
                put_text(&mut out, media);
            }
            put_varint(&mut out, entry.links.len() as u64);
            for link in &entry.links {
                put_varint(&mut out, link.repo);
                put_text(&mut out, &link.media_type);
            }
        }
        out
    }

    /// `None` when the value is not a bucket this version wrote.
    pub fn decode(value: &[u8]) -> Option<Bucket> {
        let mut entries: Vec<Entry> = Vec::new();
        for view in views(value)? {
            let view = view?;
            if entries
                .last()
                .is_some_and(|last| last.digest >= view.digest)
            {
                return None;
            }
            entries.push(view.to_entry()?);
        }
        Some(Bucket { entries })
    }
}

/// One entry as it lies in a bucket's bytes, read without copying (a hit's lookup).
pub(super) struct View<'a> {
    pub digest: [u8; 32],
    blob: Option<(u64, u64, Option<&'a str>)>,
    links: u64,
    link_bytes: &'a [u8],
}

impl<'a> View<'a> {
    pub fn blob(&self) -> Option<BlobRecord> {
        self.blob.map(|(size, last_access_ms, media)| BlobRecord {
            size,
            media_type: media.map(str::to_owned),
            last_access_ms,
        })
    }

    /// The media type the link of `repo` holds, if linked.
    pub fn link(&self, repo: u64) -> Option<&'a str> {
        let mut rest = self.link_bytes;
        for _ in 0..self.links {
            let id = take_varint(&mut rest)?;
            let media_type = take_str(&mut rest)?;
            if id == repo {
                return Some(media_type);
            }
        }
        None
    }

    fn to_entry(&self) -> Option<Entry> {
        let mut rest = self.link_bytes;
        let mut links = Vec::new();
        for _ in 0..self.links {
            let repo = take_varint(&mut rest)?;
            let media_type = take_str(&mut rest)?.to_owned();
            links.push(RepoLink { repo, media_type });
        }
        Some(Entry {
            digest: self.digest,
            blob: self.blob(),
            links,
        })
    }
}

/// The entries of a bucket's bytes in order, each `None` where they stop making sense; `None`
/// for a value of another version.
fn views(value: &[u8]) -> Option<impl Iterator<Item = Option<View<'_>>>> {
    let (&version, mut rest) = value.split_first()?;
    if version != VERSION {
        return None;
    }
    let mut failed = false;
    Some(std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        let view = next_view(&mut rest);
        failed = view.is_none();
        Some(view)
    }))
}

fn next_view<'a>(rest: &mut &'a [u8]) -> Option<View<'a>> {
    let (digest, tail) = rest.split_at_checked(32)?;
    let digest: [u8; 32] = digest.try_into().ok()?;
    let (&flags, tail) = tail.split_first()?;
    *rest = tail;
    let mut blob = None;
    if flags & STORED != 0 {
        let size = take_varint(rest)?;
        let last_access_ms = take_varint(rest)?;
        blob = Some((size, last_access_ms, None));
    }
    if flags & MEDIA_TYPE != 0 {
        blob.as_mut()?.2 = Some(take_str(rest)?);
    }
    let links = take_varint(rest)?;
    let link_bytes = *rest;
    for _ in 0..links {
        take_varint(rest)?;
        take_str(rest)?;
    }
    let link_bytes = &link_bytes[..link_bytes.len() - rest.len()];
    Some(View {
        digest,
        blob,
        links,
        link_bytes,
    })
}

/// The entry of `digest` in a bucket's bytes, read in place. `Err` when they do not decode.
pub(super) fn find<'a>(value: &'a [u8], digest: &[u8; 32]) -> Result<Option<View<'a>>, ()> {
    for view in views(value).ok_or(())? {
        let view = view.ok_or(())?;
        match view.digest.cmp(digest) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return Ok(Some(view)),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

/// Reads a bucket's value, naming the key of one that does not decode.
pub(super) fn read_bucket(key: &[u8], value: Option<&[u8]>) -> Result<Bucket, IndexError> {
    match value {
        None => Ok(Bucket::default()),
        Some(value) => Bucket::decode(value).ok_or_else(|| IndexError::Malformed {
            key: hex::encode(key),
        }),
    }
}

/// Inside a transaction: reads the bucket at `key`, lets `change` change it, and writes it
/// back (removed when empty). A bucket that does not decode aborts the transaction.
pub(super) fn change_bucket<R>(
    tree: &sled::transaction::TransactionalTree,
    key: &BucketKey,
    change: impl FnOnce(&mut Bucket) -> R,
) -> sled::transaction::ConflictableTransactionResult<R, sled::Error> {
    let old = tree.get(key)?;
    let mut bucket = Bucket::decode(old.as_deref().unwrap_or(&[VERSION])).ok_or_else(|| {
        sled::transaction::ConflictableTransactionError::Abort(sled::Error::Unsupported(format!(
            "index bucket {} does not decode",
            hex::encode(key)
        )))
    })?;
    let result = change(&mut bucket);
    bucket.tidy();
    if bucket.is_empty() {
        if old.is_some() {
            tree.remove(key)?;
        }
    } else {
        let value = bucket.encode();
        if old.as_deref() != Some(value.as_slice()) {
            tree.insert(&key[..], value)?;
        }
    }
    Ok(result)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest.split_first()?;
        *rest = tail;
        n |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn take_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let len = usize::try_from(take_varint(rest)?).ok()?;
    let (text, tail) = rest.split_at_checked(len)?;
    *rest = tail;
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> [u8; 32] {
        let mut d = [byte; 32];
        d[0] = 7;
        d
    }

    #[test]
    fn buckets_round_trip_in_digest_order() {
        let mut bucket = Bucket::default();
        bucket.entry(&digest(9)).blob = Some(BlobRecord {
            size: 300 << 20,
            media_type: None,
            last_access_ms: 1_764_000_000_000,
        });
        bucket.entry(&digest(3)).blob = Some(BlobRecord {
            size: 0,
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            last_access_ms: 0,
        });
        bucket.entry(&digest(3)).set_link(u64::MAX, "text/x");
        bucket.entry(&digest(5)).set_link(1, "");
        bucket.entry(&digest(5)).set_link(2, "");
        bucket.entry(&digest(5)).set_link(1, "application/json");
        bucket.entry(&digest(6));
        bucket.tidy();
        let order: Vec<u8> = bucket.entries().iter().map(|e| e.digest[1]).collect();
        assert_eq!(order, [3, 5, 9]);
        let read = Bucket::decode(&bucket.encode()).unwrap();
        assert_eq!(read, bucket);
        let five = read.get(&digest(5)).unwrap();
        assert_eq!(five.blob, None);
        assert_eq!(five.link(1).unwrap().media_type, "application/json");
        assert_eq!(five.link(2).unwrap().media_type, "");
        assert!(five.link(3).is_none());
        assert!(read.get(&digest(6)).is_none());
        // Read in place, a lookup finds the same.
        let bytes = bucket.encode();
        for n in 0..12 {
            let found = find(&bytes, &digest(n)).unwrap();
            let entry = read.get(&digest(n));
            assert_eq!(
                found.as_ref().map(|v| v.blob()),
                entry.map(|e| e.blob.clone())
            );
            assert_eq!(found.as_ref().and_then(|v| v.to_entry()).as_ref(), entry);
            assert_eq!(
                found.as_ref().and_then(|v| v.link(1)),
                entry.and_then(|e| e.link(1)).map(|l| l.media_type.as_str())
            );
        }
    }

    #[test]
    fn a_small_blob_costs_under_fifty_bytes() {
        let mut bucket = Bucket::default();
        let entry = bucket.entry(&digest(1));
        entry.blob = Some(BlobRecord::new(200, None));
        entry.set_link(3, "");
        assert!(bucket.encode().len() <= 1 + 50, "{}", bucket.encode().len());
    }

    #[test]
    fn junk_does_not_decode() {
        let mut bucket = Bucket::default();
        bucket.entry(&digest(1)).blob = Some(BlobRecord::new(5, Some("m".into())));
        let good = bucket.encode();
        for cut in 2..good.len() {
            assert_eq!(Bucket::decode(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(Bucket::decode(b""), None);
        assert_eq!(Bucket::decode(&[2]), None);
        // Entries out of order, or twice.
        let mut twice = good.clone();
        twice.extend_from_slice(&good[1..]);
        assert_eq!(Bucket::decode(&twice), None);
        // A media type without a blob.
        let mut orphan = vec![VERSION];
        orphan.extend_from_slice(&digest(1));
        orphan.extend_from_slice(&[MEDIA_TYPE, 1, b'm', 0]);
        assert_eq!(Bucket::decode(&orphan), None);
        // A varint that never ends.
        let mut endless = vec![VERSION];
        endless.extend_from_slice(&digest(1));
        endless.push(STORED);
        endless.extend_from_slice(&[0xff; 11]);
        assert_eq!(Bucket::decode(&endless), None);
        assert_eq!(Bucket::decode(&[VERSION]), Some(Bucket::default()));
        assert!(find(&good[..good.len() - 1], &digest(1)).is_err());
        assert!(find(&[2], &digest(1)).is_err());
    }
}

//! The metadata index, in sled. One struct owns every tree; each tree's key encoding is
//! written out below; each tree's encoder and parser sit beside its records ([`blobs`],
//! [`mirror`]).
//!
//! | tree    | key                                   | value          |
//! |---------|---------------------------------------|----------------|
//! | `digests` | the first 2 bytes of a sha256       | [`bucket`]: the digests' blob records and mirror links |
//! | `digests` | `ff×8 totals` (after every bucket)  | blob count ++ bytes, 8-byte big-endian each ([`Totals`]) |
//! | `digests` | `ff×8 kinds`                        | the same per kind, while or once counted ([`kinds`]) |
//! | `repos` | `<upstream>/<repo>`                   | the repository's id in links, 8-byte big-endian |
//! | `tags`  | `<upstream>/<repo>:<tag>`             | [`TagRecord`]  |
//! | `guarded` | `<upstream>/<repo>`                 | empty, or `unsure` ([`Guarding`]) |
//! | `answers` | `<upstream>/<repo>@sha256:<hex>`    | upstream's referrers of that subject ([`answers`]) |
//!
//! Private projects keep their own trees, described in [`projects`]; blob uploads in progress
//! theirs, in [`uploads`]; pinned images theirs, in [`pins`]. An index from before buckets
//! is moved into them in the background ([`legacy`]).
//!
//! Upstream names contain no `/`, repository names no `:` or `@`, tags no `:`, so each key
//! splits back unambiguously. Values other than buckets are JSON, so records can gain
//! optional fields. A digest's blob record exists only for a verified file in the blob store;
//! its links record which mirrored repositories may hold it (fetched through them, or
//! confirmed by their upstream), and for a manifest the media type each serves it with; a
//! digest evicted keeps its links. The totals after the buckets change in the same
//! transaction as each blob record, so that usage and `berth cache stats` never scan the
//! index. Eviction finds the least recently used blobs from the records' stamps (see
//! `cache::evict`): there is no second tree in LRU order to keep in step.

mod answers;
mod blobs;
mod bucket;
mod kinds;
mod legacy;
mod mirror;
mod pins;
mod projects;
#[cfg(test)]
mod tests;
mod uploads;

pub use self::answers::ReferrersAnswer;
use self::blobs::insert_new_blob;
pub use self::blobs::{BlobRecord, Totals, Used};
pub use self::kinds::KindTotals;
pub use self::legacy::Migrated;
pub use self::mirror::{link_key, parse_link_key, parse_tag_key, tag_key, Guarding, TagRecord};
pub use self::pins::{PinRecord, IMPORTED_PIN};
pub use self::projects::lifecycle::RemovedRepository;
pub use self::projects::{Link, PushedManifest, ReferrerRecord};
pub use self::uploads::UploadRecord;

use serde::{Deserialize, Serialize};

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
    #[error("index bucket {key} does not decode")]
    Malformed { key: String },
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const INDEX_CACHE_BYTES: u64 = 4 * 1024 * 1024;

pub struct Index {
    db: sled::Db,
    /// The digests' buckets, and the totals after them: see [`bucket`].
    blobs: sled::Tree,
    /// Mirrored repositories' ids, as the buckets' links name them.
    repos: sled::Tree,
    /// The layout before buckets, moved into them in the background: see [`legacy`].
    legacy: legacy::Legacy,
    tags: sled::Tree,
    /// `upstream/repo` of mirrored repositories upstream serves only with credentials.
    guarded: sled::Tree,
    /// Pinned images and the digests each holds: see [`pins`].
    pins: sled::Tree,
    /// Upstream's referrers answers, for offline use: see [`answers`].
    answers: sled::Tree,
    /// Private projects' trees: see [`projects`].
    project: projects::Trees,
    /// Blob uploads in progress: see [`uploads`].
    uploads: sled::Tree,
    /// Held by every change to blob records, so that a background count of the per-kind
    /// totals ([`kinds`]) or move of legacy records sees no change between listing a chunk and
    /// recording it. Those changes already conflict on the totals record, so this serializes
    /// nothing that was parallel.
    blob_writes: std::sync::Mutex<()>,
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
        let index = Index {
            blobs: db.open_tree("digests")?,
            repos: db.open_tree("repos")?,
            legacy: legacy::Legacy::open(&db)?,
            tags: db.open_tree("tags")?,
            guarded: db.open_tree("guarded")?,
            pins: db.open_tree("pins")?,
            answers: db.open_tree("answers")?,
            project: projects::Trees::open(&db)?,
            uploads: db.open_tree("uploads")?,
            blob_writes: std::sync::Mutex::new(()),
            db,
        };
        // An index from before buckets brings its totals; one from before the totals were
        // kept is counted once, and they are kept from then on.
        if !index.has_totals()? && !index.carry_legacy_totals()? {
            index.recount_totals()?;
        }
        // Per-kind totals missing from a non-empty index are counted in the background
        // (`count_kinds`), never here.
        index.start_kinds_if_empty()?;
        Ok(index)
    }

    /// The lock every change to `blobs` holds (a poisoned lock guards nothing: taken anyway).
    pub(super) fn blob_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.blob_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

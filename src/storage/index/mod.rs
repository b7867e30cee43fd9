//! The metadata index, in sled. One struct owns every tree; each tree's key encoding is
//! written out below; each tree's encoder and parser sit beside its records ([`blobs`],
//! [`mirror`]).
//!
//! | tree    | key                                   | value          |
//! |---------|---------------------------------------|----------------|
//! | `blobs` | `sha256:<hex>`                        | [`BlobRecord`] |
//! | `tags`  | `<upstream>/<repo>:<tag>`             | [`TagRecord`]  |
//! | `links` | `<upstream>/<repo>@sha256:<hex>`      | a manifest's media type, or empty |
//! | `access`| 8-byte big-endian ms timestamp ++ `sha256:<hex>` | empty |
//! | `access`| `ff×8 totals` (after every stamp)     | blob count ++ bytes, 8-byte big-endian each ([`Totals`]) |
//! | `access`| `ff×8 kinds`                          | the same per kind, while or once counted ([`kinds`]) |
//! | `guarded` | `<upstream>/<repo>`                 | empty, or `unsure` ([`Guarding`]) |
//! | `answers` | `<upstream>/<repo>@sha256:<hex>`    | upstream's referrers of that subject ([`answers`]) |
//!
//! Private projects keep their own trees, described in [`projects`]; blob uploads in progress
//! theirs, in [`uploads`]; pinned images theirs, in [`pins`].
//!
//! Upstream names contain no `/`, repository names no `:` or `@`, tags no `:`, so each key
//! splits back unambiguously. Values are JSON, so records can gain optional fields.
//! An entry in `blobs` exists only for a verified file in the blob store; `links` records which
//! mirrored repository may hold a digest (fetched through it, or confirmed by its upstream), and
//! for a manifest the media type that repository serves it with. `access` is the inverse of each blob's
//! `last_access_ms`, so that a scan in key order visits blobs least recently used first; the
//! two trees change together, in one transaction, and with them the running totals that
//! `access` ends with, so that usage and `berth cache stats` never scan the index.

mod answers;
mod blobs;
mod kinds;
mod mirror;
mod pins;
mod projects;
#[cfg(test)]
mod tests;
mod uploads;

pub use self::answers::ReferrersAnswer;
use self::blobs::insert_new_blob;
pub use self::blobs::{access_key, blob_key, parse_access_key, parse_blob_key, BlobRecord, Totals};
pub use self::kinds::KindTotals;
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
    blobs: sled::Tree,
    tags: sled::Tree,
    links: sled::Tree,
    access: sled::Tree,
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
    /// Held by every change to `blobs`, so that a background count of the per-kind totals
    /// ([`kinds`]) sees no change between listing a chunk and recording it. Changes to `blobs`
    /// already conflict on the totals record, so this serializes nothing that was parallel.
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
            blobs: db.open_tree("blobs")?,
            tags: db.open_tree("tags")?,
            links: db.open_tree("links")?,
            access: db.open_tree("access")?,
            guarded: db.open_tree("guarded")?,
            pins: db.open_tree("pins")?,
            answers: db.open_tree("answers")?,
            project: projects::Trees::open(&db)?,
            uploads: db.open_tree("uploads")?,
            blob_writes: std::sync::Mutex::new(()),
            db,
        };
        // An index from before the totals were kept: counted once, kept from then on.
        if !index.has_totals()? {
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

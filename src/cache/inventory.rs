//! What the cache holds, for `berth cache stats` and `berth cache ls`: read from the index
//! (its running totals, and one pass over the blob records), never from the blob files,
//! except the manifests of the images listed.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::Cache;
use crate::oci::{Digest, Manifest};
use crate::storage::StorageError;

/// Blobs of one kind and their bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub blobs: u64,
    pub bytes: u64,
}

/// One pinned image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinStats {
    pub image: String,
    pub digest: Digest,
    pub blobs: usize,
}

/// `berth cache stats`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Every indexed blob (the index's running totals).
    pub total: Count,
    /// Blobs stored with a manifest media type.
    pub manifests: Count,
    /// Everything else: configs and layers.
    pub layers: Count,
    /// Uploads in progress.
    pub uploads: Count,
    /// Cached tag answers of mirrored repositories.
    pub mirror_tags: u64,
    /// Repositories of private projects.
    pub project_repositories: u64,
    pub pins: Vec<PinStats>,
    /// `storage.max_size`, when set.
    pub max_bytes: Option<u64>,
    /// Whether a shared store is the store of record (these counts are this node's tier).
    pub shared_store: bool,
}

/// One cached mirror image (a tag record) for `berth cache ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedImage {
    pub upstream: String,
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    /// When upstream last confirmed the tag (ms since the Unix epoch).
    pub checked_at_ms: u64,
    /// Bytes of the image stored here (the manifest and what it references that is stored).
    pub stored_bytes: u64,
    /// Whether the manifest itself is stored.
    pub manifest_stored: bool,
}

impl Cache {
    /// What is stored, by kind. One pass over the blob records. Blocks.
    pub fn stats(&self) -> Result<CacheStats, StorageError> {
        let index = &self.storage.index;
        let mut stats = CacheStats {
            max_bytes: self.budget.max_bytes,
            shared_store: self.shared.is_some(),
            ..CacheStats::default()
        };
        let totals = index.totals()?;
        stats.total = Count {
            blobs: totals.blobs,
            bytes: totals.bytes,
        };
        match index.kind_totals()? {
            // Kept beside the totals: read, not counted.
            Some(kinds) => {
                stats.manifests = Count {
                    blobs: kinds.manifests.blobs,
                    bytes: kinds.manifests.bytes,
                };
                stats.layers = Count {
                    blobs: kinds.blobs.blobs,
                    bytes: kinds.blobs.bytes,
                };
            }
            // An older index not counted by kind yet (the upkeep thread does it once).
            None => {
                for entry in index.blobs() {
                    let (_, record) = entry?;
                    let kind = match record.media_type {
                        Some(_) => &mut stats.manifests,
                        None => &mut stats.layers,
                    };
                    kind.blobs += 1;
                    kind.bytes += record.size;
                }
            }
        }
        for (id, _) in index.uploads()? {
            stats.uploads.blobs += 1;
            stats.uploads.bytes += self.storage.blobs.upload_size(&id)?;
        }
        stats.mirror_tags = index.tag_records()?.len() as u64;
        stats.project_repositories = index.repositories()?.len() as u64;
        stats.pins = index
            .pins()?
            .into_iter()
            .map(|(image, record)| PinStats {
                image,
                digest: record.digest,
                blobs: record.blobs.len(),
            })
            .collect();
        Ok(stats)
    }

    /// Every cached tag of a mirrored repository, with what of it is stored. Reads the
    /// manifests these tags lead to. Blocks.
    pub fn cached_images(&self) -> Result<Vec<CachedImage>, StorageError> {
        let mut images = Vec::new();
        for (upstream, repo, tag, record) in self.storage.index.tag_records()? {
            let (stored_bytes, manifest_stored) = self.stored_closure(&record.digest)?;
            images.push(CachedImage {
                upstream,
                repository: repo.to_string(),
                tag: tag.to_string(),
                digest: record.digest,
                media_type: record.media_type,
                checked_at_ms: record.checked_at_ms,
                stored_bytes,
                manifest_stored,
            });
        }
        Ok(images)
    }

    /// Bytes stored of `root` and what it references (transitively), and whether `root`
    /// itself is stored.
    fn stored_closure(&self, root: &Digest) -> Result<(u64, bool), StorageError> {
        let index = &self.storage.index;
        let mut seen = HashSet::new();
        let mut next = vec![root.clone()];
        let mut bytes = 0;
        while let Some(digest) = next.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some(record) = index.blob(&digest)? else {
                continue;
            };
            bytes += record.size;
            if record.media_type.is_none() && &digest != root {
                continue;
            }
            let limit = crate::oci::media::MAX_MANIFEST_BYTES as u64;
            if record.size > limit {
                continue;
            }
            let Some(body) = self.storage.blobs.read_small(&digest, limit)? else {
                continue;
            };
            if let Ok(manifest) = Manifest::parse(&body, record.media_type.as_deref()) {
                next.extend(
                    manifest
                        .config
                        .iter()
                        .chain(&manifest.layers)
                        .chain(&manifest.manifests)
                        .map(|d| d.digest.clone()),
                );
            }
        }
        Ok((bytes, index.blob(root)?.is_some()))
    }
}

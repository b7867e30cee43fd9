//! Removing what nothing needs, on a running berth: garbage collection and dropping one
//! cached image (`berth cache rm`).
//!
//! Garbage collection runs in two passes over one scan of the stored manifests
//! (`storage::gc::scan`). The private pass ([`super::unlink`]) unlinks from each private
//! repository what the manifests still in it do not reach. The removal pass then computes what
//! is live in the whole store: the closure of the cached tag records (referrers tag-schema tags
//! included), the pins, and every manifest still in a private repository, with the referrers of
//! anything live, plus whatever a repository still links. Every other stored manifest or blob
//! goes, unless it was stored or read within the grace period.
//!
//! Removals go through [`Storage::evict_many`](crate::storage::Storage::evict_many) (a chunk of
//! digests at a time, under all their locks, one index transaction per chunk) and `drop_image`'s
//! through [`Storage::evict`](crate::storage::Storage::evict); both hold the digests' locks and
//! check private content under them; the check passed in asks again, under those locks,
//! whether the blob is being served, fetched, or was stored or read within the grace period. A push that links the blob into a project, a fill that stores it, or a read that
//! stamps it therefore either happens before the removal's check (and the blob stays) or after
//! the removal (and stores or fetches it anew).
//!
//! The grace period covers what no manifest references yet: a pull fetches a manifest's blobs
//! after it, a mirror client may fetch a child manifest by digest before anything tags it. With
//! a shared store, only this node's local tier is collected: the shared store is every node's
//! store of record, and its repository links are not this node's to remove.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Cache;
use crate::metrics;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::storage::gc;
use crate::storage::index::{now_ms, BlobRecord};
use crate::storage::StorageError;

/// Digests removed together: under all their locks, in one index transaction. Small enough
/// that a store waiting for one of those locks waits only a few milliseconds.
const REMOVAL_CHUNK: usize = 64;

/// What one garbage collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    /// Stored manifests read.
    pub manifests: usize,
    /// Stored manifests removed (deleted from their projects, or cached and no longer tagged).
    #[serde(default)]
    pub manifests_removed: usize,
    /// Repository links removed from private projects.
    #[serde(default)]
    pub links_removed: usize,
    pub blobs_kept: usize,
    /// Unreferenced, but stored, linked or read within the grace period (or in use).
    pub recent_kept: usize,
    /// Blobs (not manifests) removed.
    pub blobs_removed: usize,
    /// Bytes freed, manifests and blobs.
    pub bytes_removed: u64,
    /// With a shared store: only this node's local tier was collected.
    #[serde(default)]
    pub local_tier_only: bool,
}

/// What dropping one cached image did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// The manifest the image's name pointed at.
    pub digest: Option<Digest>,
    /// Cached tag records removed.
    pub tags_removed: usize,
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    /// The image's blobs kept because something else holds them (another cached manifest, a
    /// pin, a private project) or they are in use.
    pub blobs_shared: usize,
}

impl Cache {
    /// Collects garbage (see the module docs): private repositories lose the links their
    /// manifests no longer need, each handled under `exclusive(repo)`; then every stored
    /// manifest and blob outside the live set goes, unless it was stored, linked or read within
    /// `grace`. Blocks.
    pub fn collect_garbage<G>(
        &self,
        grace: Duration,
        exclusive: impl FnMut(&RepoName) -> G,
    ) -> Result<Collected, StorageError> {
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        let started = Instant::now();
        let mut manifests = gc::scan(&self.storage)?;
        let scanned = Instant::now();
        let mut done = Collected::default();
        if self.shared().is_some() {
            done.local_tier_only = true;
        } else {
            let unlinked = self.unlink_unreachable(&mut manifests, cutoff, exclusive)?;
            done.links_removed = unlinked.links_removed;
            done.recent_kept = unlinked.recent_kept;
        }
        let unlinked = Instant::now();
        done.manifests = manifests.children.len();
        let live = self.live_set(&mut manifests)?;
        let marked = Instant::now();
        let entries: Vec<_> = self
            .storage
            .index
            .blobs()
            .collect::<Result<_, _>>()
            .map_err(StorageError::from)?;
        let mut candidates = Vec::new();
        for (digest, record) in entries {
            if live.contains(&digest) {
                done.blobs_kept += 1;
            } else if record.last_access_ms > cutoff {
                done.recent_kept += 1;
            } else {
                candidates.push(digest);
            }
        }
        let candidates_len = candidates.len();
        // Asked again under the digests' locks: a read, store or link since the scan counts.
        let spare = |digest: &Digest| {
            let recent = match self.storage.index.blob(digest) {
                Ok(Some(now)) => now.last_access_ms > cutoff,
                _ => true,
            };
            recent || self.usage.is_serving(digest) || self.is_in_flight(digest)
        };
        // Out of the in-memory caches as soon as each chunk is off the index and the disk.
        let gone = |removed: &[(Digest, BlobRecord)]| {
            for (digest, record) in removed {
                self.forget(digest, record.size);
            }
        };
        let removed = self
            .storage
            .evict_many(candidates, REMOVAL_CHUNK, spare, gone)?;
        done.recent_kept += candidates_len - removed.len();
        for (digest, record) in removed {
            match manifests.contains(&digest) {
                true => done.manifests_removed += 1,
                false => done.blobs_removed += 1,
            }
            done.bytes_removed += record.size;
        }
        let removed = Instant::now();
        self.storage.index.flush()?;
        tracing::debug!(
            scan_ms = ms(scanned - started),
            unlink_ms = ms(unlinked - scanned),
            mark_ms = ms(marked - unlinked),
            remove_ms = ms(removed - marked),
            flush_ms = ms(removed.elapsed()),
            "garbage collection phases"
        );
        metrics::inc(&self.metrics.gc_runs);
        metrics::add(&self.metrics.gc_blobs_removed, done.blobs_removed as u64);
        metrics::add(
            &self.metrics.gc_manifests_removed,
            done.manifests_removed as u64,
        );
        metrics::add(&self.metrics.gc_bytes_removed, done.bytes_removed);
        Ok(done)
    }

    /// What the whole store keeps: the closure of the cached tags, the pins and the manifests
    /// of private repositories (with referrers of anything live), and what a repository links.
    fn live_set(&self, manifests: &mut gc::Manifests) -> Result<HashSet<Digest>, StorageError> {
        let index = &self.storage.index;
        let mut roots: Vec<Digest> = index
            .tag_records()?
            .into_iter()
            .map(|(.., record)| record.digest)
            .collect();
        for (_, pin) in index.pins()? {
            roots.push(pin.digest);
            roots.extend(pin.blobs);
        }
        for record in index.repo_manifest_records() {
            let (_, digest, _) = record?;
            manifests.add(&self.storage, &digest)?;
            roots.push(digest);
        }
        let mut live = manifests.live(&roots);
        for link in index.timed_links() {
            live.insert(link?.digest);
        }
        Ok(live)
    }

    /// Drops the cached image `upstream/repo` at `reference`: the tag record (for a digest,
    /// every cached tag of `repo` pointing at it), the manifest, and what it references (an
    /// index's manifests, their configs and layers) that nothing else holds: no other cached
    /// manifest or tag, no pin, no private project, no request in progress. `None` when the
    /// image is not cached. Blocks.
    pub fn drop_image(
        &self,
        upstream: &str,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Dropped>, StorageError> {
        let mut dropped = Dropped::default();
        let root = match reference {
            Reference::Tag(tag) => match self.tag(upstream, repo, tag)? {
                Some(record) => record.digest,
                None => return Ok(None),
            },
            Reference::Digest(digest) => digest.clone(),
        };
        for (u, r, tag, record) in self.storage.index.tag_records()? {
            if u == upstream && &r == repo && record.digest == root {
                self.remove_tag(upstream, repo, &tag)?;
                dropped.tags_removed += 1;
            }
        }
        if dropped.tags_removed == 0 && self.storage.index.blob(&root)?.is_none() {
            return Ok(None);
        }
        dropped.digest = Some(root.clone());
        let manifests = gc::scan(&self.storage)?;
        let image = manifests.closure([&root]);
        let mut holders: Vec<Digest> = manifests
            .children
            .keys()
            .filter(|m| !image.contains(*m))
            .cloned()
            .collect();
        holders.extend(
            self.storage
                .index
                .tag_records()?
                .into_iter()
                .map(|(.., record)| record.digest),
        );
        let mut held: HashSet<Digest> = manifests.closure(&holders);
        held.extend(self.storage.index.pinned_blobs()?);
        for digest in &image {
            if held.contains(digest) {
                dropped.blobs_shared += 1;
                continue;
            }
            let spare = || self.usage.is_serving(digest) || self.is_in_flight(digest);
            match self.storage.evict(digest, spare)? {
                Some(removed) => {
                    self.forget(digest, removed.size);
                    dropped.blobs_removed += 1;
                    dropped.bytes_removed += removed.size;
                }
                // Not stored (never pulled), private, or in use.
                None => {
                    if self.storage.index.blob(digest)?.is_some() {
                        dropped.blobs_shared += 1;
                    }
                }
            }
        }
        self.storage.index.flush()?;
        Ok(Some(dropped))
    }

    /// Drops every cached tag of `upstream/repo` (`berth cache rm alpine`, no tag named), one
    /// image after another as [`Cache::drop_image`] does; `None` when none is cached. Blocks.
    pub fn drop_repository(
        &self,
        upstream: &str,
        repo: &RepoName,
    ) -> Result<Option<Dropped>, StorageError> {
        let tags: Vec<Tag> = self
            .storage
            .index
            .tag_records()?
            .into_iter()
            .filter(|(u, r, ..)| u == upstream && r == repo)
            .map(|(.., tag, _)| tag)
            .collect();
        let mut total: Option<Dropped> = None;
        for tag in tags {
            // An earlier drop removes every tag naming the same manifest.
            if let Some(one) = self.drop_image(upstream, repo, &Reference::Tag(tag))? {
                let sum = total.get_or_insert_with(Dropped::default);
                sum.tags_removed += one.tags_removed;
                sum.blobs_removed += one.blobs_removed;
                sum.bytes_removed += one.bytes_removed;
                // What the last drop kept, other cached images, pins or projects hold.
                sum.blobs_shared = one.blobs_shared;
            }
        }
        Ok(total)
    }
}

fn ms(took: Duration) -> u64 {
    took.as_millis() as u64
}

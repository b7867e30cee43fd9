//! Removing what nothing needs, on a running berth: garbage collection (blobs no manifest
//! references) and dropping one cached image (`berth cache rm`).
//!
//! Both decide from a scan of the stored manifests (`storage::gc::scan`), then remove each
//! candidate through [`Storage::evict`](crate::storage::Storage::evict), which holds the
//! digest's lock and checks private content under it; the check passed in asks again, under
//! that lock, whether the blob is being served, fetched, pinned, or (for gc) was stored or
//! read within the grace period. A push that links the blob into a project, a fill that stores
//! it, or a read that stamps it therefore either happens before the removal's check (and the
//! blob stays) or after the removal (and stores or fetches it anew).
//!
//! Concurrent pushes are protected by the grace period, not by reading uploads: berth links a
//! pushed blob to its project when its upload finishes, so it is private from then on, but a
//! blob a client reads or stores just before pushing a manifest that references it is
//! referenced by nothing until that manifest arrives. Anything that recent is left for the next
//! run. With a shared store, only this node's local tier is collected.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Cache;
use crate::metrics;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::storage::gc;
use crate::storage::index::now_ms;
use crate::storage::StorageError;

/// What one garbage collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    /// Stored manifests read (every one is kept).
    pub manifests: usize,
    pub blobs_kept: usize,
    /// Unreferenced, but stored, linked or read within the grace period (or in use).
    pub recent_kept: usize,
    pub blobs_removed: usize,
    pub bytes_removed: u64,
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
    /// Removes every stored blob that no stored manifest references, no pin holds and no
    /// private project owns, unless it was stored, linked or read within `grace`. Manifests
    /// themselves stay (`berth cache rm` drops images). Blocks.
    pub fn collect_garbage(&self, grace: Duration) -> Result<Collected, StorageError> {
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        let manifests = gc::scan(&self.storage)?;
        let referenced = manifests.referenced();
        let pinned = self.storage.index.pinned_blobs()?;
        let mut done = Collected {
            manifests: manifests.children.len(),
            ..Collected::default()
        };
        let entries: Vec<_> = self
            .storage
            .index
            .blobs()
            .collect::<Result<_, _>>()
            .map_err(StorageError::from)?;
        for (digest, record) in entries {
            if manifests.contains(&digest)
                || referenced.contains(&digest)
                || pinned.contains(&digest)
            {
                done.blobs_kept += 1;
                continue;
            }
            // Asked again under the digest's lock: a read, store or link since the scan counts.
            let spare = || {
                let recent = match self.storage.index.blob(&digest) {
                    Ok(Some(now)) => now.last_access_ms > cutoff,
                    _ => true,
                };
                recent || self.usage.is_serving(&digest) || self.is_in_flight(&digest)
            };
            if record.last_access_ms > cutoff {
                done.recent_kept += 1;
                continue;
            }
            match self.storage.evict(&digest, spare)? {
                Some(removed) => {
                    self.forget(&digest, removed.size);
                    done.blobs_removed += 1;
                    done.bytes_removed += removed.size;
                }
                None => done.recent_kept += 1,
            }
        }
        self.storage.index.flush()?;
        metrics::inc(&self.metrics.gc_runs);
        metrics::add(&self.metrics.gc_blobs_removed, done.blobs_removed as u64);
        metrics::add(&self.metrics.gc_bytes_removed, done.bytes_removed);
        Ok(done)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::evict::Budget;
    use crate::oci::media;
    use crate::storage::index::{BlobRecord, PinRecord, TagRecord};
    use crate::storage::Storage;

    struct Fixture {
        _dir: tempfile::TempDir,
        cache: Cache,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let storage = Storage::open(dir.path()).unwrap();
            let cache = Cache::new(
                Arc::new(storage),
                Arc::default(),
                1 << 20,
                Budget::unlimited(),
                0,
            );
            Fixture { _dir: dir, cache }
        }

        /// Stores `data`, last used `age_ms` ago.
        fn put(&self, data: &[u8], media_type: Option<&str>, age_ms: u64) -> Digest {
            let storage = self.cache.storage();
            let digest = Digest::of(data);
            storage.blobs.write_verified(&digest, data).unwrap();
            let mut record = BlobRecord::new(data.len() as u64, media_type.map(str::to_owned));
            record.last_access_ms -= age_ms;
            storage.index.put_blob(&digest, &record).unwrap();
            digest
        }

        fn manifest(&self, blobs: &[&Digest]) -> Digest {
            let layers: Vec<_> = blobs
                .iter()
                .map(|d| format!(r#"{{"digest":"{d}"}}"#))
                .collect();
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"{}"}},"layers":[{}]}}"#,
                media::OCI_MANIFEST,
                blobs[0],
                layers[1..].join(",")
            );
            self.put(body.as_bytes(), Some(media::OCI_MANIFEST), HOUR)
        }

        fn tag(&self, repo: &str, tag: &str, digest: &Digest) {
            let record = TagRecord {
                digest: digest.clone(),
                media_type: media::OCI_MANIFEST.into(),
                checked_at_ms: now_ms(),
            };
            let (repo, tag) = (repo.parse().unwrap(), tag.parse().unwrap());
            self.cache
                .storage()
                .index
                .put_tag("docker.io", &repo, &tag, &record)
                .unwrap();
        }

        fn stored(&self, digest: &Digest) -> bool {
            self.cache.blob_size(digest).unwrap().is_some()
                && self.cache.storage().blobs.path(digest).exists()
        }
    }

    const HOUR: u64 = 3_600_000;

    #[test]
    fn gc_spares_what_is_referenced_pinned_private_recent_or_in_use() {
        let f = Fixture::new();
        let config = f.put(b"config", None, HOUR);
        let layer = f.put(b"layer", None, HOUR);
        f.manifest(&[&config, &layer]);
        let old = f.put(b"old orphan", None, HOUR);
        let recent = f.put(b"recent orphan", None, 10);
        let pinned = f.put(b"pinned orphan", None, HOUR);
        let served = f.put(b"served orphan", None, HOUR);
        let private = f.put(b"private orphan", None, HOUR);
        let pin = PinRecord {
            digest: pinned.clone(),
            blobs: vec![pinned.clone()],
            seeded_ms: 1,
        };
        f.cache.storage().index.put_pin("x:1", &pin).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        f.cache
            .storage()
            .index
            .link_repo_blob(&repo, &private)
            .unwrap();
        let guard = crate::cache::evict::ServingGuard::new(&f.cache.usage, &served);

        let done = f.cache.collect_garbage(Duration::from_secs(60)).unwrap();
        assert_eq!(done.blobs_removed, 1, "{done:?}");
        assert_eq!(done.bytes_removed, 10);
        assert_eq!(done.manifests, 1);
        assert!(!f.stored(&old));
        for kept in [&config, &layer, &recent, &pinned, &served, &private] {
            assert!(f.stored(kept), "{kept} removed");
        }
        assert_eq!(
            f.cache
                .metrics()
                .gc_bytes_removed
                .load(std::sync::atomic::Ordering::Relaxed),
            10
        );
        drop(guard);
        // No grace, nothing served: only what something holds stays.
        let done = f.cache.collect_garbage(Duration::ZERO).unwrap();
        assert_eq!(done.blobs_removed, 2, "{done:?}");
        assert!(!f.stored(&recent) && !f.stored(&served));
    }

    #[test]
    fn rm_drops_the_image_and_what_only_it_holds() {
        let f = Fixture::new();
        let (c1, c2) = (
            f.put(b"config 1", None, HOUR),
            f.put(b"config 2", None, HOUR),
        );
        let own = f.put(b"own layer", None, HOUR);
        let shared = f.put(b"shared layer", None, HOUR);
        let one = f.manifest(&[&c1, &own, &shared]);
        let two = f.manifest(&[&c2, &shared]);
        f.tag("library/app", "1", &one);
        f.tag("library/app", "latest", &one);
        f.tag("library/app", "2", &two);
        let repo: RepoName = "library/app".parse().unwrap();
        let tag = Reference::Tag("1".parse().unwrap());

        let dropped = f
            .cache
            .drop_image("docker.io", &repo, &tag)
            .unwrap()
            .unwrap();
        assert_eq!(dropped.tags_removed, 2, "both tags of the digest go");
        assert_eq!(dropped.blobs_removed, 3, "{dropped:?}");
        assert_eq!(dropped.blobs_shared, 1);
        for gone in [&one, &c1, &own] {
            assert!(!f.stored(gone));
        }
        for kept in [&two, &c2, &shared] {
            assert!(f.stored(kept));
        }
        assert!(f
            .cache
            .drop_image("docker.io", &repo, &tag)
            .unwrap()
            .is_none());
        let two_tag = Reference::Tag("2".parse().unwrap());
        let dropped = f
            .cache
            .drop_image("docker.io", &repo, &two_tag)
            .unwrap()
            .unwrap();
        assert_eq!(dropped.blobs_removed, 3);
        assert!(!f.stored(&shared));
    }
}

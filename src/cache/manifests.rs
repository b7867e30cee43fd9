//! The manifest side of the cache: verified manifests, hot in moka and read back from disk.

use std::sync::Arc;

use bytes::Bytes;

use super::{blocking, Cache, DIGEST_BYTES};
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, Manifest};
use crate::storage::index::{BlobRecord, PushedManifest};
use crate::storage::StorageError;

/// A verified manifest as stored.
#[derive(Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
    /// The body read as a manifest, once, when it was stored or read back from disk (serving
    /// it never reads it again); `None` for bytes the model rejects, which the mirror passes
    /// through as they came.
    pub parsed: Option<Arc<Manifest>>,
}

impl StoredManifest {
    /// Roughly what it takes in memory, for the hot copies' bound.
    pub fn heap_bytes(&self) -> usize {
        self.body.len()
            + self.media_type.len()
            + 2 * DIGEST_BYTES
            + self.parsed.as_ref().map_or(0, |m| m.heap_bytes())
    }

    /// The manifest as one repository serves it: the same bytes, with the media type that
    /// repository recorded for them (another repository may have pushed them as another type).
    pub fn served_as(self: &Arc<Self>, media_type: &str) -> Arc<Self> {
        if media_type.is_empty() || media_type == self.media_type {
            return Arc::clone(self);
        }
        Arc::new(StoredManifest {
            digest: self.digest.clone(),
            media_type: media_type.to_owned(),
            body: self.body.clone(),
            parsed: self.parsed.clone(),
        })
    }
}

impl Cache {
    /// A stored manifest, from memory or disk (verified again when read from disk).
    pub async fn manifest(
        &self,
        digest: &Digest,
    ) -> Result<Option<Arc<StoredManifest>>, StorageError> {
        if let Some(hot) = self.manifests.get(digest) {
            return Ok(Some(hot));
        }
        let Some(record) = self.storage.index.blob(digest)? else {
            return Ok(None);
        };
        // Too large to be a manifest: a layer.
        if record.size > MAX_MANIFEST_BYTES as u64 {
            return Ok(None);
        }
        let storage = Arc::clone(&self.storage);
        let d = digest.clone();
        let body =
            blocking(move || storage.blobs.read_small(&d, MAX_MANIFEST_BYTES as u64)).await?;
        let Some(body) = body.filter(|b| Digest::of(b) == *digest) else {
            tracing::warn!(%digest, "stored manifest is missing or corrupt; dropping it");
            // The file stays until a store replaces it or reconciliation removes it: without
            // an entry it is never served.
            if let Some(dropped) = self.storage.index.remove_blob(digest)? {
                self.forget(digest, dropped.size);
            }
            return Ok(None);
        };
        // Recovery re-indexes files without knowing what they are; a manifest tells by itself.
        let (media_type, parsed) = match record.media_type {
            Some(media_type) => {
                let parsed = Manifest::parse(&body, Some(&media_type)).ok();
                (media_type, parsed)
            }
            None => {
                let Ok(parsed) = Manifest::parse(&body, None) else {
                    return Ok(None);
                };
                let media_type = parsed.media_type.clone();
                self.storage.index.put_blob(
                    digest,
                    &BlobRecord::new(record.size, Some(media_type.clone())),
                )?;
                (media_type, Some(parsed))
            }
        };
        let manifest = Arc::new(StoredManifest {
            digest: digest.clone(),
            media_type,
            body: Bytes::from(body),
            parsed: parsed.map(Arc::new),
        });
        self.manifests.insert(digest.clone(), Arc::clone(&manifest));
        Ok(Some(manifest))
    }

    /// Stores a manifest whose digest the caller computed from `body`.
    pub async fn put_manifest(
        self: &Arc<Self>,
        manifest: StoredManifest,
    ) -> Result<Arc<StoredManifest>, StorageError> {
        let manifest = Arc::new(manifest);
        if self.storage.index.blob(&manifest.digest)?.is_none() {
            let storage = Arc::clone(&self.storage);
            let m = Arc::clone(&manifest);
            // Durable before the client hears of it, like the blob file itself.
            let new = blocking(move || {
                storage.store_bytes(&m.digest, &m.body, Some(m.media_type.clone()))
            })
            .await?;
            self.stored(manifest.body.len() as u64, new);
        }
        self.manifests
            .insert(manifest.digest.clone(), Arc::clone(&manifest));
        Ok(manifest)
    }

    /// Stores a pushed manifest (digest computed from `body`, and `body` parsed, by the caller)
    /// and records it in its repository, in one step that eviction cannot come between.
    pub async fn put_pushed_manifest(
        self: &Arc<Self>,
        pushed: PushedManifest<'_>,
        body: Bytes,
        parsed: Arc<Manifest>,
    ) -> Result<(), StorageError> {
        let storage = Arc::clone(&self.storage);
        let size = body.len() as u64;
        // The blocking pool needs owned values: the borrowed record is rebuilt on its side.
        let (repo, digest, media_type) = (
            pushed.repo.clone(),
            pushed.digest.clone(),
            pushed.media_type.to_owned(),
        );
        let (tag, referrer) = (
            pushed.tag.cloned(),
            pushed.referrer.map(|(s, r)| (s.clone(), r.clone())),
        );
        let stored_body = body.clone();
        let new = blocking(move || {
            let pushed = PushedManifest {
                repo: &repo,
                digest: &digest,
                media_type: &media_type,
                size,
                tag: tag.as_ref(),
                referrer: referrer.as_ref().map(|(s, r)| (s, r)),
            };
            storage.store_pushed_manifest(&pushed, &stored_body)
        })
        .await?;
        self.stored(size, new);
        let manifest = StoredManifest {
            digest: pushed.digest.clone(),
            media_type: pushed.media_type.to_owned(),
            body,
            parsed: Some(parsed),
        };
        self.manifests
            .insert(manifest.digest.clone(), Arc::new(manifest));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::evict::Budget;
    use crate::storage::Storage;

    #[tokio::test]
    async fn hot_manifests_are_bounded_in_bytes_and_the_rest_is_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let budget = Budget {
            max_bytes: None,
            low_water_percent: 90,
        };
        // 8 MiB of memory: 6 MiB for manifests, where 32 manifests of 1 MiB do not fit.
        let cache = Arc::new(Cache::new(
            Arc::new(storage),
            Arc::default(),
            8 << 20,
            budget,
            0,
        ));
        let mut digests = Vec::new();
        for i in 0..32u8 {
            let mut body = format!("{{\"schemaVersion\":2,\"n\":{i},\"pad\":\"").into_bytes();
            body.resize(1 << 20, b'x');
            body.extend_from_slice(b"\"}");
            let digest = Digest::of(&body);
            cache
                .put_manifest(StoredManifest {
                    digest: digest.clone(),
                    media_type: crate::oci::media::OCI_MANIFEST.to_owned(),
                    body: Bytes::from(body),
                    parsed: None,
                })
                .await
                .unwrap();
            digests.push(digest);
        }
        for _ in 0..4 {
            cache.manifests.run_pending_tasks();
        }
        assert!(cache.manifests.weighted_size() <= 6 << 20);
        assert!(cache.manifests.entry_count() <= 6);
        // What memory could not keep is still there, from disk.
        for digest in &digests {
            let manifest = cache.manifest(digest).await.unwrap().unwrap();
            assert_eq!(&manifest.digest, digest);
        }
    }

    /// Recovery indexes files without a media type: read back, a manifest is told by the model
    /// (and kept parsed), and anything else is not a manifest.
    #[tokio::test]
    async fn recovered_manifests_are_told_by_their_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path()).unwrap());
        let budget = Budget {
            max_bytes: None,
            low_water_percent: 90,
        };
        let cache = Cache::new(Arc::clone(&storage), Arc::default(), 1 << 20, budget, 0);
        let config = Digest::of(b"{}");
        let image =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{config}"}},"layers":[]}}"#);
        for body in [image.as_bytes(), b"{}", b"layer bytes"] {
            storage.store_bytes(&Digest::of(body), body, None).unwrap();
        }

        let manifest = cache.manifest(&Digest::of(image.as_bytes())).await.unwrap();
        let manifest = manifest.expect("an image manifest");
        assert_eq!(manifest.media_type, crate::oci::media::OCI_MANIFEST);
        assert_eq!(manifest.parsed.as_ref().unwrap().pulled_blobs(), [config]);
        let record = storage.index.blob(&manifest.digest).unwrap().unwrap();
        assert_eq!(
            record.media_type.as_deref(),
            Some(crate::oci::media::OCI_MANIFEST)
        );
        for other in [&b"{}"[..], b"layer bytes"] {
            assert!(cache.manifest(&Digest::of(other)).await.unwrap().is_none());
        }
    }
}

//! Prefetch: a client's GET of an image manifest starts fetching the image's config and layers
//! into the cache, in the order clients ask for them and a few at a time.
//!
//! A client that copies layers one after another (skopeo, buildah) then finds each next layer
//! in flight or stored, instead of waiting for it to come from upstream in its turn; a client
//! that asks for a layer being prefetched joins that fill like any other. Only GETs count: a
//! HEAD (how update bots check tags) fetches nothing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use moka::sync::Cache;
use tokio::sync::Semaphore;

use super::{Mirror, PARALLEL_BLOBS};
use crate::cache::StoredManifest;
use crate::metrics;
use crate::oci::media;
use crate::oci::Digest;
use crate::registry::namespace::MirrorRepo;

/// Blobs prefetch may be fetching at once across every image, so a burst of manifest GETs
/// (a CI fleet starting) cannot open an unbounded number of upstream connections.
const MAX_BLOBS: usize = 8;
/// A manifest prefetched within this window is not walked again on its next GET.
const RECENT_TTL: Duration = Duration::from_secs(600);

pub struct Prefetcher {
    enabled: bool,
    /// Manifests walked recently (or being walked).
    recent: Cache<Digest, ()>,
    permits: Arc<Semaphore>,
}

impl Prefetcher {
    pub fn new(enabled: bool) -> Self {
        Prefetcher {
            enabled,
            recent: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(RECENT_TTL)
                .build(),
            permits: Arc::new(Semaphore::new(MAX_BLOBS)),
        }
    }
}

impl Mirror {
    /// A client GOT `manifest` of `target`: fetch its blobs in the background, unless they
    /// were fetched for it recently. Returns at once.
    pub fn prefetch(&self, target: &MirrorRepo, manifest: &StoredManifest) {
        let prefetcher = &self.prefetcher;
        // An index names platform manifests, which are what clients GET next.
        if !prefetcher.enabled
            || target.upstream.is_offline()
            || media::is_index(&manifest.media_type)
        {
            return;
        }
        // Every manifest GET passes here: the common answer (walked already) must stay a
        // lookup that records nothing.
        if prefetcher.recent.contains_key(&manifest.digest) {
            return;
        }
        let claim = prefetcher
            .recent
            .entry(manifest.digest.clone())
            .or_insert(());
        if !claim.is_fresh() {
            return;
        }
        let blobs = manifest
            .parsed
            .as_ref()
            .map(|parsed| parsed.pulled_blobs())
            .unwrap_or_default();
        let this = self.clone();
        let target = target.clone();
        let digest = manifest.digest.clone();
        tokio::spawn(async move {
            let walked = futures_util::stream::iter(blobs)
                .map(|blob| this.prefetch_blob(&target, blob))
                .buffered(PARALLEL_BLOBS)
                .fold(true, |all, ok| async move { all && ok })
                .await;
            if !walked {
                // The next GET may try again.
                this.prefetcher.recent.invalidate(&digest);
            }
        });
    }

    /// Whether `blob` is stored now (it may have been already).
    async fn prefetch_blob(&self, target: &MirrorRepo, blob: Digest) -> bool {
        let Ok(_permit) = Arc::clone(&self.prefetcher.permits).acquire_owned().await else {
            return false;
        };
        let metrics = self.cache.metrics();
        match self.ensure_blob(target, &blob).await {
            Ok(true) => {
                metrics::inc(&metrics.prefetched_blobs);
                true
            }
            Ok(false) => true,
            Err(e) => {
                metrics::inc(&metrics.prefetch_failures);
                tracing::debug!(repo = %target.repo, %blob, error = %e, "prefetch could not fetch a blob");
                false
            }
        }
    }
}

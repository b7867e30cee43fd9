//! Pinned images: fetched in full before anyone pulls them, refreshed on a timer, never
//! evicted. This is how an air-gapped site is seeded ahead of time, and how a site keeps the
//! images it cannot do without from being pushed out by a burst of others.
//!
//! A pin is written the way clients write an image (`alpine:3.20`, `ghcr.io/org/tool@sha256:…`),
//! an [`ImageReference`] parsed when the configuration is loaded.
//! Each successful seed records every digest the image holds (see
//! [`crate::storage::index::PinRecord`]); eviction and gc spare those. A pin that fails keeps
//! its last record, so what is cached stays protected while upstream is away.
//!
//! A pin brings its referrers (signatures, SBOMs, attestations: see `mirror::attached`), and
//! its record holds them too, so they are kept and answered offline like the image; new ones
//! upstream are picked up at the next refresh. When the image is seeded but its referrers
//! cannot be, the record keeps what it held before beside the new image, and the pin counts as
//! failed (so it is retried sooner).
//!
//! Seeding runs only inside the daemon: its progress is one log line per image.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::error::storage_error;
use super::error::RegistryError;
use super::namespace::MirrorRepo;
use super::Registry;
use crate::metrics;
use crate::oci::{Digest, ImageReference};
use crate::storage::index::{now_ms, PinRecord, IMPORTED_PIN};

/// First retry after a pin failed to seed; doubled on every failure, up to the refresh period.
const FIRST_RETRY: Duration = Duration::from_secs(15);

/// A pin now complete in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededPin {
    /// What the pin's reference resolved to.
    pub digest: Digest,
    /// Digests the pin's record holds: the image's and its referrers'.
    pub holds: usize,
    /// Referrer manifests brought along.
    pub referrers: usize,
}

/// What to keep pinned, and how.
#[derive(Debug, Clone)]
pub struct PinPlan {
    /// As configured (`mirror.pinned`), parsed at load.
    pub pins: Vec<ImageReference>,
    /// Platforms of a multi-platform image to fetch; empty for all.
    pub platforms: Vec<String>,
    pub refresh: Duration,
}

impl Registry {
    /// Checks every pin names a configured upstream and a valid repository, and forgets the
    /// records of pins no longer configured (their content becomes evictable again); the
    /// records of imported images stay.
    pub fn prepare_pins(
        &self,
        plan: &PinPlan,
    ) -> Result<Vec<(ImageReference, MirrorRepo)>, RegistryError> {
        let resolved = plan
            .pins
            .iter()
            .map(|pin| Ok((pin.clone(), self.resolve(&pin.name(), None)?)))
            .collect::<Result<Vec<_>, RegistryError>>()?;
        let index = &self.cache().storage().index;
        let mut released = 0;
        for (text, _) in index.pins().map_err(storage_error)? {
            // Imported images are pinned by their import, not by the configuration.
            let imported = text.starts_with(IMPORTED_PIN);
            if !imported && !plan.pins.iter().any(|p| p.as_str() == text) {
                index.remove_pin(&text).map_err(storage_error)?;
                released += 1;
                tracing::info!(pin = %text, "no longer pinned; its content may be evicted");
            }
        }
        if released > 0 {
            index.flush().map_err(storage_error)?;
        }
        Ok(resolved)
    }

    /// Fetches one pinned image in full, with its referrers, and records what it holds.
    pub async fn seed_pin(
        &self,
        pin: &ImageReference,
        target: &MirrorRepo,
        platforms: &[String],
    ) -> Result<SeededPin, RegistryError> {
        let seeded = self.mirror.seed(target, pin.reference(), platforms).await?;
        let mut blobs = seeded.holds;
        let attached = self.mirror.seed_referrers(target, &seeded.manifests).await;
        let index = &self.cache().storage().index;
        let referrers = match &attached {
            Ok(attached) => {
                let held: HashSet<&Digest> = blobs.iter().collect();
                let more: Vec<Digest> = attached
                    .holds
                    .iter()
                    .filter(|d| !held.contains(d))
                    .cloned()
                    .collect();
                blobs.extend(more);
                attached.referrers.len()
            }
            Err(e) => {
                tracing::warn!(pin = %pin, error = %e, "cannot bring the pinned image's referrers; keeping what the pin held before");
                let before = index.pin(pin.as_str()).map_err(storage_error)?;
                let held: HashSet<Digest> = blobs.iter().cloned().collect();
                let kept = before.into_iter().flat_map(|record| record.blobs);
                blobs.extend(kept.filter(|d| !held.contains(d)));
                0
            }
        };
        let record = PinRecord {
            digest: seeded.digest.clone(),
            blobs,
            seeded_ms: now_ms(),
        };
        index
            .put_pin(pin.as_str(), &record)
            .map_err(storage_error)?;
        index.flush_async().await.map_err(storage_error)?;
        attached?;
        Ok(SeededPin {
            digest: seeded.digest,
            holds: record.blobs.len(),
            referrers,
        })
    }
}

/// Seeds every pin now, then again every `plan.refresh`; after a failure, sooner.
pub async fn keep_pinned(
    registry: Arc<Registry>,
    pins: Vec<(ImageReference, MirrorRepo)>,
    plan: PinPlan,
) {
    let mut retry = FIRST_RETRY;
    loop {
        let mut failed = 0;
        for (pin, target) in &pins {
            match registry.seed_pin(pin, target, &plan.platforms).await {
                Ok(seeded) => {
                    metrics::inc(&registry.metrics().pin_seeds);
                    tracing::info!(pin = %pin, digest = %seeded.digest, blobs = seeded.holds, referrers = seeded.referrers, "pinned image is cached in full, with its referrers");
                }
                Err(e) => {
                    failed += 1;
                    metrics::inc(&registry.metrics().pin_failures);
                    tracing::warn!(pin = %pin, error = %e, "cannot cache pinned image; retrying");
                }
            }
        }
        let wait = if failed == 0 {
            retry = FIRST_RETRY;
            plan.refresh
        } else {
            let wait = retry.min(plan.refresh);
            retry = (retry * 2).min(plan.refresh);
            wait
        };
        tokio::time::sleep(wait).await;
    }
}

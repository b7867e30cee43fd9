//! Pinned images: fetched in full before anyone pulls them, refreshed on a timer, never
//! evicted. This is how an air-gapped site is seeded ahead of time, and how a site keeps the
//! images it cannot do without from being pushed out by a burst of others.
//!
//! A pin is written the way clients write an image (`alpine:3.20`, `ghcr.io/org/tool@sha256:…`).
//! Each successful seed records every digest the image holds (see
//! [`crate::storage::index::PinRecord`]); eviction and gc spare those. A pin that fails keeps
//! its last record, so what is cached stays protected while upstream is away.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::error::storage_error;
use super::error::RegistryError;
use super::mirror::SeededImage;
use super::namespace::MirrorRepo;
use super::Registry;
use crate::metrics;
use crate::oci::ErrorCode;
use crate::oci::{Reference, Tag};
use crate::storage::index::{now_ms, PinRecord};

/// First retry after a pin failed to seed; doubled on every failure, up to the refresh period.
const FIRST_RETRY: Duration = Duration::from_secs(15);

/// An image reference as configured: a client-style name and a tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinSpec {
    /// As configured; the key of its record.
    pub text: String,
    pub name: String,
    pub reference: Reference,
}

impl FromStr for PinSpec {
    type Err = RegistryError;

    /// `name`, `name:tag` or `name@sha256:…`; a name's first component may be a registry host
    /// with a port, so the tag is what follows a `:` after the last `/`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (name, reference) = match text.split_once('@') {
            Some((name, digest)) => {
                // `name:tag@digest` names the digest; the tag is only a label.
                let name = strip_tag(name).0;
                (name, Reference::Digest(digest.parse()?))
            }
            None => match strip_tag(text) {
                (name, Some(tag)) => (name, Reference::Tag(tag.parse()?)),
                (name, None) => (name, Reference::Tag(Tag::from_str("latest")?)),
            },
        };
        if name.is_empty() {
            return Err(RegistryError::new(
                ErrorCode::NameInvalid,
                format!("pinned image {text:?} has no name"),
            ));
        }
        Ok(PinSpec {
            text: text.to_owned(),
            name: name.to_owned(),
            reference,
        })
    }
}

fn strip_tag(name: &str) -> (&str, Option<&str>) {
    let last_component = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_component..].rfind(':') {
        Some(i) => (
            &name[..last_component + i],
            Some(&name[last_component + i + 1..]),
        ),
        None => (name, None),
    }
}

/// What to keep pinned, and how.
#[derive(Debug, Clone)]
pub struct PinPlan {
    pub pins: Vec<PinSpec>,
    /// Platforms of a multi-platform image to fetch; empty for all.
    pub platforms: Vec<String>,
    pub refresh: Duration,
}

impl Registry {
    /// Checks every pin names a configured upstream and a valid repository, and forgets the
    /// records of pins no longer configured (their content becomes evictable again).
    pub fn prepare_pins(
        &self,
        plan: &PinPlan,
    ) -> Result<Vec<(PinSpec, MirrorRepo)>, RegistryError> {
        let resolved = plan
            .pins
            .iter()
            .map(|pin| Ok((pin.clone(), self.resolve(&pin.name, None)?)))
            .collect::<Result<Vec<_>, RegistryError>>()?;
        let index = &self.cache().storage().index;
        let mut released = 0;
        for (text, _) in index.pins().map_err(storage_error)? {
            if !plan.pins.iter().any(|p| p.text == text) {
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

    /// Fetches one pinned image in full and records what it holds.
    pub async fn seed_pin(
        &self,
        pin: &PinSpec,
        target: &MirrorRepo,
        platforms: &[String],
    ) -> Result<SeededImage, RegistryError> {
        let seeded = self.mirror.seed(target, &pin.reference, platforms).await?;
        let record = PinRecord {
            digest: seeded.digest.clone(),
            blobs: seeded.holds.clone(),
            seeded_ms: now_ms(),
        };
        let index = &self.cache().storage().index;
        index.put_pin(&pin.text, &record).map_err(storage_error)?;
        index.flush_async().await.map_err(storage_error)?;
        Ok(seeded)
    }
}

/// Seeds every pin now, then again every `plan.refresh`; after a failure, sooner.
pub async fn keep_pinned(registry: Arc<Registry>, pins: Vec<(PinSpec, MirrorRepo)>, plan: PinPlan) {
    let mut retry = FIRST_RETRY;
    loop {
        let mut failed = 0;
        for (pin, target) in &pins {
            match registry.seed_pin(pin, target, &plan.platforms).await {
                Ok(seeded) => {
                    metrics::inc(&registry.metrics().pin_seeds);
                    tracing::info!(pin = %pin.text, digest = %seeded.digest, blobs = seeded.holds.len(), "pinned image is cached in full");
                }
                Err(e) => {
                    failed += 1;
                    metrics::inc(&registry.metrics().pin_failures);
                    tracing::warn!(pin = %pin.text, error = %e, "cannot cache pinned image; retrying");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(text: &str) -> (String, String) {
        let spec: PinSpec = text.parse().unwrap();
        (spec.name, spec.reference.to_string())
    }

    #[test]
    fn pins_are_written_like_image_references() {
        let d = format!("sha256:{}", "a".repeat(64));
        let owned = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(pin("alpine"), owned("alpine", "latest"));
        assert_eq!(pin("alpine:3.20"), owned("alpine", "3.20"));
        assert_eq!(
            pin("localhost:5000/team/app"),
            owned("localhost:5000/team/app", "latest")
        );
        assert_eq!(
            pin("localhost:5000/team/app:v1"),
            owned("localhost:5000/team/app", "v1")
        );
        assert_eq!(pin(&format!("ghcr.io/o/t@{d}")), owned("ghcr.io/o/t", &d));
        assert_eq!(pin(&format!("ghcr.io/o/t:1@{d}")), owned("ghcr.io/o/t", &d));
        for bad in ["", ":1", "alpine:", "alpine@sha256:zz", "alpine:bad tag"] {
            assert!(bad.parse::<PinSpec>().is_err(), "{bad:?} parsed");
        }
    }
}

//! `[mirror]`: behaviour of the pull-through namespace as a whole, and pinned images.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::oci::ImageReference;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSettings {
    /// Never contact any upstream: serve only what is cached (an air-gapped site).
    pub offline: bool,
    /// How long upstream's acceptance of a client's credentials for a guarded repository is
    /// trusted before it is checked again.
    #[serde(with = "humantime_serde", default = "default_guard_ttl")]
    pub guard_ttl: Duration,
    /// Images kept in the cache for good, written as clients write them (`alpine:3.20`);
    /// parsed here, so a typo fails the load.
    #[serde(default)]
    pub pinned: Vec<ImageReference>,
    /// Platforms of a pinned multi-platform image to fetch (`linux/amd64`); empty for all.
    #[serde(default)]
    pub pin_platforms: Vec<String>,
    /// How often pinned images are fetched again (a moved tag brings its new content).
    #[serde(with = "humantime_serde", default = "default_pin_refresh")]
    pub pin_refresh: Duration,
    /// A client's GET of an image manifest starts fetching the image's blobs into the cache,
    /// so clients that fetch layers one after another find the next one on its way.
    #[serde(default = "default_true")]
    pub prefetch: bool,
}

impl MirrorSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for platform in &self.pin_platforms {
            let parts = platform.split('/').count();
            if !(2..=3).contains(&parts) || platform.split('/').any(str::is_empty) {
                return Err(ConfigError::Invalid(format!(
                    "mirror.pin_platforms {platform:?}: expected os/architecture[/variant]"
                )));
            }
        }
        if self.pin_refresh.is_zero() {
            return Err(ConfigError::Invalid(
                "mirror.pin_refresh must not be 0".into(),
            ));
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
fn default_pin_refresh() -> Duration {
    Duration::from_secs(3600)
}
fn default_guard_ttl() -> Duration {
    Duration::from_secs(300)
}

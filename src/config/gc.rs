//! `[gc]`: garbage collection of cached blobs no manifest references (`berth gc`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSettings {
    /// A blob stored, linked or read this recently is never collected: on a running berth,
    /// what no manifest references yet may be a pull or a push in progress.
    #[serde(with = "humantime_serde", default = "default_grace")]
    pub grace: Duration,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            grace: default_grace(),
        }
    }
}

fn default_grace() -> Duration {
    Duration::from_secs(3600)
}

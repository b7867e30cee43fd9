//! `[gc]`: garbage collection (`berth gc`, and on a schedule).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSettings {
    /// A blob stored, linked or read this recently is never collected: on a running berth,
    /// what no manifest references yet may be a pull or a push in progress.
    #[serde(with = "humantime_serde", default = "default_grace")]
    pub grace: Duration,
    /// How often the running berth collects by itself; `None` (or zero): only on demand.
    #[serde(with = "humantime_serde", default)]
    pub interval: Option<Duration>,
}

impl GcSettings {
    /// The schedule, when there is one.
    pub fn schedule(&self) -> Option<Duration> {
        self.interval.filter(|interval| !interval.is_zero())
    }
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            grace: default_grace(),
            interval: None,
        }
    }
}

fn default_grace() -> Duration {
    Duration::from_secs(3600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn interval(value: Option<&str>) -> Option<Duration> {
        let env: Vec<(String, String)> = value
            .map(|v| ("BERTH__GC__INTERVAL".to_string(), v.to_string()))
            .into_iter()
            .collect();
        Settings::load_with_env(None, env).unwrap().gc.schedule()
    }

    #[test]
    fn the_schedule_is_off_unless_an_interval_is_set() {
        assert_eq!(interval(None), None);
        assert_eq!(interval(Some("0")), None);
        assert_eq!(interval(Some("0s")), None);
        assert_eq!(interval(Some("24h")), Some(Duration::from_secs(24 * 3600)));
        let grace = Settings::load_with_env(None, Vec::new()).unwrap().gc.grace;
        assert_eq!(grace, Duration::from_secs(3600));
    }
}

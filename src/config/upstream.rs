//! `[[upstreams]]`: the registries berth mirrors, how patiently, and as whom.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::{ConfigError, Secret};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub name: String,
    /// Base URL of the registry API; `http` or `https`.
    pub url: Url,
    #[serde(with = "humantime_serde", default = "default_tag_ttl")]
    pub tag_ttl: Duration,
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde", default = "default_read_timeout")]
    pub read_timeout: Duration,
    #[serde(with = "humantime_serde", default = "default_max_stale")]
    pub max_stale: Duration,
    #[serde(default)]
    pub offline: bool,
    /// How long upstream's "not found" is remembered (0s: not at all).
    #[serde(with = "humantime_serde", default = "default_not_found_ttl")]
    pub not_found_ttl: Duration,
    /// Failures in a row (timeouts, refused connections, 5xx) after which upstream is
    /// considered down and requests stop waiting for it.
    #[serde(default = "default_breaker_threshold")]
    pub breaker_threshold: u32,
    /// How long upstream is left alone once considered down, before one request probes it.
    #[serde(with = "humantime_serde", default = "default_breaker_cooldown")]
    pub breaker_cooldown: Duration,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Read into `password` at load (trailing newline dropped).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl UpstreamSettings {
    pub(super) fn resolve_password_file(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            self.password = Some(Secret::new(text.trim_end_matches(['\r', '\n'])));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |what: &str| ConfigError::Invalid(format!("upstream {:?}: {what}", self.name));
        if self.name.is_empty() || self.name.contains('/') {
            return Err(ConfigError::Invalid(format!(
                "upstream name {:?} must be a non-empty host name without '/'",
                self.name
            )));
        }
        if !matches!(self.url.scheme(), "http" | "https") {
            return Err(invalid("url must be http or https"));
        }
        if self.breaker_threshold == 0 {
            return Err(invalid("breaker_threshold must be at least 1"));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(invalid("password given without username"));
        }
        Ok(())
    }
}

/// Each upstream on its own, and no name twice.
pub(super) fn validate_upstreams(upstreams: &[UpstreamSettings]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for upstream in upstreams {
        upstream.validate()?;
        if !seen.insert(upstream.name.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "upstream {:?} is declared twice",
                upstream.name
            )));
        }
    }
    Ok(())
}

fn default_tag_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_not_found_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_breaker_threshold() -> u32 {
    5
}
fn default_breaker_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_max_stale() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

//! `[[upstreams]]`: the registries berth mirrors, how patiently, and as whom.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::upstream_tls::{self, UpstreamTls};
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
    /// PEM bundle of roots trusted for this upstream besides the public ones (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate (chain) berth presents to this upstream, with `client_key`.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Accept any certificate from this upstream, unverified.
    #[serde(default)]
    pub insecure: bool,
    /// Requests in flight to this upstream at most (a blob download counts until its body is
    /// done); more wait their turn. 0: no cap.
    #[serde(default)]
    pub max_concurrent_requests: usize,
    /// The contents of `ca_file`, `client_certificate` and `client_key`, read at load.
    #[serde(skip)]
    pub tls: UpstreamTls,
}

impl UpstreamSettings {
    /// Reads every file the entry names: the password file and the TLS material.
    pub(super) fn resolve_files(&mut self) -> Result<(), ConfigError> {
        self.tls = upstream_tls::load(
            &self.name,
            self.ca_file.as_deref(),
            self.client_certificate.as_deref(),
            self.client_key.as_deref(),
        )?;
        self.resolve_password_file()
    }

    /// What an operator must not miss about this upstream: `insecure = true`.
    pub fn insecure_warning(&self) -> Option<String> {
        self.insecure.then(|| {
            format!(
                "upstream {:?} ({}): insecure = true, its TLS certificates are NOT verified; \
                 anyone on the path can impersonate it and serve any content",
                self.name, self.url
            )
        })
    }

    fn resolve_password_file(&mut self) -> Result<(), ConfigError> {
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

//! `[server]`: where berth listens, who it believes about forwarded requests, and its
//! connection limits; and `[log]`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: SocketAddr,
    pub workers: usize,
    /// The URL clients reach berth at (`https://registry.example`), when a proxy is in front.
    /// Used for the token realm and `Location` headers; without it, `Location`s are relative.
    #[serde(default)]
    pub external_url: Option<Url>,
    /// Proxies whose `X-Forwarded-*` headers are believed: CIDR blocks or single addresses,
    /// parsed once here so a typo fails the start instead of silently trusting nobody.
    #[serde(default, deserialize_with = "deserialize_nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Longest a client may leave its request headers or body silent before it is dropped.
    #[serde(with = "humantime_serde", default = "default_read_timeout")]
    pub read_timeout: Duration,
    /// Open connections per worker; past it, no more are accepted until some close.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A second address that serves only `/healthz` and `/metrics`, so health checks are
    /// answered even when the main listener is at `max_connections`.
    #[serde(default, deserialize_with = "deserialize_optional_listen")]
    pub health_listen: Option<SocketAddr>,
    /// berth's own TLS: the certificate chain (PEM, leaf first) and its private key (PEM).
    /// Both or neither; re-read on SIGHUP and when either file changes.
    #[serde(default)]
    pub tls_certificate: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM); with it, every client must present a certificate they signed.
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// An address that serves `/metrics` alone; when set, the main listener no longer does.
    #[serde(default, deserialize_with = "deserialize_optional_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long requests in flight may take to finish after SIGTERM, before they are cut.
    #[serde(with = "humantime_serde", default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// The Unix socket of the admin endpoint (`berth cache …`, `berth gc` on a running berth);
    /// `None`: `admin.sock` in the data directory ([`super::Settings::admin_socket`]).
    #[serde(default)]
    pub admin_socket: Option<std::path::PathBuf>,
}

impl ServerSettings {
    /// `external_url` as a base to append paths to: without its trailing `/`.
    pub fn external_base(&self) -> Option<&str> {
        self.external_url
            .as_ref()
            .map(|url| url.as_str().trim_end_matches('/'))
    }

    /// Whether berth terminates TLS itself (then every URL it builds is `https://`).
    pub fn tls_enabled(&self) -> bool {
        self.tls_certificate.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.read_timeout.is_zero() || self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "server.read_timeout and server.max_connections must not be 0".into(),
            ));
        }
        if self.tls_certificate.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "server.tls_certificate and server.tls_key go together: set both or neither".into(),
            ));
        }
        if self.tls_client_ca.is_some() && !self.tls_enabled() {
            return Err(ConfigError::Invalid(
                "server.tls_client_ca needs server.tls_certificate and server.tls_key".into(),
            ));
        }
        Ok(())
    }
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1024
}

/// A listen address: `127.0.0.1:5000`, `[::1]:5000`, or a host name with a port
/// (`localhost:5000`), which is looked up once, here, and its first address taken (the one
/// binding to the name would have tried first).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let expected = || format!("{text:?} is not an address and port like 127.0.0.1:5000");
    text.to_socket_addrs()
        .map_err(|e| format!("{}: {e}", expected()))?
        .next()
        .ok_or_else(expected)
}

fn deserialize_listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    parse_listen(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

fn deserialize_optional_listen<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_listen(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// An address block (`10.0.0.0/8`, `fd00::/8`) or a single address (`127.0.0.1`, `::1`), which
/// `IpNet` alone does not accept: it becomes a /32 or /128.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or a CIDR block like 10.0.0.0/8"))
}

fn deserialize_nets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|entry| parse_net(entry).map_err(serde::de::Error::custom))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter: a level, or `target=level` directives (`info,berth=debug`).
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, its fields at the top level.
    Json,
}

/// The levels a filter directive may name.
pub const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl LogSettings {
    /// Every directive of `level` must name a level: a bare word that is not one (`verbose`)
    /// would be read as a target name, enabling that target alone and silencing berth.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let levels = LOG_LEVELS.join(", ");
        for directive in self.level.split(',').map(str::trim) {
            let level = match directive.rsplit_once('=') {
                Some((target, level)) if !target.is_empty() => level,
                Some(_) => "",
                None => directive,
            };
            if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "log.level: {directive:?} names no level; use one of {levels}, or directives like \"info,berth=debug\""
                )));
            }
        }
        Ok(())
    }
}

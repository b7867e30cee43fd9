//! Layered configuration: embedded defaults (`config/berth.toml`) → a TOML file → `BERTH__…`
//! environment variables → command-line flags.
//!
//! The embedded defaults are the documented example file itself, so the documentation of every
//! key and the defaults cannot drift apart.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The documented example configuration, which is also the embedded default.
pub const DEFAULTS_TOML: &str = include_str!("../config/berth.toml");

/// Keys whose environment variable holds a comma-separated list.
const LIST_KEYS: [&str; 3] = [
    "mirror.pinned",
    "mirror.pin_platforms",
    "server.trusted_proxies",
];

/// Less memory than this for hot manifests would not hold one the size the spec allows.
const MIN_MEMORY_CACHE: u64 = 8 << 20;

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "BERTH";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration: cannot read {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub log: LogSettings,
    pub mirror: MirrorSettings,
    pub upstreams: Vec<UpstreamSettings>,
    /// berth's own token service; without it berth is an open, anonymous, read-only mirror.
    #[serde(default)]
    pub auth: Option<AuthSettings>,
    /// Private projects: repositories whose first component is a project name are berth's
    /// own, and accept pushes. Require `[auth]`.
    #[serde(default)]
    pub projects: Vec<ProjectSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The token audience (`service`), as clients and other registries name berth.
    #[serde(default = "default_service")]
    pub service: String,
    /// The token issuer (`iss`).
    #[serde(default = "default_service")]
    pub issuer: String,
    /// PEM private key that signs tokens: EC P-256 (PKCS#8 or SEC1) or RSA.
    pub signing_key: PathBuf,
    /// Optional PEM certificate of that key, sent as `x5c` so other registries can verify.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// htpasswd file with bcrypt hashes (`htpasswd -B`); re-read when it changes.
    #[serde(default)]
    pub htpasswd: Option<PathBuf>,
    /// Anonymous pull of the mirror namespace and public projects.
    #[serde(default = "default_true")]
    pub anonymous_pull: bool,
    /// Users with every right on every project.
    #[serde(default)]
    pub admins: Vec<String>,
    #[serde(with = "humantime_serde", default = "default_token_ttl")]
    pub token_ttl: Duration,
    #[serde(with = "humantime_serde", default = "default_refresh_ttl")]
    pub refresh_token_ttl: Duration,
    /// Password guessing limits, the password-hashing pool and the cache of verified logins.
    #[serde(default)]
    pub login: LoginSettings,
}

/// `[auth.login]`: how logins with a password are paced and paid for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginSettings {
    /// Failed logins for one user name within `failure_window` before further attempts are
    /// answered 429 until the window ends.
    pub failures_per_user: u32,
    /// The same, per client address (an IPv6 /64 counts as one address).
    pub failures_per_address: u32,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// How long a verified user+password is remembered, so repeated logins skip bcrypt;
    /// `0s` turns the cache off.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Threads that run bcrypt at most at once.
    pub hash_threads: usize,
    /// Logins waiting for a hashing thread before further ones are answered 429.
    pub hash_queue: usize,
}

impl Default for LoginSettings {
    fn default() -> Self {
        LoginSettings {
            failures_per_user: 5,
            failures_per_address: 30,
            failure_window: Duration::from_secs(60),
            cache_ttl: Duration::from_secs(60),
            hash_threads: 2,
            hash_queue: 16,
        }
    }
}

fn default_service() -> String {
    "berth".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_refresh_ttl() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// pull
    Guest,
    /// pull, push
    Developer,
    /// pull, push, delete
    Maintainer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    pub name: String,
    /// Anyone may pull (anonymously too, with `auth.anonymous_pull`).
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub members: std::collections::BTreeMap<String, Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSettings {
    /// Never contact any upstream: serve only what is cached (an air-gapped site).
    pub offline: bool,
    /// How long upstream's acceptance of a client's credentials for a guarded repository is
    /// trusted before it is checked again.
    #[serde(with = "humantime_serde", default = "default_guard_ttl")]
    pub guard_ttl: Duration,
    /// Images kept in the cache for good, written as clients write them (`alpine:3.20`).
    #[serde(default)]
    pub pinned: Vec<String>,
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

fn default_pin_refresh() -> Duration {
    Duration::from_secs(3600)
}

fn default_guard_ttl() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub workers: usize,
    /// The URL clients reach berth at (`https://registry.example`), when a proxy is in front.
    /// Used for the token realm and `Location` headers; without it, `Location`s are relative.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Proxies whose `X-Forwarded-*` headers are believed: CIDR blocks or single addresses,
    /// parsed once here so a typo fails the start instead of silently trusting nobody.
    #[serde(default, deserialize_with = "deserialize_nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Longest a client may leave its request headers or body silent before it is dropped.
    #[serde(with = "humantime_serde", default = "default_server_read_timeout")]
    pub read_timeout: Duration,
    /// Open connections per worker; past it, no more are accepted until some close.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A second address that serves only `/healthz` and `/metrics`, so health checks are
    /// answered even when the main listener is at `max_connections`.
    #[serde(default)]
    pub health_listen: Option<String>,
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

fn default_server_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1024
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    /// Memory for hot manifests and tag answers, in bytes.
    #[serde(default = "default_memory_cache")]
    pub memory_cache: ByteSize,
    /// The count-bounded predecessor of `memory_cache`: still read, so that existing files
    /// load, but ignored (a count is no bound on memory); berth warns when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_cache_entries: Option<u64>,
    /// Disk budget for cached content; `None` is unlimited.
    #[serde(default)]
    pub max_size: ByteSize,
    /// Eviction stops once the cache is down to this percentage of `max_size`.
    #[serde(default = "default_low_water")]
    pub low_water_percent: u8,
}

fn default_low_water() -> u8 {
    90
}
fn default_memory_cache() -> ByteSize {
    ByteSize(Some(64 << 20))
}

/// A size in bytes, written humanely (`"50GiB"`, `"512 MB"`, `1048576`), or `"unlimited"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSize(pub Option<u64>);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("unlimited") || text == "0" {
            return Ok(ByteSize(None));
        }
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size like \"50GiB\""))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "t" | "tb" => 1000 * 1000 * 1000 * 1000,
            "tib" => 1 << 40,
            other => return Err(format!("unknown size unit {other:?} in {text:?}")),
        };
        Ok(ByteSize(Some((number * multiplier as f64) as u64)))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(0) => Ok(ByteSize(None)),
            Raw::Number(n) => Ok(ByteSize(Some(n))),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => serializer.serialize_str("unlimited"),
            Some(n) => serializer.serialize_u64(n),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub name: String,
    pub url: String,
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
    #[serde(default)]
    pub password_file: Option<PathBuf>,
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

/// A secret string: deserializes normally, but never prints or serializes its value.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl Settings {
    /// Loads defaults, then `file` (when given), then `BERTH__…` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment, so tests need not touch the process'.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        if let Some(path) = file {
            // Arrays are replaced, not merged: a file's [[upstreams]] is the whole list.
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let mut env_map: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        // Lists come comma-separated. config's own list parsing would also turn every other
        // value that looks like a number or a boolean into one (a password "1.50" into "1.5").
        for key in LIST_KEYS {
            let var = format!(
                "{ENV_PREFIX}__{}",
                key.replace('.', "__").to_ascii_uppercase()
            );
            if let Some(text) = env_map.remove(&var) {
                let items: Vec<String> = text
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect();
                builder = builder.set_override(key, items)?;
            }
        }
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(env_map)),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.resolve_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        for upstream in &mut self.upstreams {
            if let Some(path) = &upstream.password_file {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                        path: path.clone(),
                        source,
                    })?;
                upstream.password = Some(Secret::new(text.trim_end_matches(['\r', '\n'])));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        if !self.projects.is_empty() && self.auth.is_none() {
            return Err(ConfigError::Invalid(
                "[[projects]] need an [auth] section: pushes must be authenticated".into(),
            ));
        }
        let mut project_names = std::collections::HashSet::new();
        for project in &self.projects {
            let valid = !project.name.is_empty()
                && !project.name.contains('/')
                && project.name.parse::<crate::oci::RepoName>().is_ok();
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "project name {:?} must be one repository name component",
                    project.name
                )));
            }
            if !project_names.insert(project.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "project {:?} is declared twice",
                    project.name
                )));
            }
            if self.upstreams.iter().any(|u| u.name == project.name) {
                return Err(ConfigError::Invalid(format!(
                    "project {:?} has the name of an upstream",
                    project.name
                )));
            }
        }
        for pin in &self.mirror.pinned {
            pin.parse::<crate::registry::pins::PinSpec>()
                .map_err(|e| ConfigError::Invalid(format!("mirror.pinned {pin:?}: {e}")))?;
        }
        for platform in &self.mirror.pin_platforms {
            let parts = platform.split('/').count();
            if !(2..=3).contains(&parts) || platform.split('/').any(str::is_empty) {
                return Err(ConfigError::Invalid(format!(
                    "mirror.pin_platforms {platform:?}: expected os/architecture[/variant]"
                )));
            }
        }
        if self.mirror.pin_refresh.is_zero() {
            return Err(ConfigError::Invalid(
                "mirror.pin_refresh must not be 0".into(),
            ));
        }
        if let Some(url) = &self.server.external_url {
            url::Url::parse(url)
                .map_err(|e| ConfigError::Invalid(format!("server.external_url {url:?}: {e}")))?;
        }
        if let Some(auth) = &self.auth {
            let login = &auth.login;
            if login.failures_per_user == 0
                || login.failures_per_address == 0
                || login.failure_window.is_zero()
                || login.hash_threads == 0
            {
                return Err(ConfigError::Invalid(
                    "auth.login: failures_per_user, failures_per_address, failure_window and hash_threads must not be 0".into(),
                ));
            }
        }
        if self
            .storage
            .memory_cache
            .0
            .is_none_or(|bytes| bytes < MIN_MEMORY_CACHE)
        {
            return Err(ConfigError::Invalid(format!(
                "storage.memory_cache must be a size of at least {MIN_MEMORY_CACHE} bytes"
            )));
        }
        if self.server.read_timeout.is_zero() || self.server.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "server.read_timeout and server.max_connections must not be 0".into(),
            ));
        }
        if !(1..=100).contains(&self.storage.low_water_percent) {
            return Err(ConfigError::Invalid(
                "storage.low_water_percent must be between 1 and 100".into(),
            ));
        }
        for upstream in &self.upstreams {
            if upstream.name.is_empty() || upstream.name.contains('/') {
                return Err(ConfigError::Invalid(format!(
                    "upstream name {:?} must be a non-empty host name without '/'",
                    upstream.name
                )));
            }
            if !seen.insert(upstream.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?} is declared twice",
                    upstream.name
                )));
            }
            let url = url::Url::parse(&upstream.url).map_err(|e| {
                ConfigError::Invalid(format!("upstream {:?}: url: {e}", upstream.name))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: url must be http or https",
                    upstream.name
                )));
            }
            if upstream.breaker_threshold == 0 {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: breaker_threshold must be at least 1",
                    upstream.name
                )));
            }
            if upstream.password.is_some() && upstream.username.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: password given without username",
                    upstream.name
                )));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted (for `berth check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn embedded_defaults_load() {
        let s = Settings::load_with_env(None, no_env()).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:5000");
        assert_eq!(s.storage.data_dir, PathBuf::from("./berth-data"));
        assert_eq!(s.upstreams.len(), 1);
        assert_eq!(s.upstreams[0].name, "docker.io");
        assert_eq!(s.upstreams[0].url, "https://registry-1.docker.io");
        assert_eq!(s.upstreams[0].tag_ttl, Duration::from_secs(300));
    }

    #[test]
    fn file_then_env_override() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[server]\nlisten = \"0.0.0.0:6000\"\n[[upstreams]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\ntag_ttl = \"1m\"\nusername = \"u\"\npassword = \"hunter2\""
        )
        .unwrap();
        let env = vec![
            ("BERTH__STORAGE__DATA_DIR".to_string(), "/tmp/x".to_string()),
            ("UNRELATED".to_string(), "1".to_string()),
        ];
        let s = Settings::load_with_env(Some(f.path()), env).unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:6000");
        assert_eq!(s.storage.data_dir, PathBuf::from("/tmp/x"));
        // The file's list replaces the default list.
        assert_eq!(s.upstreams.len(), 1);
        assert_eq!(s.upstreams[0].name, "ghcr.io");
        assert_eq!(s.upstreams[0].tag_ttl, Duration::from_secs(60));
        assert_eq!(s.upstreams[0].read_timeout, Duration::from_secs(60));
        let shown = s.to_redacted_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn pins_from_file_and_lists_from_env() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[mirror]\npinned = [\"alpine:3.20\"]\npin_refresh = \"10m\""
        )
        .unwrap();
        let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
        assert_eq!(s.mirror.pinned, ["alpine:3.20"]);
        assert!(s.mirror.pin_platforms.is_empty());
        assert_eq!(s.mirror.pin_refresh, Duration::from_secs(600));

        let env = vec![
            (
                "BERTH__MIRROR__PINNED".to_string(),
                "busybox:1, localhost:5000/x/y:2".to_string(),
            ),
            (
                "BERTH__MIRROR__PIN_PLATFORMS".to_string(),
                "linux/amd64,linux/arm64/v8".to_string(),
            ),
        ];
        let s = Settings::load_with_env(Some(f.path()), env).unwrap();
        assert_eq!(s.mirror.pinned, ["busybox:1", "localhost:5000/x/y:2"]);
        assert_eq!(s.mirror.pin_platforms, ["linux/amd64", "linux/arm64/v8"]);

        for (key, bad) in [
            ("BERTH__MIRROR__PINNED", "alpine:bad tag"),
            ("BERTH__MIRROR__PIN_PLATFORMS", "amd64"),
            ("BERTH__MIRROR__PIN_REFRESH", "0s"),
        ] {
            let env = vec![(key.to_string(), bad.to_string())];
            assert!(
                Settings::load_with_env(None, env).is_err(),
                "{key}={bad} accepted"
            );
        }
    }

    #[test]
    fn trusted_proxies_are_parsed_once_at_load() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"::1\"]"
        )
        .unwrap();
        let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
        let nets: Vec<String> = s
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
        // The effective configuration prints them back as blocks.
        assert!(s.to_redacted_toml().contains("\"127.0.0.1/32\""));

        let env = vec![(
            "BERTH__SERVER__TRUSTED_PROXIES".to_string(),
            "192.168.0.0/16, fd00::/8".to_string(),
        )];
        let s = Settings::load_with_env(None, env).unwrap();
        assert_eq!(s.server.trusted_proxies.len(), 2);

        let env = vec![(
            "BERTH__SERVER__TRUSTED_PROXIES".to_string(),
            "10.0.0.0/8,nope".to_string(),
        )];
        let err = Settings::load_with_env(None, env).unwrap_err().to_string();
        assert!(err.contains("\"nope\" is not an address"), "{err}");
    }

    #[test]
    fn auth_and_projects() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[auth]\nsigning_key = \"k.pem\"\nadmins = [\"root\"]\n[[projects]]\nname = \"team\"\nmembers = {{ alice = \"developer\", bob = \"guest\" }}"
        )
        .unwrap();
        let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
        let auth = s.auth.unwrap();
        assert_eq!(auth.service, "berth");
        assert!(auth.anonymous_pull);
        assert_eq!(auth.token_ttl, Duration::from_secs(300));
        assert_eq!(s.projects[0].members["alice"], Role::Developer);
        assert!(!s.projects[0].public);

        assert_eq!(auth.login.failures_per_user, 5);
        assert_eq!(auth.login.cache_ttl, Duration::from_secs(60));

        let env = vec![
            (
                "BERTH__AUTH__LOGIN__FAILURES_PER_ADDRESS".to_string(),
                "7".to_string(),
            ),
            (
                "BERTH__AUTH__LOGIN__FAILURE_WINDOW".to_string(),
                "2m".to_string(),
            ),
        ];
        let s = Settings::load_with_env(Some(f.path()), env).unwrap();
        let login = s.auth.unwrap().login;
        assert_eq!(login.failures_per_address, 7);
        assert_eq!(login.failure_window, Duration::from_secs(120));
        assert_eq!(login.hash_threads, 2);
        let env = vec![(
            "BERTH__AUTH__LOGIN__HASH_THREADS".to_string(),
            "0".to_string(),
        )];
        assert!(Settings::load_with_env(Some(f.path()), env).is_err());

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[[projects]]\nname = \"team\"").unwrap();
        let err = Settings::load_with_env(Some(f.path()), no_env()).unwrap_err();
        assert!(err.to_string().contains("[auth]"), "{err}");

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[auth]\nsigning_key = \"k\"\n[[projects]]\nname = \"Team/x\""
        )
        .unwrap();
        assert!(Settings::load_with_env(Some(f.path()), no_env()).is_err());
    }

    #[test]
    fn byte_sizes() {
        let parse = |t: &str| ByteSize::parse(t).unwrap().0;
        assert_eq!(parse("unlimited"), None);
        assert_eq!(parse("0"), None);
        assert_eq!(parse("512"), Some(512));
        assert_eq!(parse("50GiB"), Some(50 << 30));
        assert_eq!(parse("1.5 MiB"), Some(1_572_864));
        assert_eq!(parse("2gb"), Some(2_000_000_000));
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("5 parsecs").is_err());
    }

    #[test]
    fn resource_limits_have_defaults_and_are_checked() {
        let s = Settings::load_with_env(None, no_env()).unwrap();
        assert_eq!(s.storage.memory_cache, ByteSize(Some(64 << 20)));
        assert_eq!(s.server.read_timeout, Duration::from_secs(30));
        assert_eq!(s.server.max_connections, 1024);
        assert_eq!(s.server.health_listen, None);
        assert_eq!(s.upstreams[0].not_found_ttl, Duration::from_secs(30));
        assert_eq!(s.upstreams[0].breaker_threshold, 5);
        assert_eq!(s.upstreams[0].breaker_cooldown, Duration::from_secs(30));
        let env = vec![(
            "BERTH__STORAGE__MEMORY_CACHE".to_string(),
            "16MiB".to_string(),
        )];
        let s = Settings::load_with_env(None, env).unwrap();
        assert_eq!(s.storage.memory_cache, ByteSize(Some(16 << 20)));
        // The old count-bounded key still loads (and is ignored).
        let env = vec![(
            "BERTH__STORAGE__MANIFEST_CACHE_ENTRIES".to_string(),
            "10000".to_string(),
        )];
        let s = Settings::load_with_env(None, env).unwrap();
        assert_eq!(s.storage.manifest_cache_entries, Some(10_000));
        assert_eq!(s.storage.memory_cache, ByteSize(Some(64 << 20)));
        for (key, bad) in [
            ("BERTH__STORAGE__MEMORY_CACHE", "unlimited"),
            ("BERTH__STORAGE__MEMORY_CACHE", "1MiB"),
            ("BERTH__SERVER__READ_TIMEOUT", "0s"),
            ("BERTH__SERVER__MAX_CONNECTIONS", "0"),
        ] {
            let env = vec![(key.to_string(), bad.to_string())];
            assert!(
                Settings::load_with_env(None, env).is_err(),
                "{key}={bad} accepted"
            );
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[[upstreams]]\nname = \"docker.io\"\nurl = \"https://r\"\nbreaker_threshold = 0"
        )
        .unwrap();
        assert!(Settings::load_with_env(Some(f.path()), no_env()).is_err());
    }

    #[test]
    fn unknown_key_is_an_error() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[server]\nlisten_typo = \"x\"").unwrap();
        let err = Settings::load_with_env(Some(f.path()), no_env()).unwrap_err();
        assert!(err.to_string().contains("listen_typo"), "{err}");
    }

    #[test]
    fn password_file_is_read() {
        let mut secret = tempfile::NamedTempFile::new().unwrap();
        writeln!(secret, "s3cret").unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[[upstreams]]\nname = \"docker.io\"\nurl = \"https://r\"\nusername = \"u\"\npassword_file = {:?}",
            secret.path()
        )
        .unwrap();
        let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
        assert_eq!(s.upstreams[0].password.as_ref().unwrap().expose(), "s3cret");
    }

    #[test]
    fn bad_upstream_url_is_rejected() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[[upstreams]]\nname = \"x\"\nurl = \"ftp://x\"").unwrap();
        assert!(Settings::load_with_env(Some(f.path()), no_env()).is_err());
    }
}

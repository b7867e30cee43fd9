//! Layered configuration: embedded defaults (`config/berth.toml`) → a TOML file → `BERTH__…`
//! environment variables → command-line flags.
//!
//! The embedded defaults are the documented example file itself, so the documentation of every
//! key and the defaults cannot drift apart. Values are deserialized straight into their types
//! (addresses, URLs, address blocks, image references, secrets), so a typo fails the load and
//! nothing downstream parses a setting again. This module imports nothing from berth but `oci`.

mod auth;
mod gc;
mod mirror;
mod paths;
mod retention;
mod secret;
mod server;
mod storage;
mod upstream;
mod upstream_tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

pub use self::auth::{AuthSettings, LoginSettings, ProjectSettings, Projects, Role};
pub use self::gc::GcSettings;
pub use self::mirror::MirrorSettings;
pub use self::retention::{glob_matches, RetentionSettings};
pub use self::secret::Secret;
pub use self::server::{
    parse_listen, parse_net, LogFormat, LogSettings, ServerSettings, LOG_LEVELS,
};
pub use self::storage::{ByteSize, S3Settings, StorageSettings};
pub use self::upstream::UpstreamSettings;
pub use self::upstream_tls::UpstreamTls;

/// The documented example configuration, which is also the embedded default.
pub const DEFAULTS_TOML: &str = include_str!("../../config/berth.toml");

/// Keys whose environment variable holds a comma-separated list.
const LIST_KEYS: [&str; 3] = [
    "mirror.pinned",
    "mirror.pin_platforms",
    "server.trusted_proxies",
];

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "BERTH";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration: cannot read {path}: {source}")]
    ReadFile {
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
    /// Garbage collection (`berth gc`).
    #[serde(default)]
    pub gc: GcSettings,
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
        let mut env_map: HashMap<String, String> = env
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
        if let Some(path) = file {
            // Read again, alone: which values did the file itself give?
            let file_alone = Config::builder()
                .add_source(File::from(path).format(FileFormat::Toml).required(true))
                .build()?;
            let base = path.parent().unwrap_or(Path::new(""));
            paths::resolve_relative_to_file(&mut settings, &file_alone, base);
        }
        for upstream in &mut settings.upstreams {
            upstream.resolve_files()?;
        }
        if let Some(s3) = &mut settings.storage.s3 {
            s3.resolve_secret_file()?;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// What types cannot say: limits that must not be 0, names declared twice, sections that
    /// need each other.
    fn validate(&self) -> Result<(), ConfigError> {
        auth::validate_projects(&self.projects, self.auth.as_ref(), &self.upstreams)?;
        self.mirror.validate()?;
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        self.storage.validate()?;
        self.server.validate()?;
        self.log.validate()?;
        upstream::validate_upstreams(&self.upstreams)
    }

    /// Every path-valued setting, with the key the configuration file spells it by.
    fn path_settings(&mut self) -> Vec<paths::PathSetting<'_>> {
        use paths::PathSetting;
        let single = |key, path| PathSetting {
            key,
            index: None,
            path,
        };
        let mut all = vec![single("storage.data_dir", &mut self.storage.data_dir)];
        let server = &mut self.server;
        for (key, path) in [
            ("server.tls_certificate", &mut server.tls_certificate),
            ("server.tls_key", &mut server.tls_key),
            ("server.tls_client_ca", &mut server.tls_client_ca),
            ("server.admin_socket", &mut server.admin_socket),
        ] {
            all.extend(path.as_mut().map(|path| single(key, path)));
        }
        if let Some(s3) = &mut self.storage.s3 {
            all.extend(
                s3.secret_access_key_file
                    .as_mut()
                    .map(|path| single("storage.s3.secret_access_key_file", path)),
            );
        }
        if let Some(auth) = &mut self.auth {
            all.push(single("auth.signing_key", &mut auth.signing_key));
            all.extend(
                auth.certificate
                    .as_mut()
                    .map(|path| single("auth.certificate", path)),
            );
            all.extend(
                auth.htpasswd
                    .as_mut()
                    .map(|path| single("auth.htpasswd", path)),
            );
        }
        for (index, upstream) in self.upstreams.iter_mut().enumerate() {
            for (key, path) in [
                ("upstreams.password_file", &mut upstream.password_file),
                ("upstreams.ca_file", &mut upstream.ca_file),
                (
                    "upstreams.client_certificate",
                    &mut upstream.client_certificate,
                ),
                ("upstreams.client_key", &mut upstream.client_key),
            ] {
                all.extend(path.as_mut().map(|path| PathSetting {
                    key,
                    index: Some(index),
                    path,
                }));
            }
        }
        all
    }

    /// The admin socket: `server.admin_socket`, else `admin.sock` in the data directory.
    pub fn admin_socket(&self) -> PathBuf {
        self.server
            .admin_socket
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("admin.sock"))
    }

    /// The effective configuration as TOML, secrets redacted (for `berth check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests;

//! `[auth]` (berth's own token service and password logins) and `[[projects]]` (private
//! repositories and who may do what in them).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::retention::RetentionSettings;
use super::upstream::UpstreamSettings;
use super::ConfigError;
use crate::oci::RepoName;

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

impl AuthSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let login = &self.login;
        if login.failures_per_user == 0
            || login.failures_per_address == 0
            || login.failure_window.is_zero()
            || login.hash_threads == 0
        {
            return Err(ConfigError::Invalid(
                "auth.login: failures_per_user, failures_per_address, failure_window and hash_threads must not be 0".into(),
            ));
        }
        Ok(())
    }
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

/// A member's role in a project. Read from its name, so a wrong one is answered with the
/// valid ones (the `config` crate's own enum error names none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Role {
    /// pull
    Guest,
    /// pull, push
    Developer,
    /// pull, push, delete
    Maintainer,
}

impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        match name.as_str() {
            "guest" => Ok(Role::Guest),
            "developer" => Ok(Role::Developer),
            "maintainer" => Ok(Role::Maintainer),
            other => Err(format!(
                "role {other:?} is not one of guest (pull), developer (pull, push), maintainer (pull, push, delete)"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    pub name: String,
    /// Anyone may pull (anonymously too, with `auth.anonymous_pull`).
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub members: BTreeMap<String, Role>,
    /// What `berth retention` deletes from the project's repositories: see [`RetentionSettings`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSettings>,
}

/// The configured projects by name: built once from the validated `[[projects]]` and shared
/// (one `Arc`) by the routing of repository names (`registry`) and the access policy
/// (`auth`), so the two can never disagree on what is a project.
#[derive(Debug, Clone, Default)]
pub struct Projects(Arc<BTreeMap<String, ProjectSettings>>);

impl Projects {
    pub fn new(projects: &[ProjectSettings]) -> Self {
        Projects(Arc::new(
            projects
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
        ))
    }

    /// The project a repository name belongs to: the one its first component names.
    pub fn project_of(&self, repo: &str) -> Option<&ProjectSettings> {
        let first = repo.split('/').next().unwrap_or(repo);
        self.0.get(first)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every configured project, by name.
    pub fn iter(&self) -> impl Iterator<Item = &ProjectSettings> {
        self.0.values()
    }
}

/// Projects need `[auth]`, and each is one repository name component, declared once, that no
/// upstream is named.
pub(super) fn validate_projects(
    projects: &[ProjectSettings],
    auth: Option<&AuthSettings>,
    upstreams: &[UpstreamSettings],
) -> Result<(), ConfigError> {
    if !projects.is_empty() && auth.is_none() {
        return Err(ConfigError::Invalid(
            "[[projects]] need an [auth] section: pushes must be authenticated".into(),
        ));
    }
    let mut names = HashSet::new();
    for project in projects {
        let valid = !project.name.contains('/') && project.name.parse::<RepoName>().is_ok();
        if !valid {
            return Err(ConfigError::Invalid(format!(
                "project name {:?} must be one repository name component",
                project.name
            )));
        }
        if !names.insert(project.name.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "project {:?} is declared twice",
                project.name
            )));
        }
        // `library/…` is where Docker Hub's official images resolve (`nginx` → `library/nginx`):
        // a project of that name would shadow them for every client.
        if project.name == "library" {
            return Err(ConfigError::Invalid(
                "project name \"library\" would shadow Docker Hub's official images (nginx means library/nginx): choose another name".into(),
            ));
        }
        // `ghcr.io/org/tool` selects the upstream named ghcr.io: a project of an upstream's
        // name or host would take those names from the mirror.
        let shadowed = upstreams
            .iter()
            .find(|u| u.name == project.name || u.url.host_str() == Some(project.name.as_str()));
        if let Some(upstream) = shadowed {
            return Err(ConfigError::Invalid(format!(
                "project {:?} would shadow the mirror of upstream {:?} ({}): choose another name",
                project.name, upstream.name, upstream.url
            )));
        }
    }
    Ok(())
}

//! The registry domain: resolving a name to a [`repository::Target`] (a private project's
//! repository or a mirrored one, both behind the [`repository::Repository`] trait), pins,
//! private projects, the pull-through decisions, and token requests. The spec's names,
//! digests, manifests, media types and error codes it works with are `oci`'s.
//!
//! Layering rule: `http` calls `registry`; `registry` calls `auth`, `cache` and `upstream`; nothing
//! here knows actix, and nothing below calls back up. Every error that leaves this module is a
//! [`RegistryError`] carrying its spec code, so the HTTP layer only translates.

pub mod admin;
pub mod audit;
pub mod error;
pub mod gc;
pub mod lifecycle;
pub mod listing;
pub mod mirror;
pub mod namespace;
pub mod pins;
pub mod private;
pub mod readiness;
pub mod repository;
pub mod token;

use std::sync::Arc;

pub use self::error::RegistryError;
use self::mirror::Mirror;
use self::namespace::MirrorRepo;
use self::repository::Target;
use crate::cache::Cache;
use crate::clock::Clock;
use crate::config::{MirrorSettings, Projects};
use crate::metrics::Metrics;
use crate::upstream::Upstreams;

/// Everything a request handler needs, built once at startup.
pub struct Registry {
    upstreams: Upstreams,
    pub mirror: Mirror,
    pub projects: private::Projects,
    cache: Arc<Cache>,
    readiness: readiness::Readiness,
    gc_runs: gc::Runs,
}

impl Registry {
    pub fn new(
        upstreams: Upstreams,
        cache: Arc<Cache>,
        projects: Projects,
        mirror: &MirrorSettings,
        clock: Clock,
    ) -> Self {
        Registry {
            upstreams,
            mirror: Mirror::new(Arc::clone(&cache), mirror, clock),
            projects: private::Projects::new(projects, Arc::clone(&cache)),
            cache,
            readiness: readiness::Readiness::default(),
            gc_runs: gc::Runs::default(),
        }
    }

    /// Resolves a client's repository name to the mirrored repository it means.
    pub fn resolve(&self, name: &str, ns: Option<&str>) -> Result<MirrorRepo, RegistryError> {
        namespace::resolve(&self.upstreams, name, ns)
    }

    /// Resolves a client's repository name (with containerd's `?ns=`) to the repository it
    /// means: a private project's when its first component names a project, else a mirrored
    /// one. A bad name is `NAME_INVALID` whatever the request.
    pub fn target(&self, name: &str, ns: Option<&str>) -> Result<Target, RegistryError> {
        match self.projects.repo_of(name) {
            Some(repo) => Ok(Target::Project(repo?)),
            None => namespace::resolve(&self.upstreams, name, ns).map(Target::Mirror),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.cache.metrics()
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// What `/readyz` reports; see [`readiness`].
    pub fn readiness(&self) -> &readiness::Readiness {
        &self.readiness
    }
}

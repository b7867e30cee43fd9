//! Garbage collection on the running berth: on demand (`berth gc`, through the admin socket)
//! and on a schedule (`[gc] interval`). What is collected and how it stays safe against pushes
//! is the cache's and the private domain's ([`crate::cache::collect`],
//! [`super::private::repo_locks`]); this module runs one collection at a time on the blocking
//! pool, with the repository locks, and reports it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Registry, RegistryError};
use crate::cache::collect::Collected;

/// One collection at a time: a scheduled run skips while another runs, `berth gc` waits.
#[derive(Default)]
pub struct Runs {
    running: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Collects garbage, after any collection already running. Private repositories are
    /// handled under their locks (none of this runs on the async workers).
    pub async fn collect_garbage(&self, grace: Duration) -> Result<Collected, RegistryError> {
        let _one = self.gc_runs.running.lock().await;
        self.collect_now(grace).await
    }

    /// Collects garbage unless a collection is running already (`None` then).
    pub async fn collect_garbage_unless_running(
        &self,
        grace: Duration,
    ) -> Option<Result<Collected, RegistryError>> {
        let _one = self.gc_runs.running.try_lock().ok()?;
        Some(self.collect_now(grace).await)
    }

    async fn collect_now(&self, grace: Duration) -> Result<Collected, RegistryError> {
        let cache = Arc::clone(self.cache());
        let locks = Arc::clone(self.projects.repo_locks());
        let started = Instant::now();
        let collected = tokio::task::spawn_blocking(move || {
            let collected = cache.collect_garbage(grace, |repo| locks.exclusive_blocking(repo));
            crate::memory::release_freed();
            collected
        })
        .await
        .map_err(|e| RegistryError::internal("gc task failed", e))?
        .map_err(|e| RegistryError::internal("storage failed", e))?;
        tracing::info!(
            manifests_removed = collected.manifests_removed,
            blobs_removed = collected.blobs_removed,
            bytes_removed = collected.bytes_removed,
            links_removed = collected.links_removed,
            blobs_kept = collected.blobs_kept,
            recent_kept = collected.recent_kept,
            local_tier_only = collected.local_tier_only,
            grace = %humantime::format_duration(grace),
            took_ms = started.elapsed().as_millis() as u64,
            "garbage collection"
        );
        Ok(collected)
    }
}

/// Applies the projects' retention rules, then collects, every `interval` (the first run one
/// interval after start) until aborted.
pub async fn collect_periodically(registry: Arc<Registry>, interval: Duration, grace: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    // A run longer than the interval delays the next; runs do not pile up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Retention deletes records only; the collection right after reclaims their bytes.
        if let Err(e) = registry.apply_retention(false).await {
            tracing::warn!(error = %e, "scheduled retention failed");
        }
        match registry.collect_garbage_unless_running(grace).await {
            None => tracing::info!("scheduled garbage collection skipped: one is running"),
            Some(Err(e)) => tracing::warn!(error = %e, "scheduled garbage collection failed"),
            Some(Ok(_)) => {}
        }
    }
}

//! Whether this node should be sent traffic (`/readyz`): its store and index open, startup
//! recovery finished, and, over a shared store, that store answering.
//!
//! A probe must cost nothing, so nothing is checked when it comes: the shared store is asked
//! by [`watch_shared_store`] every few seconds with a short timeout, and a probe reads when it
//! last answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Registry;

/// How often the shared store is asked.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long one check may take: a store slower than that is as good as down for requests.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How recent its last answer must be for the node to be ready: a check or two may fail
/// before the node is taken out of rotation.
const FRESH_FOR: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct Readiness {
    since: Instant,
    /// Milliseconds after `since` of the shared store's last answer, plus one (0: never).
    shared_answered: AtomicU64,
    /// Why the last check failed, if it did.
    shared_error: Mutex<Option<String>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            since: Instant::now(),
            shared_answered: AtomicU64::new(0),
            shared_error: Mutex::new(None),
        }
    }
}

impl Readiness {
    /// Records one check of the shared store.
    pub fn shared_checked(&self, result: Result<(), String>) {
        let mut error = self.shared_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.shared_answered
                    .store(now.saturating_add(1), Ordering::Relaxed);
                *error = None;
            }
            Err(e) => *error = Some(e),
        }
    }

    fn shared_state(&self) -> Result<(), String> {
        let answered = self.shared_answered.load(Ordering::Relaxed);
        let error = self
            .shared_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if answered == 0 {
            return Err(error.unwrap_or_else(|| "not checked yet".to_owned()));
        }
        let age = self
            .since
            .elapsed()
            .saturating_sub(Duration::from_millis(answered - 1));
        if age > FRESH_FOR {
            return Err(format!(
                "no answer for {}s{}",
                age.as_secs(),
                error.map(|e| format!(": {e}")).unwrap_or_default()
            ));
        }
        Ok(())
    }
}

/// What `/readyz` says: each check, `"ok"` or why not.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ready: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Registry {
    /// The node's readiness, from state kept as it changes (no I/O).
    pub fn ready(&self) -> Report {
        let mut checks = vec![Check {
            // Opened (and the crash-safe part of recovery run) before any listener starts.
            name: "storage",
            ok: true,
            detail: "open".to_owned(),
        }];
        let reconciling = self.cache.storage().is_unreconciled();
        checks.push(Check {
            name: "recovery",
            ok: !reconciling,
            detail: if reconciling {
                "reconciling the store with the index after an unclean stop".to_owned()
            } else {
                "done".to_owned()
            },
        });
        if self.cache.shared().is_some() {
            let state = self.readiness.shared_state();
            checks.push(Check {
                name: "shared_store",
                ok: state.is_ok(),
                detail: state.err().unwrap_or_else(|| "answering".to_owned()),
            });
        }
        Report {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

/// Asks the shared store, if there is one, every [`CHECK_EVERY`], for as long as berth runs.
pub async fn watch_shared_store(registry: Arc<Registry>) {
    let Some(store) = registry.cache.shared().cloned() else {
        return;
    };
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let result = match tokio::time::timeout(CHECK_TIMEOUT, store.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs_f32())),
        };
        if let Err(e) = &result {
            tracing::debug!(error = %e, "shared store check failed");
        }
        registry.readiness.shared_checked(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_store_must_have_answered_recently() {
        let readiness = Readiness::default();
        assert_eq!(readiness.shared_state(), Err("not checked yet".to_owned()));
        readiness.shared_checked(Err("connection refused".into()));
        assert_eq!(
            readiness.shared_state(),
            Err("connection refused".to_owned())
        );
        readiness.shared_checked(Ok(()));
        assert_eq!(readiness.shared_state(), Ok(()));
        // One failure after an answer does not make the node unready at once.
        readiness.shared_checked(Err("timeout".into()));
        assert_eq!(readiness.shared_state(), Ok(()));
    }
}

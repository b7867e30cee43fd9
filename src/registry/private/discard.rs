//! Per-upload locks, and discarding a failed upload at once.
//!
//! A request that fails while it writes to an upload (a body that breaks off, a digest that
//! does not match), or whose client goes away meanwhile, leaves nothing behind: the upload's
//! record and file go right away and its bytes stop counting against the disk budget. Only
//! uploads nobody comes back to wait for the 24 h expiry.
//!
//! A handler's future is dropped when its client disconnects, so the discard cannot be left to
//! the code after an `.await`: [`Discard`] does it from `Drop`, on a task of its own. That task
//! takes the upload's lock first, which a write still running on the blocking pool holds until
//! it is done, so the file is never removed under a write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::cache::Cache;

/// One lock per upload id: appends to the same upload never interleave.
#[derive(Default)]
pub struct UploadLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl UploadLocks {
    /// Waits for the upload `id` to be free, and holds it.
    pub async fn acquire(&self, id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(id.to_owned()).or_default())
        };
        lock.lock_owned().await
    }

    /// The upload is over: its lock is no longer needed.
    pub fn forget(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// Discards an upload when dropped, unless [`Discard::keep`] was called.
pub struct Discard {
    upload: Option<(Arc<Cache>, Arc<UploadLocks>, String)>,
}

impl Discard {
    pub fn armed(cache: &Arc<Cache>, locks: &Arc<UploadLocks>, id: &str) -> Self {
        Discard {
            upload: Some((Arc::clone(cache), Arc::clone(locks), id.to_owned())),
        }
    }

    /// The upload goes on.
    pub fn keep(mut self) {
        self.upload = None;
    }

    /// Discards now, and waits until it is done (it completes even if this wait is dropped).
    pub async fn now(mut self) {
        if let Some((cache, locks, id)) = self.upload.take() {
            let _ = tokio::spawn(discard(cache, locks, id)).await;
        }
    }
}

impl Drop for Discard {
    fn drop(&mut self) {
        if let Some((cache, locks, id)) = self.upload.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(discard(cache, locks, id));
            }
        }
    }
}

async fn discard(cache: Arc<Cache>, locks: Arc<UploadLocks>, id: String) {
    let held = locks.acquire(&id).await;
    let storage = Arc::clone(cache.storage());
    let upload = id.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let removed = storage.discard_upload(&upload);
        if removed.is_ok() {
            // Durable, so a restart does not bring the record back without its file.
            let _ = storage.index.flush();
        }
        removed
    })
    .await;
    match removed {
        Ok(Ok(bytes)) => cache.upload_freed(bytes),
        Ok(Err(e)) => tracing::warn!(upload = %id, error = %e, "cannot discard a failed upload"),
        Err(e) => tracing::warn!(upload = %id, error = %e, "upload discard task failed"),
    }
    drop(held);
    locks.forget(&id);
}

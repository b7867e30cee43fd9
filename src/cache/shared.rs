//! The shared store behind this node's storage: where a local miss looks before upstream, and
//! where a blob fetched from upstream goes once verified, so that the other nodes find it.
//!
//! Everything read from the shared store goes through a fill like an upstream response does:
//! its bytes are hashed on the way into the local tier, and a blob that does not match is
//! discarded, never indexed. So the shared store is trusted for availability, not integrity.
//!
//! Across nodes, a node fetching a blob from upstream leaves a marker (`fills/<hex>`, with the
//! time, refreshed while the fetch lasts); another node that misses the same blob meanwhile
//! waits for it to appear in the shared store instead of fetching it too. Markers rely on the
//! nodes' clocks agreeing within seconds (NTP), and a stale one (a node died) is ignored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt};

use super::fill::{FillSource, SourceError};
use crate::oci::Digest;
use crate::storage::shared::{SharedError, SharedStore};
use crate::storage::Storage;

/// Blobs written to the shared store at once by one node (each holds a few parts in memory).
const CONCURRENT_WRITES: usize = 4;
/// How often a fill marker is rewritten, and after how long without that it is stale.
const MARKER_REFRESH: Duration = Duration::from_secs(5);
const MARKER_STALE: Duration = Duration::from_secs(20);
/// How often a node waiting for another's fill looks whether the blob is there.
const WAIT_POLL: Duration = Duration::from_millis(200);

pub(super) struct Tier {
    pub(super) store: Arc<SharedStore>,
    writes: tokio::sync::Semaphore,
    /// Digest → the task refreshing its marker, while this node fetches it from upstream.
    markers: Mutex<HashMap<Digest, tokio::task::JoinHandle<()>>>,
}

fn marker_name(digest: &Digest) -> String {
    format!("fills/{}", digest.hex())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Source = std::pin::Pin<Box<dyn Future<Output = Result<FillSource, SourceError>> + Send>>;

impl Tier {
    pub(super) fn new(store: Arc<SharedStore>) -> Self {
        Tier {
            store,
            writes: tokio::sync::Semaphore::new(CONCURRENT_WRITES),
            markers: Mutex::new(HashMap::new()),
        }
    }

    /// The blob as a fill source, when the shared store has it.
    pub(super) async fn source(&self, digest: &Digest) -> Result<Option<Source>, SharedError> {
        let Some(blob) = self.store.blob(digest).await? else {
            return Ok(None);
        };
        let source = FillSource {
            content_length: Some(blob.size),
            body: blob
                .body
                .map_err(|e| Arc::new(SharedError::Unavailable(e)) as SourceError)
                .boxed(),
        };
        Ok(Some(Box::pin(async move { Ok(source) })))
    }

    /// [`Tier::source`], waiting for it while another node fetches the blob from upstream.
    /// `None`: go upstream (the store does not have it, nobody else is fetching it, or the
    /// store cannot be reached, which must not stop the mirror).
    pub(super) async fn source_or_wait(&self, digest: &Digest) -> Option<Source> {
        loop {
            match self.source(digest).await {
                Ok(Some(source)) => return Some(source),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "shared store unavailable; fetching from upstream");
                    return None;
                }
            }
            if !self.another_node_fills(digest).await {
                return None;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    async fn another_node_fills(&self, digest: &Digest) -> bool {
        let Ok(Some(body)) = self.store.get(&marker_name(digest)).await else {
            return false;
        };
        let at: u64 = std::str::from_utf8(&body)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        now_ms().saturating_sub(at) < MARKER_STALE.as_millis() as u64
    }

    /// Tells the other nodes that this one fetches `digest` from upstream, until
    /// [`Tier::unmark`].
    pub(super) fn mark_filling(&self, digest: &Digest) {
        let (store, name) = (Arc::clone(&self.store), marker_name(digest));
        let refresher = tokio::spawn(async move {
            loop {
                let _ = store.put(&name, now_ms().to_string().into()).await;
                tokio::time::sleep(MARKER_REFRESH).await;
            }
        });
        let previous = self
            .markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), refresher);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    pub(super) async fn unmark(&self, digest: &Digest) {
        let refresher = self
            .markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
        if let Some(refresher) = refresher {
            refresher.abort();
            let _ = self.store.delete(&marker_name(digest)).await;
        }
    }

    /// Writes a verified local blob to the shared store (unless it is there already). A
    /// failure only costs the other nodes a fetch of their own.
    pub(super) async fn write_behind(&self, storage: &Storage, digest: &Digest) -> bool {
        let Ok(_permit) = self.writes.acquire().await else {
            return false;
        };
        let size = storage.index.blob(digest).ok().flatten().map(|r| r.size);
        if size.is_some() && self.store.blob_size(digest).await.ok().flatten() == size {
            return false;
        }
        match self
            .store
            .put_blob_file(digest, &storage.blobs.path(digest))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cannot write a blob to the shared store");
                false
            }
        }
    }
}

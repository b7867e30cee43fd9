//! The shared store behind this node's storage: where a local miss looks before upstream, and
//! where a blob fetched from upstream goes once verified, so that the other nodes find it.
//!
//! Everything read from the shared store is hashed as it is read, like an upstream response:
//! a blob that does not match is never served whole and never indexed, so the shared store is
//! trusted for availability, not integrity. A whole blob's first read on this node passes
//! straight through to its client ([`super::passing`]); a blob read again (or in part, or
//! to be kept) goes through a fill into the local tier. So the local tier holds what this node
//! serves more than once, and a single pull costs no more than a proxy's copy
//! (`nginx`'s `proxy_cache_min_uses 2`, for the same reason).
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
use super::passing::{Passing, SharedReads};
use super::BlobBody;
use crate::oci::Digest;
use crate::storage::shared::{SharedBlob, SharedError, SharedStore};

/// Blobs written to the shared store at once by one node (each holds a few parts in memory).
const CONCURRENT_WRITES: usize = 4;
/// How often a fill marker is rewritten, and after how long without that it is stale.
const MARKER_REFRESH: Duration = Duration::from_secs(5);
const MARKER_STALE: Duration = Duration::from_secs(20);
/// Added to a marker write's own time before it is read back.
const CLAIM_MARGIN: Duration = Duration::from_millis(10);
/// How often a node waiting for another's fill looks whether the blob is there.
const WAIT_POLL: Duration = Duration::from_millis(200);
/// Blobs remembered as read once from the shared store (about 200 bytes each with moka's
/// bookkeeping, so at most a few MiB), and for how long: a blob read again within that is
/// kept in the local tier.
const FIRST_READS: u64 = 16_384;
const FIRST_READ_WINDOW: Duration = Duration::from_secs(3600);

/// Who fetches a blob from upstream.
pub(super) enum Claim {
    Ours,
    /// Another node does: wait for the blob to appear in the shared store.
    Theirs,
}

fn fresh(at_ms: u64) -> bool {
    now_ms().saturating_sub(at_ms) < MARKER_STALE.as_millis() as u64
}

pub(super) struct Tier {
    pub(super) store: Arc<SharedStore>,
    /// This process's name in fill markers.
    node: String,
    writes: Arc<tokio::sync::Semaphore>,
    /// Digest → the task refreshing this node's claim, while it fetches it from upstream.
    markers: Mutex<HashMap<Digest, (tokio::task::JoinHandle<()>, FillClaim)>>,
    /// Blobs read once from the shared store lately, not kept: see [`Tier::passes`].
    first_reads: moka::sync::Cache<Digest, ()>,
    reads: SharedReads,
}

fn claims_dir(digest: &Digest) -> String {
    format!("fills/{}/", digest.hex())
}

/// A node's claim to fetch a blob from upstream: named `<claimed at, ms, 16 digits>-<node>`,
/// so that names sort by when the claim was made; its body is when it was last refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FillClaim {
    at_ms: u64,
    node: String,
}

impl FillClaim {
    fn name(&self) -> String {
        format!("{:016}-{}", self.at_ms, self.node)
    }

    fn parse(name: &str) -> Option<Self> {
        let (at, node) = name.split_once('-')?;
        Some(FillClaim {
            at_ms: at.parse().ok()?,
            node: node.to_owned(),
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Source = std::pin::Pin<Box<dyn Future<Output = Result<FillSource, SourceError>> + Send>>;

/// A blob read from the shared store, as the source of a fill into the local tier.
pub(super) fn fill_source(blob: SharedBlob) -> Source {
    let source = FillSource {
        content_length: Some(blob.size),
        body: blob
            .body
            .map_err(|e| Arc::new(SharedError::Unavailable(e)) as SourceError)
            .boxed(),
    };
    Box::pin(async move { Ok(source) })
}

impl Tier {
    pub(super) fn new(store: Arc<SharedStore>, reads: SharedReads) -> Self {
        let mut id = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
        Tier {
            store,
            node: hex::encode(id),
            writes: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_WRITES)),
            markers: Mutex::new(HashMap::new()),
            first_reads: moka::sync::Cache::builder()
                .max_capacity(FIRST_READS)
                .time_to_live(FIRST_READ_WINDOW)
                .build(),
            reads,
        }
    }

    /// A blob read from the shared store, passing through to one client unkept.
    pub(super) fn passing(&self, digest: &Digest, blob: SharedBlob) -> Passing {
        Passing {
            digest: digest.clone(),
            size: blob.size,
            body: blob.body.map_err(std::io::Error::other).boxed(),
            check: self.reads,
        }
    }

    /// Whether a whole read of `digest` from the shared store passes straight through to its
    /// client (its first read lately) rather than filling the local tier (a read again).
    pub(super) fn passes(&self, digest: &Digest) -> bool {
        self.first_reads
            .entry_by_ref(digest)
            .or_insert(())
            .is_fresh()
    }

    /// The blob, when the shared store has it (`known_size`: see [`SharedStore::blob`]).
    pub(super) async fn blob(
        &self,
        digest: &Digest,
        known_size: Option<u64>,
    ) -> Result<Option<SharedBlob>, SharedError> {
        self.store.blob(digest, known_size).await
    }

    /// [`Tier::blob`], waiting for it while another node fetches the blob from upstream.
    /// `None`: go upstream (the store does not have it, nobody else is fetching it, or the
    /// store cannot be reached, which must not stop the mirror).
    pub(super) async fn blob_or_wait(&self, digest: &Digest) -> Option<SharedBlob> {
        loop {
            match self.blob(digest, None).await {
                Ok(Some(blob)) => return Some(blob),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "shared store unavailable; fetching from upstream");
                    return None;
                }
            }
            if !self.another_node_fills(digest).await {
                // A claim goes only after its blob was written: looked at again now that the
                // claim is gone, the blob is there if that fill succeeded.
                return self.blob(digest, None).await.ok().flatten();
            }
            tracing::debug!(%digest, "another node fetches this blob; waiting for it");
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Whether a fresh claim of another node says it fetches `digest` now.
    async fn another_node_fills(&self, digest: &Digest) -> bool {
        self.fresh_claims(digest)
            .await
            .iter()
            .any(|claim| claim.node != self.node)
    }

    /// The claims on `digest` whose nodes still refresh them, earliest first.
    async fn fresh_claims(&self, digest: &Digest) -> Vec<FillClaim> {
        let dir = claims_dir(digest);
        let Ok(listed) = self.store.list(&dir).await else {
            return Vec::new();
        };
        let mut claims = Vec::new();
        for entry in listed {
            let Some(claim) = FillClaim::parse(&entry.name) else {
                continue;
            };
            let refreshed = match self.store.get(&format!("{dir}{}", entry.name)).await {
                Ok(Some(body)) => std::str::from_utf8(&body)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0),
                _ => 0,
            };
            if fresh(refreshed) {
                claims.push(claim);
            }
        }
        claims
    }

    /// Claims the fetch of `digest` from upstream for this node. Without conditional writes,
    /// each node writes a claim of its own, named by when it claimed, and after its write
    /// (and as long again) lists the claims: the earliest wins, the others withdraw and wait
    /// for the blob. A node whose claim came later had looked for claims before writing and
    /// found none visible, so the earlier claim is visible to it by the time it lists; only a
    /// write that takes far longer than the other node's write and wait lets both fetch (an
    /// upstream GET more, never a wrong blob). While it is ours, the claim is refreshed,
    /// until [`Tier::unmark`].
    pub(super) async fn claim(&self, digest: &Digest) -> Claim {
        if self.another_node_fills(digest).await {
            return Claim::Theirs;
        }
        let mine = FillClaim {
            at_ms: now_ms(),
            node: self.node.clone(),
        };
        let name = format!("{}{}", claims_dir(digest), mine.name());
        let writing = std::time::Instant::now();
        if self
            .store
            .put(&name, mine.at_ms.to_string().into())
            .await
            .is_err()
        {
            // The store cannot take claims now: fetch, as if alone.
            return Claim::Ours;
        }
        tokio::time::sleep(writing.elapsed() + CLAIM_MARGIN).await;
        let claims = self.fresh_claims(digest).await;
        if claims.first().is_some_and(|first| first.node != self.node) {
            let _ = self.store.delete(&name).await;
            return Claim::Theirs;
        }
        let store = Arc::clone(&self.store);
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(MARKER_REFRESH).await;
                let _ = store.put(&name, now_ms().to_string().into()).await;
            }
        });
        let previous = self
            .markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), (refresher, mine));
        if let Some((previous, _)) = previous {
            previous.abort();
        }
        Claim::Ours
    }

    pub(super) async fn unmark(&self, digest: &Digest) {
        let claimed = self
            .markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
        if let Some((refresher, claim)) = claimed {
            refresher.abort();
            let _ = self
                .store
                .delete(&format!("{}{}", claims_dir(digest), claim.name()))
                .await;
        }
    }

    /// Writes a blob being filled to the shared store as its bytes arrive: the object is
    /// completed (visible) only once the fill verified the last byte, and never if the fill
    /// fails. True when written; a failure only costs the other nodes a fetch of their own.
    pub(super) fn write_through(
        &self,
        body: BlobBody,
        digest: &Digest,
    ) -> tokio::task::JoinHandle<bool> {
        let (store, writes, digest) = (
            Arc::clone(&self.store),
            Arc::clone(&self.writes),
            digest.clone(),
        );
        tokio::spawn(async move {
            let Ok(_permit) = writes.acquire().await else {
                return false;
            };
            match store
                .put_blob_stream(&digest, body.read_all().boxed())
                .await
            {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "cannot write a blob to the shared store");
                    false
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that claims a blob another node is fetching waits; once that node is done (its
    /// marker gone), a claim is the claimer's own.
    #[tokio::test]
    async fn a_blob_another_node_fetches_is_not_claimed_again() {
        let store = Arc::new(crate::storage::shared::in_memory());
        let (a, b) = (
            Tier::new(Arc::clone(&store), SharedReads::Hashed),
            Tier::new(Arc::clone(&store), SharedReads::Hashed),
        );
        let digest = Digest::of(b"layer");
        assert!(matches!(a.claim(&digest).await, Claim::Ours));
        assert!(matches!(b.claim(&digest).await, Claim::Theirs));
        assert!(b.another_node_fills(&digest).await);
        assert!(!a.another_node_fills(&digest).await);
        a.unmark(&digest).await;
        assert!(!b.another_node_fills(&digest).await);
        assert!(matches!(b.claim(&digest).await, Claim::Ours));
        // A marker nobody refreshed for too long is a dead node's.
        b.unmark(&digest).await;
        let stale = now_ms() - MARKER_STALE.as_millis() as u64 - 1;
        let dead = FillClaim {
            at_ms: stale,
            node: "dead".into(),
        };
        store
            .put(
                &format!("{}{}", claims_dir(&digest), dead.name()),
                stale.to_string().into(),
            )
            .await
            .unwrap();
        assert!(!a.another_node_fills(&digest).await);
        assert!(matches!(a.claim(&digest).await, Claim::Ours));
    }

    /// Nodes that claim the same blob at the same moment agree on one of them.
    #[tokio::test]
    async fn simultaneous_claims_elect_one_node() {
        let store = Arc::new(crate::storage::shared::in_memory());
        for round in 0..20u8 {
            let tiers: Vec<Tier> = (0..3)
                .map(|_| Tier::new(Arc::clone(&store), SharedReads::Hashed))
                .collect();
            let digest = Digest::of(&[round]);
            let claims =
                futures_util::future::join_all(tiers.iter().map(|t| t.claim(&digest))).await;
            let ours = claims.iter().filter(|c| matches!(c, Claim::Ours)).count();
            assert_eq!(ours, 1, "round {round}");
        }
    }
}

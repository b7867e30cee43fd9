//! Reading one large blob with several ranged GETs at once, in order.
//!
//! One GET stream from an S3 store is often bound by the store's latency rather than by CPU or
//! the network: measured here, with this box's CPU stolen by its neighbours, a 300 MiB object
//! from Garage took 1.7–2.4 s over one GET and 0.9–1.5 s over three ranged GETs at once. And
//! Garage answers a ranged GET of a large object only after reading its block list from a
//! quorum of nodes, ~45 ms here (a whole GET starts at once), so each part waits about as long
//! as its 8 MiB take to arrive: six in flight hide that wait where three did not
//! (bench/README.md). So a blob is read as its first part, streamed as it arrives, while the
//! next parts are fetched ahead by tasks of their own, each gathered into memory (its chunks
//! kept as they came, not copied) until the reader gets to it. A reader holds at most
//! [`PARTS_AHEAD`] parts of [`PART`] bytes; at most [`READERS_AHEAD`] readers read ahead at
//! once, and the others read one GET stream (when many read at once, the store is busy
//! anyway), so what clients can make a node hold in memory is bounded: 96 MiB.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Bytes one ranged GET reads (eight of Garage's 1 MiB blocks). 4 MiB parts cost Garage more
/// CPU (a GET's own work, 76 of them for 300 MiB) for no faster read (bench/README.md).
pub const PART: u64 = 8 << 20;
/// Parts one reader fetches ahead of the one it is sending (8 did no better than 6, and
/// cost Garage more CPU).
pub const PARTS_AHEAD: usize = 6;
/// Readers that may fetch ahead at once (each holds up to `PARTS_AHEAD` × `PART` bytes).
pub const READERS_AHEAD: usize = 2;

/// Who may read ahead: a permit per reader, [`READERS_AHEAD`] in all.
pub struct ReadAhead(Arc<Semaphore>);

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead(Arc::new(Semaphore::new(READERS_AHEAD)))
    }
}

/// The parts of a `size`-byte object after its first, fetched ahead from now on; `None` when
/// every read-ahead permit is taken.
pub(super) fn ahead(
    store: &Arc<dyn ObjectStore>,
    key: &Key,
    size: u64,
    ahead: &ReadAhead,
) -> Option<Parts> {
    let permit = Arc::clone(&ahead.0).try_acquire_owned().ok()?;
    let mut parts = Parts {
        store: Arc::clone(store),
        key: key.clone(),
        size,
        next: PART,
        fetching: VecDeque::new(),
        _permit: permit,
    };
    parts.fetch_ahead();
    Some(parts)
}

/// The bytes of `key` after its first part (`first`, already streaming), `size` in all: from
/// `parts` when they are read ahead, else as one more ranged GET.
pub(super) fn rest(
    store: Arc<dyn ObjectStore>,
    key: Key,
    size: u64,
    first: BoxStream<'static, Result<Bytes, object_store::Error>>,
    parts: Option<Parts>,
) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    let Some(parts) = parts else {
        let tail = futures_util::stream::once(get_range(store, key, PART..size))
            .try_flatten()
            .boxed();
        return first.chain(tail).boxed();
    };
    let rest = futures_util::stream::unfold(parts, |mut parts| async move {
        let part = parts.next_part().await?;
        Some((part, parts))
    })
    .map_ok(|chunks| futures_util::stream::iter(chunks.into_iter().map(Ok)))
    .try_flatten();
    first.chain(rest).boxed()
}

async fn get_range(
    store: Arc<dyn ObjectStore>,
    key: Key,
    range: Range<u64>,
) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, object_store::Error> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(range)),
        ..GetOptions::default()
    };
    Ok(store.get_opts(&key, options).await?.into_stream())
}

/// The parts after the first, fetched ahead in order.
pub(super) struct Parts {
    store: Arc<dyn ObjectStore>,
    key: Key,
    size: u64,
    /// Where the next part not yet fetched starts.
    next: u64,
    fetching: VecDeque<JoinHandle<Result<Vec<Bytes>, object_store::Error>>>,
    _permit: OwnedSemaphorePermit,
}

impl Parts {
    /// The size of the object they are parts of.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Starts fetching parts until `PARTS_AHEAD` are on their way.
    fn fetch_ahead(&mut self) {
        while self.fetching.len() < PARTS_AHEAD && self.next < self.size {
            let range = self.next..(self.next + PART).min(self.size);
            self.next = range.end;
            let (store, key) = (Arc::clone(&self.store), self.key.clone());
            self.fetching.push_back(tokio::spawn(async move {
                let expected = range.end - range.start;
                let chunks: Vec<Bytes> = get_range(store, key.clone(), range)
                    .await?
                    .try_collect()
                    .await?;
                let got: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                if got != expected {
                    return Err(object_store::Error::Generic {
                        store: "S3",
                        source: format!("{key}: a ranged GET of {expected} bytes gave {got}")
                            .into(),
                    });
                }
                Ok(chunks)
            }));
        }
    }

    /// The next part's chunks, once fetched; `None` after the last.
    async fn next_part(&mut self) -> Option<Result<Vec<Bytes>, object_store::Error>> {
        let fetching = self.fetching.pop_front()?;
        self.fetch_ahead();
        Some(match fetching.await {
            Ok(part) => part,
            Err(e) => Err(object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            }),
        })
    }
}

impl Drop for Parts {
    /// A reader that goes away (its client hung up) stops the parts it fetched ahead.
    fn drop(&mut self) {
        for fetching in &self.fetching {
            fetching.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;

    use super::*;
    use crate::oci::Digest;

    async fn read(store: &crate::storage::shared::SharedStore, digest: &Digest) -> Vec<u8> {
        read_knowing(store, digest, None).await
    }

    async fn read_knowing(
        store: &crate::storage::shared::SharedStore,
        digest: &Digest,
        known_size: Option<u64>,
    ) -> Vec<u8> {
        let blob = store.blob(digest, known_size).await.unwrap().unwrap();
        let chunks: Vec<Bytes> = blob.body.try_collect().await.unwrap();
        let bytes = chunks.concat();
        assert_eq!(bytes.len() as u64, blob.size);
        bytes
    }

    /// Blobs of every shape around the part size read back byte for byte, in order, whether
    /// their reader may read ahead (from the first GET's answer or, with the size known, from
    /// before it) or (permits all taken) reads one more GET.
    #[tokio::test]
    async fn blobs_read_in_parts_come_back_whole_and_in_order() {
        let store = crate::storage::shared::in_memory();
        let part = PART as usize;
        for len in [0, 1, part - 1, part, part + 1, 3 * part + 12_345] {
            let data: Vec<u8> = (0..len)
                .map(|i| (i % 251) as u8 ^ (i / part) as u8)
                .collect();
            let digest = Digest::of(&data);
            store
                .put_blob_bytes(&digest, Bytes::from(data.clone()))
                .await
                .unwrap();
            assert!(read(&store, &digest).await == data, "{len} bytes");
            // Parts asked for before the first GET's answer, for the size a link says; a link
            // that is wrong about it costs those parts, not the bytes.
            for known in [
                len as u64,
                len as u64 + 1,
                (len as u64).saturating_sub(part as u64),
            ] {
                let got = read_knowing(&store, &digest, Some(known)).await;
                assert!(got == data, "{len} bytes, known as {known}");
            }
        }
        let data: Vec<u8> = (0..2 * part + 7).map(|i| (i % 13) as u8).collect();
        let digest = Digest::of(&data);
        store
            .put_blob_bytes(&digest, Bytes::from(data.clone()))
            .await
            .unwrap();
        // Readers holding every read-ahead permit: one more reader still gets every byte.
        let mut holding = Vec::new();
        for _ in 0..READERS_AHEAD {
            holding.push(store.blob(&digest, None).await.unwrap().unwrap());
        }
        assert!(read(&store, &digest).await == data);
        drop(holding);
        assert!(read(&store, &digest).await == data);
        assert!(store
            .blob(&Digest::of(b"absent"), None)
            .await
            .unwrap()
            .is_none());
    }
}

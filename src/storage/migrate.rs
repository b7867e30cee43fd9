//! Copying a node's blob store into the shared store (`berth storage migrate --to-s3`), on a
//! stopped node: every indexed blob, hashed while it is read and sent, so that a file whose
//! content no longer matches its digest is never made visible in the store (its upload is
//! abandoned before it completes). A blob the store already holds with the right size is
//! skipped, so a run cut short continues where it stopped. The private projects' records are
//! the registry's part (`registry::private::migrate`).

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use sha2::Digest as _;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::index::{Index, IndexError};
use super::shared::blobs::blob_name;
use super::shared::{SharedError, SharedStore};
use super::{Storage, StorageError};
use crate::oci::Digest;

/// Blobs sent at once: enough to fill the store's bandwidth with small blobs, each holding at
/// most a few multipart parts in memory (`shared::blobs::PARTS_IN_FLIGHT`).
pub const BLOBS_AT_ONCE: usize = 4;
/// Index entries read ahead of the copies.
const READ_AHEAD: usize = 64;

/// What a migration tells whoever shows its progress.
pub trait Progress: Sync {
    /// The work found: blobs and their bytes.
    fn planned(&self, blobs: u64, bytes: u64);
    /// Bytes read from disk and handed to the store.
    fn sent(&self, bytes: u64);
    /// A blob the store already had: its bytes need not be sent.
    fn skipped(&self, bytes: u64);
    /// Something not copied, and why.
    fn warn(&self, message: &str);
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlobReport {
    pub copied: u64,
    pub skipped: u64,
    /// Blobs whose file no longer matches its digest, or is gone: not copied.
    pub corrupt: u64,
    pub bytes_copied: u64,
    /// The digests of the blobs not copied, so that no record is made to point at them.
    pub not_copied: HashSet<Digest>,
}

enum Outcome {
    Copied(u64),
    Skipped,
    Corrupt(String),
}

/// Copies every blob the index holds into `store`. Stops at the first error of the store
/// itself (what was copied stays: a rerun skips it).
pub async fn copy_blobs(
    storage: Arc<Storage>,
    store: &SharedStore,
    progress: &dyn Progress,
) -> Result<BlobReport, StorageError> {
    let totals = {
        let storage = Arc::clone(&storage);
        tokio::task::spawn_blocking(move || storage.index.totals())
            .await
            .map_err(io::Error::other)??
    };
    progress.planned(totals.blobs, totals.bytes);
    let paths = Arc::clone(&storage);
    let entries = index_stream(storage, |index, send| {
        for entry in index.blobs() {
            if !send(entry) {
                break;
            }
        }
    });
    let mut copies = entries
        .map(|entry| async {
            let (digest, record) = entry?;
            let path = paths.blobs.path(&digest);
            let outcome = copy_one(store, &path, &digest, record.size, progress).await?;
            Ok::<_, StorageError>((digest, outcome))
        })
        .buffer_unordered(BLOBS_AT_ONCE);
    let mut report = BlobReport::default();
    while let Some(copied) = copies.next().await {
        let (digest, outcome) = copied?;
        match outcome {
            Outcome::Copied(bytes) => {
                report.copied += 1;
                report.bytes_copied += bytes;
            }
            Outcome::Skipped => report.skipped += 1,
            Outcome::Corrupt(why) => {
                progress.warn(&format!("{digest} not copied: {why}"));
                report.corrupt += 1;
                report.not_copied.insert(digest);
            }
        }
    }
    Ok(report)
}

async fn copy_one(
    store: &SharedStore,
    path: &std::path::Path,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> Result<Outcome, SharedError> {
    if store.blob_size(digest).await? == Some(size) {
        progress.skipped(size);
        return Ok(Outcome::Skipped);
    }
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) => return Ok(Outcome::Corrupt(format!("cannot open its file: {e}"))),
    };
    let mut reader = Verifying::new(file, digest, size, progress);
    match store.put_reader(&blob_name(digest), &mut reader).await {
        Ok(()) => Ok(Outcome::Copied(size)),
        Err(e) => match (reader.mismatch.take(), e) {
            (Some(why), _) => Ok(Outcome::Corrupt(why)),
            // Reading the file failed (not the store): that blob is unusable, the rest go on.
            (None, SharedError::Corrupt(why)) => Ok(Outcome::Corrupt(why)),
            (None, e) => Err(e),
        },
    }
}

/// Reads a blob file, hashing what it reads; at the end of the file, fails the read when the
/// bytes are not the blob's, so that the upload fed by it is abandoned, not completed.
struct Verifying<'a, R> {
    inner: R,
    digest: &'a Digest,
    size: u64,
    read: u64,
    hasher: sha2::Sha256,
    progress: &'a dyn Progress,
    /// Why the content is not the blob's, once the end was reached.
    mismatch: Option<String>,
    verified: bool,
}

impl<'a, R> Verifying<'a, R> {
    fn new(inner: R, digest: &'a Digest, size: u64, progress: &'a dyn Progress) -> Self {
        Verifying {
            inner,
            digest,
            size,
            read: 0,
            hasher: sha2::Sha256::new(),
            progress,
            mismatch: None,
            verified: false,
        }
    }

    /// At the end of the file: whether it was the blob.
    fn check(&mut self) -> io::Result<()> {
        if self.verified {
            return Ok(());
        }
        let actual = Digest::from_sha256_bytes(&self.hasher.finalize_reset());
        let why = if self.read != self.size {
            format!("its file has {} bytes, not {}", self.read, self.size)
        } else if actual != *self.digest {
            format!("its file hashes to {actual}")
        } else {
            self.verified = true;
            return Ok(());
        };
        self.mismatch = Some(why.clone());
        Err(io::Error::new(io::ErrorKind::InvalidData, why))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Verifying<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() && buf.remaining() > 0 {
                    return Poll::Ready(this.check());
                }
                this.hasher.update(new);
                this.read += new.len() as u64;
                this.progress.sent(new.len() as u64);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Entries of the index read on a blocking thread (sled blocks) and handed over a bounded
/// channel: memory stays bounded however large the index is. `produce` gets a `send` that
/// returns false once nobody reads any more.
pub fn index_stream<T: Send + 'static>(
    storage: Arc<Storage>,
    produce: impl FnOnce(&Index, &dyn Fn(Result<T, IndexError>) -> bool) + Send + 'static,
) -> futures_util::stream::BoxStream<'static, Result<T, StorageError>> {
    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let feeder = tokio::task::spawn_blocking(move || {
        produce(&storage.index, &|item| tx.blocking_send(item).is_ok());
    });
    let items = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|item| item.map_err(StorageError::from));
    // The feeder's end: a panic in it is an error, not a silently short list.
    let end = futures_util::stream::once(async move {
        feeder.await.err().map(|e| Err(io::Error::other(e).into()))
    })
    .filter_map(futures_util::future::ready);
    items.chain(end).boxed()
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;

//! One upstream fetch of a blob that feeds every client asking for it meanwhile, and the cache.
//!
//! A [`Fill`] runs as its own task: it streams the upstream body into a temp file while hashing
//! it, and publishes progress on a watch channel. Each client holds a [`FillReader`] that reads
//! the temp file (through its own handle, positioned reads) up to the bytes already written,
//! then waits for more. A client hanging up therefore never aborts the fill, and a client
//! arriving late starts at byte 0 of the same fetch instead of opening a second one.
//!
//! Readers withhold the last byte until the fill has verified the digest, so no client ever
//! receives a complete body for a blob that failed verification: on a failure every reader
//! errors, which aborts its response. Committing the verified file (fsync, rename, index)
//! happens after, without holding clients up. A range that ends before the last byte would
//! not be protected by that, so a ranged request waits for [`Fill::verified`] first.

mod reader;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::File;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use tempfile::NamedTempFile;
use tokio::sync::watch;

pub use self::reader::FillReader;
pub use self::writer::FillWriter;
use crate::oci::Digest;
use crate::storage::StorageError;

/// Bytes gathered from upstream before they are written out and shown to readers.
const WRITE_BLOCK: usize = 256 * 1024;
/// Batches received but not yet written, at most (each a little over `WRITE_BLOCK`).
const QUEUED_BATCHES: usize = 4;
/// Bytes just written that are also kept in memory, so that readers keeping up with the fill
/// take them from there instead of reading the file back.
const RECENT_BYTES: usize = 2 * 1024 * 1024;
/// Largest chunk a reader hands to its client at once.
const READ_CHUNK: u64 = 256 * 1024;

/// Why the source of a fill failed, kept whole: the cache only passes it on, and whoever made
/// the source (the registry layer, for upstream's errors) looks inside to answer the client.
pub type SourceError = Arc<dyn std::error::Error + Send + Sync>;

/// What a fill reads: a plain byte stream, with the length its sender declared, if any.
pub struct FillSource {
    pub content_length: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, SourceError>>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FillError {
    /// The source could not be opened, or failed while streaming.
    #[error(transparent)]
    Source(SourceError),
    #[error("blob {expected} from upstream hashed to {actual}; discarded")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(
        "blob {digest} from upstream was {actual} bytes, but {declared} were declared; discarded"
    )]
    SizeMismatch {
        digest: Digest,
        declared: u64,
        actual: u64,
    },
    #[error("cache storage failed: {0}")]
    Storage(#[source] Arc<StorageError>),
    #[error("the fill task ended unexpectedly")]
    Vanished,
}

/// Why a wait for verification ended without it.
#[derive(Debug, Clone)]
pub enum NotVerified {
    Failed(Arc<FillError>),
    /// No progress at all for the time allowed.
    Stalled(std::time::Duration),
}

#[derive(Debug, Clone)]
pub enum Phase {
    /// Waiting for upstream's response headers.
    Connecting,
    Streaming,
    /// Every byte is in and hashes to the digest: safe to deliver whole, not yet durable.
    Verified,
    /// Verified, on disk under its digest, indexed.
    Committed,
    Failed(Arc<FillError>),
}

#[derive(Debug, Clone)]
pub struct FillState {
    pub written: u64,
    /// What upstream declared in `Content-Length`, if it did.
    pub size: Option<u64>,
    pub phase: Phase,
}

/// A fill in progress (or just finished), shared by all its readers.
pub struct Fill {
    digest: Digest,
    state: watch::Receiver<FillState>,
    temp: Arc<File>,
    recent: std::sync::Mutex<Recent>,
}

/// The chunks written last, with their offsets, oldest first, and their total size.
#[derive(Default)]
struct Recent {
    chunks: std::collections::VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Fill {
    /// A new fill writing into `temp` (tests, benches). Opens a file: blocks, so the server
    /// uses [`Fill::with_reader`].
    pub fn new(digest: Digest, temp: NamedTempFile) -> std::io::Result<(Arc<Fill>, FillWriter)> {
        let read_handle = temp.reopen()?;
        Ok(Fill::with_reader(digest, temp, read_handle))
    }

    /// A new fill writing into `temp`, read through `read_handle` (`temp` reopened, on the
    /// blocking pool, so that no file is opened under the in-flight lock). The caller spawns
    /// [`FillWriter::run`].
    pub fn with_reader(
        digest: Digest,
        temp: NamedTempFile,
        read_handle: File,
    ) -> (Arc<Fill>, FillWriter) {
        let (tx, rx) = watch::channel(FillState {
            written: 0,
            size: None,
            phase: Phase::Connecting,
        });
        let fill = Arc::new(Fill {
            digest: digest.clone(),
            state: rx,
            temp: Arc::new(read_handle),
            recent: std::sync::Mutex::default(),
        });
        let writer = FillWriter {
            digest,
            temp,
            state: tx,
            fill: Arc::clone(&fill),
        };
        (fill, writer)
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    fn keep_recent(&self, offset: u64, chunk: Bytes) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.bytes += chunk.len();
        recent.chunks.push_back((offset, chunk));
        while recent.bytes > RECENT_BYTES && recent.chunks.len() > 1 {
            if let Some((_, old)) = recent.chunks.pop_front() {
                recent.bytes -= old.len();
            }
        }
    }

    /// Bytes from `offset` up to `end` (or fewer) out of a chunk still held in memory.
    fn recent_slice(&self, offset: u64, end: u64) -> Option<Bytes> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        // Chunks are in offset order: the one holding `offset` is the last starting at or
        // before it (a reader keeping up wants one near the end of a long list).
        let holder = recent.chunks.partition_point(|(start, _)| *start <= offset);
        let (start, chunk) = recent.chunks.get(holder.checked_sub(1)?)?;
        let from = usize::try_from(offset - start).ok()?;
        let to =
            usize::try_from(end.saturating_sub(*start)).map_or(chunk.len(), |e| e.min(chunk.len()));
        (from < to).then(|| chunk.slice(from..to))
    }

    /// Waits until upstream has answered: the declared size on success.
    pub async fn started(&self) -> Result<Option<u64>, Arc<FillError>> {
        let mut state = self.state.clone();
        loop {
            let current = state.borrow_and_update().clone();
            match current.phase {
                Phase::Connecting => {}
                Phase::Streaming | Phase::Verified | Phase::Committed => return Ok(current.size),
                Phase::Failed(e) => return Err(e),
            }
            if state.changed().await.is_err() {
                return Err(Arc::new(FillError::Vanished));
            }
        }
    }

    /// Waits for the end of the fill: `Ok` once the blob is committed.
    pub async fn finished(&self) -> Result<(), Arc<FillError>> {
        let mut state = self.state.clone();
        loop {
            let phase = state.borrow_and_update().phase.clone();
            match phase {
                Phase::Committed => return Ok(()),
                Phase::Failed(e) => return Err(e),
                Phase::Connecting | Phase::Streaming | Phase::Verified => {}
            }
            if state.changed().await.is_err() {
                return Err(Arc::new(FillError::Vanished));
            }
        }
    }

    /// Waits until every byte is in and hashes to the digest: the blob's size. Gives up when
    /// the fill makes no progress for `stall` (a fill that keeps receiving bytes is waited
    /// for however long the blob takes).
    pub async fn verified(&self, stall: std::time::Duration) -> Result<u64, NotVerified> {
        let mut state = self.state.clone();
        loop {
            let current = state.borrow_and_update().clone();
            match current.phase {
                Phase::Verified | Phase::Committed => return Ok(current.written),
                Phase::Failed(e) => return Err(NotVerified::Failed(e)),
                Phase::Connecting | Phase::Streaming => {}
            }
            match tokio::time::timeout(stall, state.changed()).await {
                Err(_) => return Err(NotVerified::Stalled(stall)),
                Ok(Err(_)) => return Err(NotVerified::Failed(Arc::new(FillError::Vanished))),
                Ok(Ok(())) => {}
            }
        }
    }

    /// A reader of bytes `start..end` (`end` exclusive, `None` for all).
    pub fn reader(self: &Arc<Self>, start: u64, end: Option<u64>) -> FillReader {
        FillReader {
            fill: Arc::clone(self),
            state: self.state.clone(),
            offset: start,
            end: end.unwrap_or(u64::MAX),
            buffer: BytesMut::new(),
        }
    }
}

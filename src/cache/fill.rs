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

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sha2::Digest as _;
use tempfile::NamedTempFile;
use tokio::sync::watch;

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

/// The fill task's side: what it writes into and how it reports.
pub struct FillWriter {
    digest: Digest,
    temp: NamedTempFile,
    state: watch::Sender<FillState>,
    fill: Arc<Fill>,
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

impl FillWriter {
    /// Streams `source` into the temp file, verifies it, and hands the verified file to
    /// `commit` (which must make it the blob and index it). Reports every step to readers.
    pub async fn run<C>(
        self,
        source: Result<FillSource, SourceError>,
        commit: C,
    ) -> Result<u64, Arc<FillError>>
    where
        C: FnOnce(NamedTempFile, u64) -> Result<(), StorageError> + Send + 'static,
    {
        let FillWriter {
            digest,
            temp,
            state,
            fill,
        } = self;
        let state = Arc::new(state);
        let result = stream_and_commit(&digest, temp, source, &state, &fill, commit).await;
        match &result {
            Ok(_) => state.send_modify(|s| s.phase = Phase::Committed),
            Err(e) => {
                let e = Arc::clone(e);
                state.send_modify(|s| s.phase = Phase::Failed(e));
            }
        }
        result
    }
}

async fn stream_and_commit<C>(
    digest: &Digest,
    temp: NamedTempFile,
    source: Result<FillSource, SourceError>,
    state: &Arc<watch::Sender<FillState>>,
    fill: &Arc<Fill>,
    commit: C,
) -> Result<u64, Arc<FillError>>
where
    C: FnOnce(NamedTempFile, u64) -> Result<(), StorageError> + Send + 'static,
{
    let source = source.map_err(|e| Arc::new(FillError::Source(e)))?;
    let declared = source.content_length;
    state.send_modify(|s| {
        s.size = declared;
        s.phase = Phase::Streaming;
    });
    // Hashing and writing run on their own thread, so reading upstream never waits for them;
    // the queue between the two bounds what is held in memory.
    let (batches, queue) = tokio::sync::mpsc::channel::<Vec<Bytes>>(QUEUED_BATCHES);
    let writer = {
        let (state, fill) = (Arc::clone(state), Arc::clone(fill));
        tokio::task::spawn_blocking(move || hash_and_write(temp, declared, queue, &state, &fill))
    };
    let mut body = source.body;
    let mut received = 0u64;
    // Chunks are passed on as upstream's client made them: no copying into blocks.
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Arc::new(FillError::Source(e)))?;
        received += chunk.len() as u64;
        if let Some(declared) = declared.filter(|&d| received > d) {
            return Err(Arc::new(FillError::SizeMismatch {
                digest: digest.clone(),
                declared,
                actual: received,
            }));
        }
        batch_bytes += chunk.len();
        batch.push(chunk);
        if batch_bytes >= WRITE_BLOCK {
            batch_bytes = 0;
            // A closed queue means the writer failed; its error is collected below.
            if batches.send(std::mem::take(&mut batch)).await.is_err() {
                break;
            }
            // While upstream keeps data coming, this loop never has to wait, and the clients
            // reading this fill share its thread: let them send what is written so far.
            tokio::task::yield_now().await;
        }
    }
    if !batch.is_empty() {
        let _ = batches.send(batch).await;
    }
    drop(batches);
    let (temp, hasher, written) = writer
        .await
        .map_err(|e| storage_failure(io::Error::other(e)))?
        .map_err(storage_failure)?;
    if let Some(declared) = declared.filter(|&d| d != written) {
        return Err(Arc::new(FillError::SizeMismatch {
            digest: digest.clone(),
            declared,
            actual: written,
        }));
    }
    let actual = Digest::from_sha256_bytes(&hasher.finalize());
    if &actual != digest {
        return Err(Arc::new(FillError::DigestMismatch {
            expected: digest.clone(),
            actual,
        }));
    }
    state.send_modify(|s| s.phase = Phase::Verified);
    tokio::task::spawn_blocking(move || commit(temp, written))
        .await
        .map_err(|e| storage_failure(io::Error::other(e)))?
        .map_err(storage_failure)?;
    Ok(written)
}

fn storage_failure(e: impl Into<StorageError>) -> Arc<FillError> {
    Arc::new(FillError::Storage(Arc::new(e.into())))
}

/// The writer thread: hashes and appends every queued batch, publishing progress to readers
/// after each. Ends when the queue is closed and drained, or at the first write error.
fn hash_and_write(
    mut temp: NamedTempFile,
    declared: Option<u64>,
    mut queue: tokio::sync::mpsc::Receiver<Vec<Bytes>>,
    state: &watch::Sender<FillState>,
    fill: &Fill,
) -> std::io::Result<(NamedTempFile, sha2::Sha256, u64)> {
    if let Some(size) = declared {
        preallocate(temp.as_file(), size);
    }
    let mut hasher = sha2::Sha256::new();
    let mut written = 0u64;
    while let Some(batch) = queue.blocking_recv() {
        for chunk in &batch {
            hasher.update(chunk);
        }
        write_all_vectored(temp.as_file_mut(), &batch)?;
        for chunk in batch {
            let len = chunk.len() as u64;
            fill.keep_recent(written, chunk);
            written += len;
        }
        state.send_modify(|s| s.written = written);
    }
    Ok((temp, hasher, written))
}

/// Writes a batch with as few system calls as the kernel allows: behind TLS, upstream's chunks
/// can be as small as 16 KiB, and a `write` per chunk cost a fill a quarter more CPU.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reserves the blob's blocks up front, keeping the file's length: ext4 then maps each written
/// page into an allocated extent instead of reserving delayed blocks page by page, which took
/// a fifth less CPU per write here. Space for at most the declared size, which the fill would
/// write anyway; an optimization only, so a failure (ENOSPC, a filesystem without it) is left
/// for the writes themselves to report.
fn preallocate(file: &File, size: u64) {
    let _ = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, size);
}

/// Reads what of `buf` the page cache holds at `offset` without blocking: the bytes read
/// (at least one), or `None` when that would mean waiting for the disk (or the kernel cannot
/// tell), for the caller to read on a blocking thread instead.
fn read_cached_at(file: &File, buf: &mut [u8], offset: u64) -> Option<std::io::Result<usize>> {
    use rustix::io::Errno;
    let flags = rustix::io::ReadWriteFlags::NOWAIT;
    match rustix::io::preadv2(file, &mut [std::io::IoSliceMut::new(buf)], offset, flags) {
        // The temp file holds every byte below `written`: a short read is a partial cache hit.
        Ok(0) => Some(Err(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(n) => Some(Ok(n)),
        // EAGAIN: not cached. The others: a kernel or filesystem without RWF_NOWAIT.
        Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => None,
        Err(e) => Some(Err(e.into())),
    }
}

/// A client's view of a fill: a stream of the requested bytes as they become safe to send.
pub struct FillReader {
    fill: Arc<Fill>,
    state: watch::Receiver<FillState>,
    offset: u64,
    end: u64,
    /// Where reads from the temp file land: its allocation is reused once the client's
    /// connection has taken the previous chunk, so a reader behind the fill does not fault in
    /// fresh pages for every chunk.
    buffer: BytesMut,
}

impl FillReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, std::io::Error> {
        loop {
            let current = self.state.borrow_and_update().clone();
            let committed = match &current.phase {
                Phase::Failed(e) => return Err(std::io::Error::other(e.to_string())),
                // Verified bytes may go out in full; durability (fsync, rename, index) follows
                // and does not hold clients up.
                Phase::Verified | Phase::Committed => true,
                Phase::Connecting | Phase::Streaming => false,
            };
            // The final byte waits for verification.
            let safe = if committed {
                current.written
            } else {
                current.written.saturating_sub(1)
            };
            let available = safe.min(self.end);
            if self.offset < available {
                let chunk = match self.fill.recent_slice(self.offset, available) {
                    Some(chunk) => chunk,
                    None => {
                        let len = (available - self.offset).min(READ_CHUNK);
                        self.read_at(self.offset, len).await?
                    }
                };
                self.offset += chunk.len() as u64;
                return Ok(Some(chunk));
            }
            if committed {
                return Ok(None);
            }
            if self.state.changed().await.is_err() {
                return Err(std::io::Error::other(FillError::Vanished.to_string()));
            }
        }
    }

    async fn read_at(&mut self, offset: u64, len: u64) -> Result<Bytes, std::io::Error> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        buffer.resize(len as usize, 0);
        // Bytes just written are nearly always still in the page cache: copy them on this
        // thread. Only a read that would wait for the disk hops to a blocking thread; a hop per
        // chunk cost 8 readers of one fill a tenth more CPU and ten more threads.
        let read = match read_cached_at(&self.fill.temp, &mut buffer, offset) {
            Some(read) => read.map(|n| (buffer, n)),
            None => {
                let file = Arc::clone(&self.fill.temp);
                let (buffer, read) = tokio::task::spawn_blocking(move || {
                    let read = file.read_exact_at(&mut buffer, offset);
                    (buffer, read)
                })
                .await
                .map_err(std::io::Error::other)?;
                read.map(|()| (buffer, len as usize))
            }
        };
        let (mut buffer, n) = read?;
        buffer.truncate(n);
        let chunk = buffer.split().freeze();
        self.buffer = buffer;
        Ok(chunk)
    }

    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + 'static {
        futures_util::stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            match reader.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a fill of `data`, arriving in chunks of `chunk` bytes, into a temp file in `dir`;
    /// the commit fsyncs it and keeps it as `dir/blob`. The fill and the bytes it wrote.
    async fn fill_from(data: &[u8], chunk: usize, dir: &std::path::Path) -> (Arc<Fill>, u64) {
        let temp = NamedTempFile::new_in(dir).unwrap();
        let (fill, writer) = Fill::new(Digest::of(data), temp).unwrap();
        let chunks: Vec<Result<Bytes, SourceError>> = data
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let response = FillSource {
            content_length: Some(data.len() as u64),
            body: futures_util::stream::iter(chunks).boxed(),
        };
        let kept = dir.join("blob");
        let written = writer
            .run(Ok(response), move |temp, _| {
                temp.as_file().sync_all()?;
                temp.persist(kept).map(|_| ()).map_err(|e| e.error.into())
            })
            .await
            .expect("the fill verifies");
        (fill, written)
    }

    /// Every chunk a new reader from `start` hands out, each kept to the end.
    async fn read_all(fill: &Arc<Fill>, start: u64) -> Vec<Bytes> {
        fill.reader(start, None)
            .into_stream()
            .map(Result::unwrap)
            .collect()
            .await
    }

    /// A reader arriving after the fill has moved past what is kept in memory reads the
    /// start back from the temp file, chunk after chunk through its one buffer.
    #[tokio::test]
    async fn a_late_reader_gets_every_byte_back_from_the_file() {
        let data: Vec<u8> = (0..3 * RECENT_BYTES + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let (fill, written) = fill_from(&data, 100_000, dir.path()).await;
        assert_eq!(written, data.len() as u64);
        assert_eq!(
            fill.recent_slice(0, 1),
            None,
            "the start is no longer in memory"
        );

        // Every chunk is held to the end: a reused buffer must never change one handed out.
        let chunks = read_all(&fill, 0).await;
        assert!(chunks.len() > 3 * RECENT_BYTES / READ_CHUNK as usize);
        assert!(chunks.concat() == data, "the late reader got other bytes");
    }

    /// A reader far enough behind that the kernel has dropped its bytes from the page cache
    /// cannot read them without blocking: it reads them on a blocking thread instead, and gets
    /// the same bytes.
    #[tokio::test]
    async fn a_reader_reads_bytes_gone_from_the_page_cache_on_a_blocking_thread() {
        let data: Vec<u8> = (0..RECENT_BYTES + 3 * READ_CHUNK as usize + 99)
            .map(|i| (i * 13 % 241) as u8)
            .collect();
        // A disk-backed directory: on tmpfs the pages could never leave memory.
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let (fill, _) = fill_from(&data, data.len(), dir.path()).await;
        // One chunk was written: drop it from memory too, so every byte comes from the file.
        fill.recent.lock().unwrap().chunks.clear();
        rustix::fs::fadvise(&*fill.temp, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let mut probe = vec![0; 4096];
        assert!(
            read_cached_at(&fill.temp, &mut probe, 0).is_none(),
            "the kernel still had the page cached"
        );

        let body = read_all(&fill, 5).await.concat();
        assert!(body == data[5..], "the reader got other bytes");
    }

    /// Upstream chunks can be tiny: a batch then holds more chunks than one `writev` takes
    /// (IOV_MAX, 1024), and the rest must follow in order.
    #[tokio::test]
    async fn a_batch_of_more_chunks_than_one_writev_takes_is_written_whole() {
        let data: Vec<u8> = (0..2 * WRITE_BLOCK + 777)
            .map(|i| (i % 253) as u8)
            .collect();
        // Batches of well over 1024 chunks.
        const { assert!(WRITE_BLOCK / 100 > 2 * 1024) };
        let dir = tempfile::tempdir().unwrap();
        // The fill verifies only if every byte was written, in order.
        let (fill, _) = fill_from(&data, 100, dir.path()).await;
        assert!(std::fs::read(dir.path().join("blob")).unwrap() == data);
        assert!(read_all(&fill, 0).await.concat() == data);
    }

    /// A wait for verification ends with the blob's size once the last byte is checked, with
    /// the failure when the digest is wrong, and as stalled when nothing arrives.
    #[tokio::test]
    async fn verified_waits_for_the_digest_check() {
        let data: Vec<u8> = (0..3 * WRITE_BLOCK).map(|i| (i % 249) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let stall = std::time::Duration::from_secs(5);
        let (fill, written) = fill_from(&data, 4096, dir.path()).await;
        assert_eq!(fill.verified(stall).await.unwrap(), written);

        let temp = NamedTempFile::new_in(dir.path()).unwrap();
        let (fill, writer) = Fill::new(Digest::of(b"something else"), temp).unwrap();
        let waiting = tokio::spawn({
            let fill = Arc::clone(&fill);
            async move { fill.verified(stall).await }
        });
        let response = FillSource {
            content_length: Some(data.len() as u64),
            body: futures_util::stream::iter(vec![Ok(Bytes::from(data))]).boxed(),
        };
        assert!(writer.run(Ok(response), |_, _| Ok(())).await.is_err());
        assert!(matches!(
            waiting.await.unwrap(),
            Err(NotVerified::Failed(e)) if matches!(*e, FillError::DigestMismatch { .. })
        ));

        let temp = NamedTempFile::new_in(dir.path()).unwrap();
        let (fill, _writer) = Fill::new(Digest::of(b"never"), temp).unwrap();
        let short = std::time::Duration::from_millis(50);
        assert!(matches!(
            fill.verified(short).await,
            Err(NotVerified::Stalled(_))
        ));
    }

    #[test]
    fn recent_chunks_serve_slices_up_to_the_limit_and_forget_the_oldest() {
        let temp = NamedTempFile::new().unwrap();
        let (fill, _writer) = Fill::new(Digest::of(b"x"), temp).unwrap();
        let chunk = |byte: u8, len: usize| Bytes::from(vec![byte; len]);
        fill.keep_recent(0, chunk(1, 100));
        fill.keep_recent(100, chunk(2, 50));
        assert_eq!(fill.recent_slice(10, 1000), Some(chunk(1, 90)));
        assert_eq!(fill.recent_slice(120, 140), Some(chunk(2, 20)));
        assert_eq!(fill.recent_slice(149, 149), None, "nothing up to the limit");
        assert_eq!(fill.recent_slice(150, 1000), None, "not written yet");

        // Past RECENT_BYTES the oldest chunks go; reading them falls back to the file.
        fill.keep_recent(150, chunk(3, RECENT_BYTES));
        assert_eq!(fill.recent_slice(0, 1000), None);
        assert_eq!(fill.recent_slice(150, 151), Some(chunk(3, 1)));
    }
}

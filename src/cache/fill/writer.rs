//! The fill task's side: streams the source into the temp file on a writer thread, hashing
//! as it goes, verifies, and commits.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::Digest as _;
use tempfile::NamedTempFile;
use tokio::sync::watch;

use super::{
    Fill, FillError, FillSource, FillState, Phase, SourceError, QUEUED_BATCHES, WRITE_BLOCK,
};
use crate::oci::Digest;
use crate::storage::StorageError;

/// The fill task's side: what it writes into and how it reports.
pub struct FillWriter {
    pub(super) digest: Digest,
    pub(super) temp: NamedTempFile,
    pub(super) state: watch::Sender<FillState>,
    pub(super) fill: Arc<Fill>,
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

//! The readers' side: each client streams the bytes already written (from memory or the
//! temp file), withholding the last one until the fill is verified.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::watch;

use super::{Fill, FillError, FillState, Phase, READ_CHUNK};

/// Reads what of `buf` the page cache holds at `offset` without blocking: the bytes read
/// (at least one), or `None` when that would mean waiting for the disk (or the kernel cannot
/// tell), for the caller to read on a blocking thread instead.
pub(super) fn read_cached_at(
    file: &File,
    buf: &mut [u8],
    offset: u64,
) -> Option<std::io::Result<usize>> {
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
    pub(super) fill: Arc<Fill>,
    pub(super) state: watch::Receiver<FillState>,
    pub(super) offset: u64,
    pub(super) end: u64,
    /// Where reads from the temp file land: its allocation is reused once the client's
    /// connection has taken the previous chunk, so a reader behind the fill does not fault in
    /// fresh pages for every chunk.
    pub(super) buffer: BytesMut,
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

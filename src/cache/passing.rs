//! A blob read straight through from the shared store to one client, not kept in the local
//! tier, with the last bytes it sends withheld until the store's stream has ended with the size
//! the store declared and, when [`SharedReads::Hashed`], the blob has hashed to its digest. A
//! blob that fails a check ends in an error instead, which aborts the response: no client
//! receives a complete body that is cut, or (hashed) that did not verify.
//!
//! It costs what a proxy costs (no temp file, no second copy through the page cache; by
//! default no hashing either: the bucket holds only what a node verified before writing it, and
//! is trusted as the local disk is), which is what makes a first read from the shared store as
//! fast as the store itself; a blob read again is filled into the local tier, hashed, instead
//! (see [`super::shared::Tier::passes`]).

use std::ops::Range;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};

use crate::oci::Digest;

/// What a read straight from the shared store checks before its last bytes go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedReads {
    /// The size the store declared (`storage.s3.verify_reads = false`, the default).
    SizeChecked,
    /// The size and the digest, hashed as the bytes pass (`verify_reads = true`).
    Hashed,
}

/// A shared store's byte stream, the digest and size it must have.
pub struct Passing {
    pub digest: Digest,
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
    pub check: SharedReads,
}

struct State {
    body: BoxStream<'static, Result<Bytes, std::io::Error>>,
    /// `None` unless [`SharedReads::Hashed`].
    hasher: Option<Sha256>,
    digest: Digest,
    size: u64,
    /// Bytes of the blob read so far.
    read: u64,
    range: Range<u64>,
    /// The latest bytes of `range`, sent once more arrive, or once the whole blob passed.
    held: Option<Bytes>,
    /// The store's stream has ended and the blob passed its checks: only `held` is left.
    checked: bool,
    /// Nothing more to send (the end, or an error sent).
    done: bool,
}

impl Passing {
    /// Bytes `range` of the blob (clamped to its end), the last of them withheld until every
    /// byte of the blob has passed its checks. A range that ends early still reads it whole.
    pub fn read(self, range: Range<u64>) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        let state = State {
            body: self.body,
            hasher: (self.check == SharedReads::Hashed).then(Sha256::new),
            digest: self.digest,
            size: self.size,
            read: 0,
            range: range.start.min(self.size)..range.end.min(self.size),
            held: None,
            checked: false,
            done: false,
        };
        futures_util::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            let item = state.next().await;
            if !matches!(item, Ok(Some(_))) {
                state.done = true;
            }
            match item {
                Ok(Some(bytes)) => Some((Ok(bytes), state)),
                Ok(None) => None,
                Err(e) => Some((Err(e), state)),
            }
        })
    }
}

impl State {
    /// The next bytes safe to send: `None` at the checked end.
    async fn next(&mut self) -> Result<Option<Bytes>, std::io::Error> {
        if self.checked {
            return Ok(self.held.take());
        }
        loop {
            let Some(chunk) = self.body.next().await.transpose()? else {
                self.verify()?;
                self.checked = true;
                return Ok(self.held.take());
            };
            let start = self.read;
            self.read += chunk.len() as u64;
            if self.read > self.size {
                return Err(self.mismatch());
            }
            if let Some(hasher) = &mut self.hasher {
                hasher.update(&chunk);
            }
            let (from, to) = (
                self.range.start.clamp(start, self.read),
                self.range.end.clamp(start, self.read),
            );
            if from < to {
                let part = chunk.slice((from - start) as usize..(to - start) as usize);
                if let Some(previous) = self.held.replace(part) {
                    return Ok(Some(previous));
                }
            }
        }
    }

    fn verify(&mut self) -> Result<(), std::io::Error> {
        let hashed = self
            .hasher
            .take()
            .map(|hasher| Digest::from_sha256_bytes(&hasher.finalize()));
        if self.read != self.size || hashed.is_some_and(|actual| actual != self.digest) {
            return Err(self.mismatch());
        }
        Ok(())
    }

    fn mismatch(&self) -> std::io::Error {
        tracing::error!(
            digest = %self.digest,
            declared = self.size,
            read = self.read,
            "a blob read from the shared store does not match its digest or size; not served"
        );
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "blob {} from the shared store failed verification",
                self.digest
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing(data: &[u8], digest: Digest, size: u64, chunk: usize) -> Passing {
        checked(data, digest, size, chunk, SharedReads::Hashed)
    }

    fn checked(
        data: &[u8],
        digest: Digest,
        size: u64,
        chunk: usize,
        check: SharedReads,
    ) -> Passing {
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Passing {
            digest,
            size,
            body: futures_util::stream::iter(chunks).boxed(),
            check,
        }
    }

    async fn collect(
        stream: impl Stream<Item = Result<Bytes, std::io::Error>>,
    ) -> (Vec<u8>, Option<std::io::Error>) {
        let mut out = Vec::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn a_verified_blob_passes_whole_and_in_ranges() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        let (whole, err) =
            collect(passing(&data, digest.clone(), size, 999).read(0..u64::MAX)).await;
        assert!(err.is_none());
        assert_eq!(whole, data);
        let (part, err) = collect(passing(&data, digest.clone(), size, 999).read(1500..7001)).await;
        assert!(err.is_none());
        assert_eq!(part, &data[1500..7001]);
        let (empty, err) = collect(passing(b"", Digest::of(b""), 0, 1).read(0..u64::MAX)).await;
        assert!(err.is_none() && empty.is_empty());
    }

    /// Bytes that do not hash to the digest: everything but the last chunk may have gone out,
    /// then an error, so the client never holds a complete body.
    #[tokio::test]
    async fn a_corrupt_blob_never_completes() {
        let data = vec![7u8; 5000];
        let mut tampered = data.clone();
        tampered[4999] = 8;
        let (sent, err) =
            collect(passing(&tampered, Digest::of(&data), 5000, 1000).read(0..u64::MAX)).await;
        assert!(err.is_some());
        assert!(sent.len() < data.len(), "sent {} bytes", sent.len());

        // A range ending early is withheld as well: its last part waits for the whole blob.
        let (sent, err) =
            collect(passing(&tampered, Digest::of(&data), 5000, 1000).read(0..1500)).await;
        assert!(err.is_some());
        assert!(sent.len() < 1500, "sent {} bytes", sent.len());
    }

    /// A store that sends fewer or more bytes than it declared, hashed or not.
    #[tokio::test]
    async fn a_cut_or_overlong_blob_never_completes() {
        let data = vec![3u8; 4096];
        let digest = Digest::of(&data);
        for check in [SharedReads::Hashed, SharedReads::SizeChecked] {
            let cut = checked(&data[..4000], digest.clone(), 4096, 1024, check);
            let (sent, err) = collect(cut.read(0..u64::MAX)).await;
            assert!(err.is_some(), "{check:?}");
            assert!(sent.len() < 4000);
            let long = checked(&data, digest.clone(), 4000, 1024, check);
            let (sent, err) = collect(long.read(0..u64::MAX)).await;
            assert!(err.is_some(), "{check:?}");
            assert!(sent.len() < 4000);
        }
    }

    /// Size-checked only (the default), a blob of the right size passes without being hashed:
    /// the bucket is trusted as the local disk is.
    #[tokio::test]
    async fn size_checked_reads_pass_without_hashing() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let unhashed = Digest::of(b"not these bytes");
        let read = checked(&data, unhashed, 5000, 700, SharedReads::SizeChecked);
        let (sent, err) = collect(read.read(0..u64::MAX)).await;
        assert!(err.is_none());
        assert_eq!(sent, data);
    }
}

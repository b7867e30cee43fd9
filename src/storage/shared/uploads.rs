//! Uploads in progress, in the shared store, so that any node continues any upload.
//!
//! ```text
//! uploads/<id>/session              who started it: {repo, started_ms}
//! uploads/<id>/chunks/<start>       the bytes of one PATCH (or of the PUT's body)
//! uploads/<id>/hash/<end>           the SHA-256 state after byte <end>, and which chunk
//!                                   object (by ETag) it hashed last
//! ```
//! Offsets are zero-padded to 20 digits, so that names sort as numbers. A chunk is written
//! whole (a single PUT, or a multipart upload completed at its end) before its hash record, so
//! a node that dies mid-chunk leaves no record and the upload's size is still where it was: the
//! client's retry starts from there. The size of an upload is the largest `<end>` recorded.
//! Finishing checks that the records chain from 0 to the end through the chunks that are
//! there now (their ETags), takes the digest from the last state (nothing is read back), and
//! only then copies the bytes to `blobs/`.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use object_store::WriteMultipart;
use serde::{Deserialize, Serialize};

use super::blobs::{blob_name, PARTS_IN_FLIGHT, PART_SIZE};
use super::hasher::{Hashing, ResumableSha256};
use super::{SharedError, SharedStore};
use crate::oci::Digest;

pub const UPLOAD_PREFIX: &str = "uploads/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    pub repo: String,
    pub started_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HashRecord {
    hash: ResumableSha256,
    chunk_start: u64,
    chunk_etag: Option<String>,
}

/// Why a chunk was not added.
#[derive(Debug, thiserror::Error)]
pub enum UploadChunk {
    #[error("the request body broke off: {0}")]
    BodyBroke(String),
    #[error("the chunk starts at byte {start}, but the upload has {size} bytes")]
    OutOfOrder { start: u64, size: u64 },
    #[error(transparent)]
    Store(#[from] SharedError),
}

/// How a finished upload turned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The bytes are the digest asked for, and are in `blobs/` now.
    Stored {
        size: u64,
    },
    Mismatch {
        actual: Digest,
    },
}

fn session_name(id: &str) -> String {
    format!("{UPLOAD_PREFIX}{id}/session")
}
fn chunk_name(id: &str, start: u64) -> String {
    format!("{UPLOAD_PREFIX}{id}/chunks/{start:020}")
}
fn hash_name(id: &str, end: u64) -> String {
    format!("{UPLOAD_PREFIX}{id}/hash/{end:020}")
}
fn unquoted(e_tag: &Option<String>) -> Option<&str> {
    e_tag.as_deref().map(|t| t.trim_matches('"'))
}

impl SharedStore {
    pub async fn start_upload(&self, id: &str, session: &UploadSession) -> Result<(), SharedError> {
        let body = serde_json::to_vec(session).map_err(|e| SharedError::Corrupt(e.to_string()))?;
        self.put(&session_name(id), Bytes::from(body)).await?;
        Ok(())
    }

    pub async fn upload_session(&self, id: &str) -> Result<Option<UploadSession>, SharedError> {
        let Some(body) = self.get(&session_name(id)).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| SharedError::Corrupt(format!("upload {id}: {e}")))
    }

    /// Bytes the upload has received.
    pub async fn upload_size(&self, id: &str) -> Result<u64, SharedError> {
        Ok(self
            .list(&format!("{UPLOAD_PREFIX}{id}/hash/"))
            .await?
            .iter()
            .filter_map(|listed| listed.name.parse::<u64>().ok())
            .max()
            .unwrap_or(0))
    }

    async fn hash_record(&self, id: &str, end: u64) -> Result<Option<HashRecord>, SharedError> {
        let Some(body) = self.get(&hash_name(id, end)).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| SharedError::Corrupt(format!("upload {id} at {end}: {e}")))
    }

    /// Adds `body` at byte `start` (which must be the upload's size). The new size.
    pub async fn append_upload<E: std::fmt::Display>(
        &self,
        id: &str,
        start: u64,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<u64, UploadChunk> {
        let size = self.upload_size(id).await?;
        if start != size {
            return Err(UploadChunk::OutOfOrder { start, size });
        }
        let mut hashing = match start {
            0 => Hashing::new(),
            _ => self
                .hash_record(id, start)
                .await?
                .and_then(|record| record.hash.resume())
                .ok_or_else(|| {
                    SharedError::Corrupt(format!("upload {id} has no hash state at {start}"))
                })?,
        };
        let (written, e_tag) = self
            .put_stream(&chunk_name(id, start), body, |chunk| hashing.update(chunk))
            .await?;
        if written == 0 {
            return Ok(start);
        }
        let record = HashRecord {
            hash: hashing.snapshot(),
            chunk_start: start,
            chunk_etag: e_tag,
        };
        let body = serde_json::to_vec(&record).map_err(|e| SharedError::Corrupt(e.to_string()))?;
        self.put(&hash_name(id, start + written), Bytes::from(body))
            .await?;
        Ok(start + written)
    }

    /// Streams a body into the object `name`, showing each chunk to `observe` (a hash) on the
    /// way: the bytes written and the object's ETag. Nothing becomes visible if the body
    /// breaks off (an empty body writes nothing).
    pub(super) async fn put_stream<E: std::fmt::Display>(
        &self,
        name: &str,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        mut observe: impl FnMut(&[u8]),
    ) -> Result<(u64, Option<String>), UploadChunk> {
        let mut first = BytesMut::new();
        let mut writer: Option<WriteMultipart> = None;
        let mut written = 0u64;
        let broke = |e: E| UploadChunk::BodyBroke(e.to_string());
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    if let Some(writer) = writer {
                        let _ = writer.abort().await;
                    }
                    return Err(broke(e));
                }
            };
            observe(&chunk);
            written += chunk.len() as u64;
            match &mut writer {
                Some(writer) => {
                    if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        return Err(SharedError::from(e).into());
                    }
                    writer.put(chunk);
                }
                None => {
                    first.extend_from_slice(&chunk);
                    if first.len() >= PART_SIZE {
                        let upload = self
                            .store
                            .put_multipart(&self.key(name))
                            .await
                            .map_err(SharedError::from)?;
                        let mut started = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                        started.put(first.split().freeze());
                        writer = Some(started);
                    }
                }
            }
        }
        let e_tag = match writer {
            Some(writer) => writer.finish().await.map_err(SharedError::from)?.e_tag,
            None if written == 0 => None,
            None => self.put(name, first.freeze()).await?,
        };
        Ok((written, e_tag))
    }

    /// Checks the upload against `expected` and, when it matches, places it in `blobs/`.
    pub async fn finish_upload(
        &self,
        id: &str,
        expected: &Digest,
    ) -> Result<Finished, SharedError> {
        let size = self.upload_size(id).await?;
        let chunks = self.list(&format!("{UPLOAD_PREFIX}{id}/chunks/")).await?;
        let corrupt = |what: &str| SharedError::Corrupt(format!("upload {id}: {what}"));
        // Walk back from the end: each record names the chunk it hashed last, which must be
        // the chunk there now, and the record it resumed from.
        let mut order = Vec::new();
        let mut end = size;
        let mut last_hash = None;
        while end > 0 {
            let record = self
                .hash_record(id, end)
                .await?
                .ok_or_else(|| corrupt("a hash record is missing"))?;
            let chunk = chunks
                .iter()
                .find(|c| c.name.parse::<u64>().ok() == Some(record.chunk_start))
                .ok_or_else(|| corrupt("a chunk is missing"))?;
            if record.chunk_start + chunk.size != end
                || unquoted(&chunk.e_tag) != unquoted(&record.chunk_etag)
            {
                return Err(corrupt("a chunk changed after it was hashed"));
            }
            if last_hash.is_none() {
                last_hash = Some(record.hash.clone());
            }
            order.push(record.chunk_start);
            end = record.chunk_start;
        }
        order.reverse();
        let actual = match last_hash {
            Some(hash) => hash
                .resume()
                .ok_or_else(|| corrupt("a malformed hash state"))?
                .finish(),
            None => Hashing::new().finish(),
        };
        if &actual != expected {
            return Ok(Finished::Mismatch { actual });
        }
        let target = blob_name(expected);
        if self.size(&target).await? == Some(size) {
            return Ok(Finished::Stored { size });
        }
        match order.as_slice() {
            [] => {
                self.put(&target, Bytes::new()).await?;
            }
            [only] => self.copy(&chunk_name(id, *only), &target).await?,
            _ => {
                // Several chunks: streamed into one object (S3 has no server-side append).
                let mut parts = Vec::new();
                for start in &order {
                    let result = self.store.get(&self.key(&chunk_name(id, *start))).await?;
                    parts.push(result.into_stream());
                }
                let stream = futures_util::stream::iter(parts).flatten();
                let reader = tokio_util_reader(stream);
                self.put_reader(&target, reader).await?;
            }
        }
        Ok(Finished::Stored { size })
    }

    /// Removes everything of an upload.
    pub async fn remove_upload(&self, id: &str) -> Result<(), SharedError> {
        // The session last: while anything is left, the upload is still found and removed by
        // the expiry.
        for listed in self.list(&format!("{UPLOAD_PREFIX}{id}/")).await? {
            if listed.name != "session" {
                self.delete(&format!("{UPLOAD_PREFIX}{id}/{}", listed.name))
                    .await?;
            }
        }
        self.delete(&session_name(id)).await
    }

    /// Upload ids with their sessions (a session that cannot be read counts as started at 0).
    pub async fn uploads(&self) -> Result<Vec<(String, u64)>, SharedError> {
        let mut found = Vec::new();
        for listed in self.list(UPLOAD_PREFIX).await? {
            if let Some(id) = listed.name.strip_suffix("/session") {
                let started = self
                    .upload_session(id)
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |s| s.started_ms);
                found.push((id.to_owned(), started));
            }
        }
        Ok(found)
    }
}

/// An `AsyncRead` over a stream of byte chunks.
fn tokio_util_reader(
    stream: impl Stream<Item = Result<Bytes, object_store::Error>> + Unpin,
) -> impl tokio::io::AsyncRead + Unpin {
    ChunkReader {
        stream,
        current: Bytes::new(),
    }
}

struct ChunkReader<S> {
    stream: S,
    current: Bytes,
}

impl<S> tokio::io::AsyncRead for ChunkReader<S>
where
    S: Stream<Item = Result<Bytes, object_store::Error>> + Unpin,
{
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while self.current.is_empty() {
            match self.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.current = chunk,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(std::io::Error::other(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::shared::in_memory;

    fn body(chunks: &[&[u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
    }

    async fn blob_bytes(store: &SharedStore, digest: &Digest) -> Vec<u8> {
        let blob = store.blob(digest, None).await.unwrap().unwrap();
        let chunks: Vec<Bytes> = blob.body.map(|c| c.unwrap()).collect().await;
        chunks.concat()
    }

    #[tokio::test]
    async fn chunks_from_any_node_finish_to_the_digest() {
        let store = in_memory();
        let session = UploadSession {
            repo: "team/app".into(),
            started_ms: 1,
        };
        store.start_upload("u1", &session).await.unwrap();
        assert_eq!(store.upload_session("u1").await.unwrap(), Some(session));
        assert_eq!(store.upload_size("u1").await.unwrap(), 0);
        // Two chunks, as two nodes would write them: nothing but the store in common.
        let size = store
            .append_upload("u1", 0, body(&[b"hello ", b"wor"]))
            .await
            .unwrap();
        assert_eq!(size, 9);
        let out_of_order = store.append_upload("u1", 3, body(&[b"x"])).await;
        assert!(matches!(
            out_of_order,
            Err(UploadChunk::OutOfOrder { start: 3, size: 9 })
        ));
        let size = store.append_upload("u1", 9, body(&[b"ld"])).await.unwrap();
        assert_eq!(size, 11);
        let wrong = Digest::of(b"something else");
        assert_eq!(
            store.finish_upload("u1", &wrong).await.unwrap(),
            Finished::Mismatch {
                actual: Digest::of(b"hello world")
            }
        );
        assert!(store.blob_size(&wrong).await.unwrap().is_none());
        let digest = Digest::of(b"hello world");
        assert_eq!(
            store.finish_upload("u1", &digest).await.unwrap(),
            Finished::Stored { size: 11 }
        );
        assert_eq!(blob_bytes(&store, &digest).await, b"hello world");
        store.remove_upload("u1").await.unwrap();
        assert!(store.list("uploads/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_chunk_replaced_after_hashing_is_refused() {
        let store = in_memory();
        store
            .append_upload("u2", 0, body(&[b"trusted"]))
            .await
            .unwrap();
        // Someone overwrites the chunk object without going through the hash.
        store
            .put(&chunk_name("u2", 0), Bytes::from_static(b"evil!!!"))
            .await
            .unwrap();
        let result = store.finish_upload("u2", &Digest::of(b"trusted")).await;
        assert!(matches!(result, Err(SharedError::Corrupt(_))), "{result:?}");
        assert!(store
            .blob_size(&Digest::of(b"trusted"))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_adds_nothing() {
        let store = in_memory();
        store.append_upload("u3", 0, body(&[b"abc"])).await.unwrap();
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"def")),
            Err("connection reset".to_string()),
        ]);
        let result = store.append_upload("u3", 3, broken).await;
        assert!(matches!(result, Err(UploadChunk::BodyBroke(_))));
        assert_eq!(store.upload_size("u3").await.unwrap(), 3);
        let big: Vec<u8> = (0..PART_SIZE + 100).map(|i| (i % 7) as u8).collect();
        let size = store
            .append_upload(
                "u3",
                3,
                body(&[&big[..PART_SIZE / 2], &big[PART_SIZE / 2..]]),
            )
            .await
            .unwrap();
        assert_eq!(size, 3 + big.len() as u64);
        let mut all = b"abc".to_vec();
        all.extend_from_slice(&big);
        let digest = Digest::of(&all);
        assert_eq!(
            store.finish_upload("u3", &digest).await.unwrap(),
            Finished::Stored {
                size: all.len() as u64
            }
        );
        assert_eq!(blob_bytes(&store, &digest).await, all);
    }
}

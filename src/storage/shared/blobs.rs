//! Blob bytes in the shared store: written whole and only once verified, read as a stream.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::{GetOptions, GetRange, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::{ranged, SharedError, SharedStore, UploadChunk};
use crate::oci::Digest;

/// Objects up to this size go in one PUT; larger ones in multipart parts of this size.
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one object in flight at once (the memory an upload holds is this many parts).
pub const PARTS_IN_FLIGHT: usize = 2;

/// A blob being read from the shared store.
pub struct SharedBlob {
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, object_store::Error>>,
}

pub(crate) fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

impl SharedStore {
    /// The size of a stored blob, or `None`.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, SharedError> {
        self.size(&blob_name(digest)).await
    }

    /// A stored blob's bytes, streamed, or `None`. A blob larger than one part is read with
    /// several ranged GETs at once (see [`super::ranged`]): its first part streams as it
    /// arrives while the next ones are fetched ahead. When the caller knows the blob's size
    /// (`known_size`, from a repository's link), those start with the first GET rather than
    /// after its answer, which Garage gives a ranged GET of a large object only after ~45 ms.
    pub async fn blob(
        &self,
        digest: &Digest,
        known_size: Option<u64>,
    ) -> Result<Option<SharedBlob>, SharedError> {
        let key = self.key(&blob_name(digest));
        let early = known_size
            .filter(|&size| size > ranged::PART)
            .and_then(|size| ranged::ahead(&self.store, &key, size, &self.read_ahead));
        let first = GetOptions {
            range: Some(GetRange::Bounded(0..ranged::PART)),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&key, first).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            // No range fits an empty object: read it whole (which tells a real failure too).
            Err(ranged_error) => match self.store.get(&key).await {
                Ok(whole) => {
                    return Ok(Some(SharedBlob {
                        size: whole.meta.size,
                        body: whole.into_stream(),
                    }))
                }
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(_) => return Err(ranged_error.into()),
            },
        };
        let size = result.meta.size;
        let first = result.into_stream();
        let body = if size <= ranged::PART {
            first
        } else {
            let parts = match early {
                Some(parts) if parts.size() == size => Some(parts),
                // Not the size the caller knew: those parts are let go (and their permit).
                other => {
                    drop(other);
                    ranged::ahead(&self.store, &key, size, &self.read_ahead)
                }
            };
            ranged::rest(Arc::clone(&self.store), key, size, first, parts)
        };
        Ok(Some(SharedBlob { size, body }))
    }

    /// Stores bytes already verified to be `digest` (a manifest).
    pub async fn put_blob_bytes(&self, digest: &Digest, bytes: Bytes) -> Result<(), SharedError> {
        self.put(&blob_name(digest), bytes).await.map(|_| ())
    }

    /// Stores `digest` from a stream that ends only once its bytes are verified (a fill's
    /// reader withholds the last byte until then): the object is completed, and so visible,
    /// only after that; a stream that fails leaves nothing.
    pub async fn put_blob_stream<E: std::fmt::Display>(
        &self,
        digest: &Digest,
        body: impl futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<u64, SharedError> {
        let name = blob_name(digest);
        match self.put_stream(&name, body, |_| {}).await {
            Ok((0, _)) => {
                self.put(&name, Bytes::new()).await?;
                Ok(0)
            }
            Ok((written, _)) => Ok(written),
            Err(UploadChunk::Store(e)) => Err(e),
            Err(other) => Err(SharedError::Corrupt(other.to_string())),
        }
    }

    /// Stores a local file already verified to be `digest`, streaming it in parts.
    pub async fn put_blob_file(&self, digest: &Digest, path: &Path) -> Result<(), SharedError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| SharedError::Corrupt(format!("cannot read {}: {e}", path.display())))?;
        self.put_reader(&blob_name(digest), file).await
    }

    /// Streams `reader` into the object `name`: one PUT when it fits a part, else a multipart
    /// upload (completed, and so visible, only once everything was read and sent).
    pub(crate) async fn put_reader(
        &self,
        name: &str,
        mut reader: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<(), SharedError> {
        let read_error = |e: std::io::Error| SharedError::Corrupt(format!("cannot read: {e}"));
        let first = read_part(&mut reader).await.map_err(read_error)?;
        if first.len() < PART_SIZE {
            self.put(name, first).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&self.key(name)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        writer.put(first);
        loop {
            let part = match read_part(&mut reader).await {
                Ok(part) => part,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(read_error(e));
                }
            };
            if part.is_empty() {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
            writer.put(part);
        }
        writer.finish().await?;
        Ok(())
    }
}

/// Up to one part's bytes (fewer only at the end).
async fn read_part(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<Bytes> {
    let mut part = Vec::with_capacity(PART_SIZE);
    while part.len() < PART_SIZE {
        let read = (&mut *reader)
            .take((PART_SIZE - part.len()) as u64)
            .read_to_end(&mut part)
            .await?;
        if read == 0 {
            break;
        }
    }
    Ok(Bytes::from(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::shared::in_memory;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_file_larger_than_a_part_is_stored_whole() {
        let store = in_memory();
        let data: Vec<u8> = (0..PART_SIZE * 2 + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let digest = Digest::of(&data);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &data).unwrap();
        store.put_blob_file(&digest, file.path()).await.unwrap();
        assert_eq!(
            store.blob_size(&digest).await.unwrap(),
            Some(data.len() as u64)
        );
        let blob = store.blob(&digest, None).await.unwrap().unwrap();
        let read: Vec<Bytes> = blob.body.map(|c| c.unwrap()).collect().await;
        assert_eq!(read.concat(), data);
        assert!(store
            .blob(&Digest::of(b"absent"), None)
            .await
            .unwrap()
            .is_none());
    }
}

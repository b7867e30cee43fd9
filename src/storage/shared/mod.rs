//! The shared store: one S3 bucket that every node of a site reads and writes, the store of
//! record for everything that must look the same through any node (blobs and manifests,
//! private repositories' tags and links, uploads in progress, the catalog, the signing key).
//! A node's own `data_dir` is then a tier in front of it (see docs/architecture.md, "Several
//! nodes").
//!
//! Plain S3 semantics only: path-style requests, multipart uploads, no conditional writes
//! (Garage ignores `If-None-Match` on PUT). Correctness never rests on an object being absent
//! before a write: content is content-addressed and written only once verified (a multipart
//! upload becomes visible only when completed, and berth completes it only after the digest
//! matched), and records are idempotent.
//!
//! Keys, under the configured prefix:
//! ```text
//! blobs/sha256/<hex>                        blob and manifest bytes, verified
//! repositories/<repo>/_blobs/<hex>          the repository holds this blob (body: its size)
//! repositories/<repo>/_manifests/<hex>      a manifest of the repository (body: its media type)
//! repositories/<repo>/_tags/<tag>           body: the digest the tag names
//! repositories/<repo>/_referrers/<subject hex>/<hex>   a referrer record (JSON)
//! catalog/<repo>                            the repository exists (empty)
//! uploads/<id>/…                            an upload in progress (uploads.rs)
//! fills/<hex>                               a node is fetching this blob from upstream
//! keys/…                                    the token signing key
//! ```
//! Repository name components start with a letter or digit, so `_blobs` and the like can never
//! be mistaken for part of a name.

pub(crate) mod blobs;
pub mod hasher;
mod ranged;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};

pub use self::blobs::SharedBlob;
pub use self::uploads::{Finished, UploadChunk, UploadSession, UPLOAD_PREFIX};

/// Where the shared store is: what `[storage.s3]` says, typed for this layer.
#[derive(Debug, Clone)]
pub struct S3Location {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The store could not be reached or failed: nothing is known about the object.
    #[error("shared store unavailable: {0}")]
    Unavailable(#[source] object_store::Error),
    /// What the store holds is not what berth wrote there.
    #[error("shared store: {0}")]
    Corrupt(String),
    #[error("shared store configuration: {0}")]
    Config(String),
}

impl From<object_store::Error> for SharedError {
    fn from(err: object_store::Error) -> Self {
        SharedError::Unavailable(err)
    }
}

pub struct SharedStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Which blob reads may fetch parts ahead: see [`ranged`].
    read_ahead: ranged::ReadAhead,
}

/// An object's name relative to the prefix it was listed under, with its size and age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub e_tag: Option<String>,
    /// When it was last written (the store's `LastModified`), in ms since the epoch.
    pub modified_ms: u64,
}

impl SharedStore {
    /// A client for the bucket at `location`. Connects lazily: nothing is asked yet.
    pub fn open(location: &S3Location) -> Result<Self, SharedError> {
        let client = ClientOptions::new()
            .with_allow_http(location.endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(3))
            // Blob bodies stream for as long as they take; a stall is caught by the fill.
            .with_timeout_disabled()
            .with_pool_idle_timeout(Duration::from_secs(30));
        let retry = RetryConfig {
            max_retries: 3,
            // A store that is down answers UNAVAILABLE within seconds, not minutes.
            retry_timeout: Duration::from_secs(8),
            ..RetryConfig::default()
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(location.endpoint.trim_end_matches('/'))
            .with_bucket_name(&location.bucket)
            .with_region(&location.region)
            .with_access_key_id(&location.access_key_id)
            .with_secret_access_key(&location.secret_access_key)
            .with_virtual_hosted_style_request(false)
            // Bodies are digest-checked by berth itself; hashing them again for SigV4 would
            // double the CPU of every upload.
            .with_unsigned_payload(true)
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(|e| SharedError::Config(e.to_string()))?;
        Ok(Self::over(Arc::new(store), &location.prefix))
    }

    /// A store over any `ObjectStore` (tests use object_store's in-memory one).
    pub fn over(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        SharedStore {
            store,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            read_ahead: ranged::ReadAhead::default(),
        }
    }

    fn key(&self, name: &str) -> Key {
        Key::from(format!("{}{name}", self.prefix))
    }

    /// Asks the store something cheap: whether it answers, and the bucket exists (a missing
    /// bucket makes every object look absent, so it is worth telling at startup).
    pub async fn check(&self) -> Result<(), SharedError> {
        let prefix = self.key("keys");
        self.store.list_with_delimiter(Some(&prefix)).await?;
        Ok(())
    }

    /// A small object's bytes (a record, a key), or `None` when absent.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>, SharedError> {
        match self.store.get(&self.key(name)).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a small object whole (records are idempotent: a rewrite is harmless).
    pub async fn put(&self, name: &str, body: Bytes) -> Result<Option<String>, SharedError> {
        let result = self
            .store
            .put(&self.key(name), PutPayload::from(body))
            .await?;
        Ok(result.e_tag)
    }

    /// The size of an object, or `None` when absent.
    pub async fn size(&self, name: &str) -> Result<Option<u64>, SharedError> {
        match self.store.head(&self.key(name)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes an object; removing one that is not there is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), SharedError> {
        match self.store.delete(&self.key(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `dir` (a name ending in `/`), names relative to it, sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>, SharedError> {
        let prefix = self.key(dir.trim_end_matches('/'));
        let skip = prefix.as_ref().len() + 1;
        let mut listed: Vec<Listed> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| Listed {
                name: meta.location.as_ref().get(skip..).unwrap_or("").to_owned(),
                size: meta.size,
                e_tag: meta.e_tag,
                modified_ms: meta.last_modified.timestamp_millis().max(0) as u64,
            })
            .try_collect()
            .await?;
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    /// Copies an object inside the store (server-side).
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), SharedError> {
        Ok(self.store.copy(&self.key(from), &self.key(to)).await?)
    }
}

#[cfg(test)]
pub(crate) fn in_memory() -> SharedStore {
    SharedStore::over(Arc::new(object_store::memory::InMemory::new()), "site")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_and_list_under_their_prefix() {
        let store = in_memory();
        assert_eq!(store.get("repositories/a/_tags/v1").await.unwrap(), None);
        store
            .put("repositories/a/_tags/v1", Bytes::from_static(b"sha256:1"))
            .await
            .unwrap();
        store
            .put("repositories/a/b/_tags/v2", Bytes::from_static(b"sha256:2"))
            .await
            .unwrap();
        assert_eq!(
            store.get("repositories/a/_tags/v1").await.unwrap().unwrap(),
            Bytes::from_static(b"sha256:1")
        );
        let names: Vec<String> = store
            .list("repositories/a/_tags/")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["v1"]);
        store.delete("repositories/a/_tags/v1").await.unwrap();
        store.delete("repositories/a/_tags/v1").await.unwrap();
        assert!(store
            .list("repositories/a/_tags/")
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.size("repositories/a/b/_tags/v2").await.unwrap(),
            Some(8)
        );
    }

    #[tokio::test]
    async fn a_prefix_keeps_registries_apart() {
        let backing: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let one = SharedStore::over(Arc::clone(&backing), "one/");
        let two = SharedStore::over(backing, "two");
        one.put("catalog/x", Bytes::new()).await.unwrap();
        assert_eq!(one.list("catalog/").await.unwrap().len(), 1);
        assert!(two.list("catalog/").await.unwrap().is_empty());
    }
}

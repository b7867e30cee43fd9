//! Starting a node over the shared store: the client for `[storage.s3]`, and the signing key
//! an open mirror's nodes share (made once, in the store, by whichever node starts first).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::StartError;
use crate::auth::keys;
use crate::cache::{Cache, SharedReads};
use crate::config::{S3Settings, Settings};
use crate::storage::shared::{S3Location, SharedError, SharedStore};
use crate::storage::UPLOAD_EXPIRY;

/// The key every node signs with, when `[auth]` configures none.
const KEY: &str = "keys/token.pem";
/// Keys nodes that found none offered; the smallest name wins.
const CANDIDATES: &str = "keys/candidates/";
/// Longer than any write takes to be listed: a node that offers a key after another node
/// listed the candidates finds the winner in place when it looks again.
const SETTLE: Duration = Duration::from_secs(2);

/// The shared store `[storage.s3]` names, if any.
pub fn shared_store(settings: &Settings) -> Result<Option<Arc<SharedStore>>, SharedError> {
    settings
        .storage
        .s3
        .as_ref()
        .map(|s3| SharedStore::open(&location(s3)).map(Arc::new))
        .transpose()
}

/// `cache` over the shared store `[storage.s3]` names, if any: reads from it verified as
/// `verify_reads` says.
pub fn with_shared_store(cache: Cache, settings: &Settings) -> Result<Cache, SharedError> {
    let Some(store) = shared_store(settings)? else {
        return Ok(cache);
    };
    let reads = match settings
        .storage
        .s3
        .as_ref()
        .is_some_and(|s3| s3.verify_reads)
    {
        true => SharedReads::Hashed,
        false => SharedReads::SizeChecked,
    };
    Ok(cache.with_shared(store, reads))
}

fn location(s3: &S3Settings) -> S3Location {
    S3Location {
        endpoint: s3.endpoint.to_string(),
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        access_key_id: s3.access_key_id.clone(),
        secret_access_key: s3
            .secret_access_key
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default(),
        prefix: s3.prefix.clone(),
    }
}

/// Where the shared key is kept on this node too, so that a node restarting while the store
/// is out of reach still signs and verifies with it.
const LOCAL_COPY: &str = "shared-token.key";

/// The shared signing key (see [`signing_key_pem`]), or this node's copy of it when the store
/// cannot be reached.
pub async fn signing_key(store: &SharedStore, data_dir: &Path) -> Result<String, StartError> {
    let copy = data_dir.join(LOCAL_COPY);
    match signing_key_pem(store).await {
        Ok(pem) => {
            let (copy, text) = (copy.clone(), pem.clone());
            let kept = tokio::task::spawn_blocking(move || keep_copy(&copy, &text)).await;
            if let Ok(Err(e)) | Err(e) = kept.map_err(std::io::Error::other) {
                tracing::warn!(error = %e, "cannot keep a copy of the shared signing key");
            }
            Ok(pem)
        }
        Err(e) => match tokio::fs::read_to_string(&copy).await {
            Ok(pem) => {
                tracing::warn!(error = %e, "shared store unavailable; signing with this node's copy of the shared key");
                Ok(pem)
            }
            Err(_) => Err(StartError::Auth(format!(
                "the shared signing key cannot be read from the shared store: {e}"
            ))),
        },
    }
}

fn keep_copy(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if std::fs::read_to_string(path).is_ok_and(|kept| kept == pem) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    // Made with mode 0600.
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(pem.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes uploads in the shared store older than the expiry. How many went.
pub async fn expire_uploads(store: &SharedStore) -> Result<usize, SharedError> {
    let now = crate::storage::index::now_ms();
    let mut removed = 0;
    for (id, started_ms) in store.uploads().await? {
        if now.saturating_sub(started_ms) > UPLOAD_EXPIRY.as_millis() as u64 {
            store.remove_upload(&id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The PEM of the one signing key of every node over `store`. Without conditional writes,
/// nodes that start together agree like this: each offers a key under a random name, waits
/// until every offer made before its own is listed, and the smallest name wins; a node looks
/// for a winner again before it writes one, so a late node adopts the first winner.
pub async fn signing_key_pem(store: &SharedStore) -> Result<String, SharedError> {
    if let Some(pem) = store.get(KEY).await? {
        return pem_text(pem);
    }
    let pem = keys::generate_ec_pem().map_err(|e| SharedError::Corrupt(e.to_string()))?;
    let mut name = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut name)
        .map_err(|_| SharedError::Corrupt("the OS gave no random bytes".into()))?;
    store
        .put(
            &format!("{CANDIDATES}{}", hex::encode(name)),
            Bytes::from(pem),
        )
        .await?;
    tokio::time::sleep(SETTLE).await;
    if let Some(pem) = store.get(KEY).await? {
        return pem_text(pem);
    }
    let winner = store
        .list(CANDIDATES)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| SharedError::Corrupt("the key just offered is not listed".into()))?;
    let pem = store
        .get(&format!("{CANDIDATES}{}", winner.name))
        .await?
        .ok_or_else(|| SharedError::Corrupt("the winning key vanished".into()))?;
    store.put(KEY, pem.clone()).await?;
    pem_text(pem)
}

fn pem_text(pem: Bytes) -> Result<String, SharedError> {
    String::from_utf8(pem.to_vec())
        .map_err(|_| SharedError::Corrupt(format!("{KEY} is not a PEM file")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes starting at the same moment over one store end with one key.
    #[tokio::test]
    async fn nodes_that_start_together_agree_on_one_key() {
        let store = Arc::new(crate::storage::shared::in_memory());
        let nodes: Vec<_> = (0..3)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { signing_key_pem(&store).await.unwrap() })
            })
            .collect();
        let mut keys = Vec::new();
        for node in nodes {
            keys.push(node.await.unwrap());
        }
        assert!(keys[0].contains("PRIVATE KEY"));
        assert!(keys.iter().all(|k| k == &keys[0]), "nodes disagree");
        // A node started later takes the same key at once.
        assert_eq!(signing_key_pem(&store).await.unwrap(), keys[0]);
    }
}

//! Blobs read from the shared store through a node that does not hold them: passed straight
//! through once, kept in the node's tier when read again, never served whole when the store's
//! object is not its digest's bytes. Two nodes over object_store's in-memory store, as in
//! [`super::shared_tests`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::shared_tests::{body, node, read_all, Node};
use crate::oci::{Digest, RepoName};
use crate::registry::mirror::BlobRead;

/// Pushes `layer` into `repo` through `node` in one request: its digest.
async fn pushed(node: &Node, repo: &RepoName, layer: &[u8]) -> Digest {
    let digest = Digest::of(layer);
    node.projects
        .start_upload(repo, Some(digest.clone()), body(&[layer]))
        .await
        .unwrap();
    digest
}

/// Read through one node: once (a client's whole read) it passes straight from the store and
/// is not kept; read again it is kept in the node's tier and then served from there; a range
/// or a blob to be kept is kept at once.
#[tokio::test]
async fn a_blob_read_again_is_kept_in_the_local_tier() {
    let store = Arc::new(crate::storage::shared::in_memory());
    let (a, b) = (node(&store), node(&store));
    let repo: RepoName = "team/app".parse().unwrap();
    let layer = vec![5u8; 3 << 20];
    let digest = pushed(&a, &repo, &layer).await;
    let metrics = b.cache.metrics();
    let first = b
        .projects
        .blob(&repo, &digest, BlobRead::Whole)
        .await
        .unwrap();
    assert!(!first.is_filling());
    assert_eq!(read_all(first).await, layer);
    assert_eq!(metrics.shared_blob_passes.load(Relaxed), 1);
    assert_eq!(b.cache.blob_size(&digest).unwrap(), None, "not kept");
    let second = b
        .projects
        .blob(&repo, &digest, BlobRead::Whole)
        .await
        .unwrap();
    assert!(second.is_filling());
    assert_eq!(read_all(second).await, layer);
    assert_eq!(metrics.shared_blob_gets.load(Relaxed), 1);
    // The fill commits after its readers are done: wait for it to be in the tier.
    for _ in 0..200 {
        if metrics.fills_in_flight.load(Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        b.cache.blob_size(&digest).unwrap(),
        Some(layer.len() as u64)
    );
    assert_eq!(
        read_all(
            b.projects
                .blob(&repo, &digest, BlobRead::Whole)
                .await
                .unwrap()
        )
        .await,
        layer
    );
    assert_eq!(metrics.blob_hits.load(Relaxed), 1);
    assert_eq!(metrics.shared_blob_passes.load(Relaxed), 1);

    // A range on a third node is filled at once.
    let c = node(&store);
    let ranged = c
        .projects
        .blob(&repo, &digest, BlobRead::Range)
        .await
        .unwrap();
    assert!(ranged.is_filling());
    assert_eq!(read_all(ranged).await, layer);
    assert_eq!(c.cache.metrics().shared_blob_passes.load(Relaxed), 0);
}

/// An object in the store that is not its digest's bytes is never served whole, passing or
/// filled, and never kept.
#[tokio::test]
async fn a_tampered_object_in_the_store_is_not_served() {
    let store = Arc::new(crate::storage::shared::in_memory());
    let (a, b) = (node(&store), node(&store));
    let repo: RepoName = "team/app".parse().unwrap();
    let layer = vec![9u8; 2 << 20];
    let digest = pushed(&a, &repo, &layer).await;
    let mut tampered = layer.clone();
    tampered[1 << 20] = 0;
    store
        .put(
            &format!("blobs/sha256/{}", digest.hex()),
            Bytes::from(tampered),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let body = b
            .projects
            .blob(&repo, &digest, BlobRead::Whole)
            .await
            .unwrap();
        let chunks: Vec<_> = body.read_all().collect().await;
        assert!(chunks.last().unwrap().is_err(), "ends in an error");
        let sent: usize = chunks.iter().flatten().map(Bytes::len).sum();
        assert!(sent < layer.len(), "sent {sent} bytes");
    }
    assert_eq!(b.cache.blob_size(&digest).unwrap(), None);
}

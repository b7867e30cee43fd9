//! Two nodes over one shared store (object_store's in-memory store standing in for S3; the
//! end-to-end tests use a Garage cluster): each node has its own data directory and caches,
//! and nothing in common but the store.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::upload::Started;
use super::Projects;
use crate::cache::evict::Budget;
use crate::cache::{BlobBody, Cache, SharedReads};
use crate::config::{self, ProjectSettings};
use crate::oci::{Digest, ErrorCode, Reference, RepoName};
use crate::registry::listing::PageRequest;
use crate::registry::mirror::BlobRead;
use crate::storage::shared::SharedStore;
use crate::storage::Storage;

pub(super) struct Node {
    pub(super) projects: Projects,
    pub(super) cache: Arc<Cache>,
    _dir: tempfile::TempDir,
}

pub(super) fn node(store: &Arc<SharedStore>) -> Node {
    node_with(store, None)
}

fn node_with(store: &Arc<SharedStore>, retention: Option<config::RetentionSettings>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let budget = Budget {
        max_bytes: None,
        low_water_percent: 90,
    };
    let cache = Arc::new(
        Cache::new(Arc::new(storage), Arc::default(), 16 << 20, budget, 0)
            .with_shared(Arc::clone(store), SharedReads::Hashed),
    );
    let configured = config::Projects::new(&[ProjectSettings {
        name: "team".into(),
        public: false,
        members: Default::default(),
        retention,
    }]);
    Node {
        projects: Projects::new(configured, Arc::clone(&cache)),
        cache,
        _dir: dir,
    }
}

pub(super) fn body(
    chunks: &[&[u8]],
) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin {
    futures_util::stream::iter(
        chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    )
}

fn none() -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin {
    body(&[])
}

pub(super) async fn read_all(body: BlobBody) -> Vec<u8> {
    let body = body.started().await.unwrap();
    let size = body.size().unwrap();
    let chunks: Vec<Bytes> = body.read(0..size).map(|c| c.unwrap()).collect().await;
    chunks.concat()
}

#[tokio::test]
async fn an_image_pushed_through_one_node_is_read_through_another() {
    let store = Arc::new(crate::storage::shared::in_memory());
    let (a, b) = (node(&store), node(&store));
    let repo: RepoName = "team/app".parse().unwrap();
    let layer = b"layer bytes, pushed in two chunks".to_vec();
    let layer_digest = Digest::of(&layer);
    // Started on A, first chunk on B, last chunk and the digest on A.
    let Started::Open(upload) = a.projects.start_upload(&repo, None, none()).await.unwrap() else {
        panic!("a plain POST opens an upload");
    };
    let state = b
        .projects
        .append(&repo, &upload.id, Some(0), body(&[&layer[..10]]))
        .await
        .unwrap();
    assert_eq!(state.size, 10);
    assert_eq!(
        a.projects
            .upload_status(&repo, &upload.id)
            .await
            .unwrap()
            .size,
        10
    );
    a.projects
        .finish_upload(&repo, &upload.id, &layer_digest, body(&[&layer[10..]]))
        .await
        .unwrap();
    // Monolithic through B.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = Digest::of(&config);
    let started = b
        .projects
        .start_upload(&repo, Some(config_digest.clone()), body(&[&config]))
        .await
        .unwrap();
    assert!(matches!(started, Started::Complete(_)));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest.to_string(), "size": layer.len()}],
    });
    let manifest = Bytes::from(serde_json::to_vec(&manifest).unwrap());
    let put = a
        .projects
        .put_manifest(
            &repo,
            &Reference::Tag("v1".parse().unwrap()),
            Some("application/vnd.oci.image.manifest.v1+json"),
            manifest.clone(),
        )
        .await
        .unwrap();
    // B sees the tag at once, and serves everything byte for byte.
    let read = b
        .projects
        .manifest(&repo, &Reference::Tag("v1".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(read.digest, put.digest);
    assert_eq!(read.body, manifest);
    assert_eq!(
        read_all(
            b.projects
                .blob(&repo, &layer_digest, BlobRead::Whole)
                .await
                .unwrap()
        )
        .await,
        layer
    );
    let tags = b
        .projects
        .tags(&repo, &PageRequest::default())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&tags.body).contains("\"v1\""));
    let catalog = b
        .projects
        .catalog(|_| true, &PageRequest::default())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&catalog.body).contains("team/app"));
    // A tag moved through B is what A answers next, with nothing cached in the way.
    b.projects
        .delete_manifest(&repo, &Reference::Tag("v1".parse().unwrap()))
        .await
        .unwrap();
    let gone = a
        .projects
        .manifest(&repo, &Reference::Tag("v1".parse().unwrap()))
        .await
        .err()
        .unwrap();
    assert_eq!(gone.code(), ErrorCode::ManifestUnknown);
}

#[tokio::test]
async fn what_a_repository_does_not_hold_is_not_served_from_another() {
    let store = Arc::new(crate::storage::shared::in_memory());
    let (a, b) = (node(&store), node(&store));
    let (mine, other): (RepoName, RepoName) =
        ("team/mine".parse().unwrap(), "team/other".parse().unwrap());
    let secret = b"only in team/mine".to_vec();
    let digest = Digest::of(&secret);
    a.projects
        .start_upload(&mine, Some(digest.clone()), body(&[&secret]))
        .await
        .unwrap();
    let refused = b
        .projects
        .blob(&other, &digest, BlobRead::Range)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), ErrorCode::BlobUnknown);
    // A mount needs the source to be readable by the caller.
    assert_eq!(
        b.projects
            .mount(&other, &digest, &mine, false)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        b.projects
            .mount(&other, &digest, &mine, true)
            .await
            .unwrap(),
        Some(digest.clone())
    );
    assert_eq!(
        read_all(
            b.projects
                .blob(&other, &digest, BlobRead::Range)
                .await
                .unwrap()
        )
        .await,
        secret
    );
}

#[tokio::test]
async fn a_wrong_digest_keeps_nothing_on_any_node() {
    let store = Arc::new(crate::storage::shared::in_memory());
    let (a, b) = (node(&store), node(&store));
    let repo: RepoName = "team/app".parse().unwrap();
    let claimed = Digest::of(b"what was promised");
    let refused = a
        .projects
        .start_upload(&repo, Some(claimed.clone()), body(&[b"something else"]))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), ErrorCode::DigestInvalid);
    assert_eq!(
        b.projects
            .blob_size(&repo, &claimed)
            .await
            .err()
            .unwrap()
            .code(),
        ErrorCode::BlobUnknown
    );
    assert!(store.blob_size(&claimed).await.unwrap().is_none());
}

#[tokio::test]
async fn referrers_are_listed_through_any_node_and_go_with_their_manifest() {
    let store = Arc::new(crate::storage::shared::in_memory());
    let (a, b) = (node(&store), node(&store));
    let repo: RepoName = "team/signed".parse().unwrap();
    let config = b"{}".to_vec();
    let config_digest = Digest::of(&config);
    a.projects
        .start_upload(&repo, Some(config_digest.clone()), body(&[&config]))
        .await
        .unwrap();
    let manifest = |extra: serde_json::Value| {
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": [],
        });
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        Bytes::from(serde_json::to_vec(&m).unwrap())
    };
    let subject = manifest(serde_json::json!({}));
    let subject_digest = Digest::of(&subject);
    a.projects
        .put_manifest(
            &repo,
            &Reference::Digest(subject_digest.clone()),
            None,
            subject.clone(),
        )
        .await
        .unwrap();
    let signature = manifest(serde_json::json!({
        "artifactType": "application/vnd.example.signature",
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject_digest.to_string(), "size": subject.len()},
    }));
    let signature_digest = Digest::of(&signature);
    let put = a
        .projects
        .put_manifest(
            &repo,
            &Reference::Digest(signature_digest.clone()),
            None,
            signature,
        )
        .await
        .unwrap();
    assert_eq!(put.subject.as_ref(), Some(&subject_digest));
    let listed = b
        .projects
        .referrers(
            &repo,
            &subject_digest,
            Some("application/vnd.example.signature"),
        )
        .await
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed).unwrap();
    assert_eq!(
        listed["manifests"][0]["digest"],
        signature_digest.to_string()
    );
    let other_type = b
        .projects
        .referrers(&repo, &subject_digest, Some("application/other"))
        .await
        .unwrap();
    let other_type: serde_json::Value = serde_json::from_slice(&other_type).unwrap();
    assert_eq!(other_type["manifests"].as_array().unwrap().len(), 0);
    b.projects
        .delete_manifest(&repo, &Reference::Digest(signature_digest))
        .await
        .unwrap();
    let after = a
        .projects
        .referrers(&repo, &subject_digest, None)
        .await
        .unwrap();
    let after: serde_json::Value = serde_json::from_slice(&after).unwrap();
    assert_eq!(after["manifests"].as_array().unwrap().len(), 0, "{after}");
}

/// A repository deleted through one node is gone for the other, and only it.
#[tokio::test]
async fn a_repository_deleted_through_one_node_is_gone_for_every_node() {
    let store = Arc::new(crate::storage::shared::in_memory());
    let (a, b) = (node(&store), node(&store));
    let (repo, other): (RepoName, RepoName) =
        ("team/app".parse().unwrap(), "team/other".parse().unwrap());
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = Digest::of(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [],
    });
    let manifest = Bytes::from(serde_json::to_vec(&manifest).unwrap());
    let v1 = Reference::Tag("v1".parse().unwrap());
    for r in [&repo, &other] {
        a.projects
            .start_upload(r, Some(config_digest.clone()), body(&[&config]))
            .await
            .unwrap();
        a.projects
            .put_manifest(r, &v1, None, manifest.clone())
            .await
            .unwrap();
    }
    let removed = b.projects.delete_repository(&repo).await.unwrap();
    assert_eq!(
        (removed.tags, removed.manifests, removed.blob_links),
        (1, 1, 1)
    );
    let err = a.projects.manifest(&repo, &v1).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ManifestUnknown);
    let err = a.projects.delete_repository(&repo).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NameUnknown);
    let page = PageRequest::default();
    let Err(err) = a.projects.tags(&repo, &page).await else {
        panic!("the deleted repository still lists tags");
    };
    assert_eq!(err.code(), ErrorCode::NameUnknown);
    assert!(a.projects.manifest(&other, &v1).await.is_ok());
    assert!(a.projects.tags(&other, &page).await.is_ok());
}

/// Retention over the shared store: push times are the records' `LastModified`; the plan and
/// the deletions are the same as on one node, and every node sees them.
#[tokio::test]
async fn retention_works_from_the_shared_records() {
    let store = Arc::new(crate::storage::shared::in_memory());
    let rules = config::RetentionSettings {
        keep_last: Some(1),
        untagged_after: Some(std::time::Duration::from_millis(1)),
        protect: vec!["keep-*".into()],
    };
    let (a, b) = (node_with(&store, Some(rules)), node(&store));
    let repo: RepoName = "team/app".parse().unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = Digest::of(&config);
    a.projects
        .start_upload(&repo, Some(config_digest.clone()), body(&[&config]))
        .await
        .unwrap();
    let manifest = |n: u32| {
        let json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": [],
            "annotations": {"n": n.to_string()},
        });
        Bytes::from(serde_json::to_vec(&json).unwrap())
    };
    let mut digests = Vec::new();
    for (n, reference) in ["keep-1", "old", "new", "sha256:untagged"]
        .iter()
        .enumerate()
    {
        let body = manifest(n as u32);
        let reference = match reference.starts_with("sha256:") {
            true => Reference::Digest(Digest::of(&body)),
            false => Reference::Tag(reference.parse().unwrap()),
        };
        let put = b
            .projects
            .put_manifest(&repo, &reference, None, body)
            .await
            .unwrap();
        digests.push(put.digest);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let dry = a.projects.apply_retention(true).await.unwrap();
    let listed: Vec<(Option<String>, Digest)> = dry
        .removals
        .iter()
        .map(|r| (r.tag.clone(), r.digest.clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (Some("old".to_owned()), digests[1].clone()),
            (None, digests[1].clone()),
            (None, digests[3].clone()),
        ]
    );
    assert_eq!(dry.removals[0].reason, "beyond keep_last=1");
    assert!(b
        .projects
        .manifest(&repo, &Reference::Digest(digests[3].clone()))
        .await
        .is_ok());

    let done = a.projects.apply_retention(false).await.unwrap();
    let made: Vec<(Option<String>, Digest)> = done
        .removals
        .iter()
        .map(|r| (r.tag.clone(), r.digest.clone()))
        .collect();
    assert_eq!(made, listed);
    for gone in [&digests[1], &digests[3]] {
        let err = b
            .projects
            .manifest(&repo, &Reference::Digest(gone.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::ManifestUnknown);
    }
    for kept in ["keep-1", "new"] {
        let reference = Reference::Tag(kept.parse().unwrap());
        assert!(
            b.projects.manifest(&repo, &reference).await.is_ok(),
            "{kept}"
        );
    }
}

//! Garbage collection racing pushes through the private domain: whatever the interleaving, a
//! manifest PUT that is acknowledged has every blob it references, and one that is refused
//! says `MANIFEST_BLOB_UNKNOWN`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::upload::Started;
use super::Projects;
use crate::cache::evict::Budget;
use crate::cache::Cache;
use crate::config::{self, ProjectSettings};
use crate::oci::{Digest, ErrorCode, Reference, RepoName};
use crate::storage::Storage;

fn projects() -> (tempfile::TempDir, Arc<Projects>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let cache = Cache::new(
        Arc::new(storage),
        Arc::default(),
        16 << 20,
        Budget::unlimited(),
        0,
    );
    let configured = config::Projects::new(&[ProjectSettings {
        name: "team".into(),
        public: false,
        members: Default::default(),
        retention: None,
    }]);
    (dir, Arc::new(Projects::new(configured, Arc::new(cache))))
}

fn body(data: &[u8]) -> impl super::upload::UploadBody {
    futures_util::stream::iter(vec![Ok::<_, String>(Bytes::copy_from_slice(data))])
}

async fn push_blob(projects: &Projects, repo: &RepoName, data: &[u8]) -> Digest {
    let digest = Digest::of(data);
    let started = projects
        .start_upload(repo, Some(digest.clone()), body(data))
        .await
        .unwrap();
    assert!(matches!(started, Started::Complete(_)));
    digest
}

fn manifest(config: &Digest, layer: &Digest) -> Bytes {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 1}],
    });
    Bytes::from(serde_json::to_vec(&manifest).unwrap())
}

/// gc with no grace (everything not yet in a manifest is a candidate) against PUTs of
/// manifests whose blobs were uploaded just before: each round either keeps the blobs (the
/// PUT went first) or refuses the PUT (gc went first), never acknowledges a lost blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_put_never_loses_a_blob_to_a_concurrent_gc() {
    let (_dir, projects) = projects();
    let repo: RepoName = "team/app".parse().unwrap();
    let (mut acknowledged, mut refused) = (0, 0);
    for round in 0..40u32 {
        let config = push_blob(&projects, &repo, format!("config {round}").as_bytes()).await;
        let layer = push_blob(&projects, &repo, format!("layer {round}").as_bytes()).await;
        let body = manifest(&config, &layer);
        let tag = Reference::Tag(format!("r{round}").parse().unwrap());
        let gc = {
            let projects = Arc::clone(&projects);
            let cache = Arc::clone(&projects.cache);
            tokio::task::spawn_blocking(move || {
                let locks = projects.repo_locks();
                cache.collect_garbage(Duration::ZERO, |r| locks.exclusive_blocking(r))
            })
        };
        // Half the rounds give gc a head start.
        if round % 2 == 0 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let put = projects.put_manifest(&repo, &tag, None, body).await;
        gc.await.unwrap().unwrap();
        match put {
            Ok(_) => {
                acknowledged += 1;
                for digest in [&config, &layer] {
                    let size = projects.blob_size(&repo, digest).await;
                    assert!(size.is_ok(), "round {round}: {digest} lost after an ack");
                    assert!(projects.storage().blobs.path(digest).exists());
                }
            }
            Err(e) => {
                refused += 1;
                assert_eq!(
                    e.code(),
                    ErrorCode::ManifestBlobUnknown,
                    "round {round}: {e}"
                );
            }
        }
        // Whatever happened, a gc now (nothing running) leaves a tagged manifest whole.
        let cache = Arc::clone(&projects.cache);
        let locks = Arc::clone(projects.repo_locks());
        tokio::task::spawn_blocking(move || {
            cache.collect_garbage(Duration::ZERO, |r| locks.exclusive_blocking(r))
        })
        .await
        .unwrap()
        .unwrap();
        if let Ok(stored) = projects.manifest(&repo, &tag).await {
            assert_eq!(stored.digest, Digest::of(&manifest(&config, &layer)));
            for digest in [&config, &layer] {
                assert!(
                    projects.blob_size(&repo, digest).await.is_ok(),
                    "round {round}"
                );
            }
        }
    }
    assert_eq!(acknowledged + refused, 40);
}

/// gc's exclusive hold waits for a write that holds the repository shared, and writes wait
/// for gc; other repositories do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_lock_orders_gc_and_writes() {
    let (_dir, projects) = projects();
    let locks = Arc::clone(projects.repo_locks());
    let (repo, other): (RepoName, RepoName) =
        ("team/app".parse().unwrap(), "team/other".parse().unwrap());
    let write = locks.shared(&repo).await;
    let (took, taken) = std::sync::mpsc::channel();
    let gc = {
        let (locks, repo) = (Arc::clone(&locks), repo.clone());
        tokio::task::spawn_blocking(move || {
            let held = locks.exclusive_blocking(&repo);
            took.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        taken.try_recv().is_err(),
        "gc went ahead of a write in progress"
    );
    let _elsewhere = tokio::time::timeout(Duration::from_secs(1), locks.shared(&other))
        .await
        .expect("another repository waited");
    drop(write);
    taken.recv_timeout(Duration::from_secs(5)).unwrap();
    let started = std::time::Instant::now();
    let _next = locks.shared(&repo).await;
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "a write went ahead of gc"
    );
    gc.await.unwrap();
}

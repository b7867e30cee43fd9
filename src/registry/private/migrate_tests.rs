use std::sync::Mutex;

use super::*;
use crate::oci::Tag;
use crate::storage::index::{BlobRecord, PushedManifest};
use crate::storage::migrate::copy_blobs;
use crate::storage::shared::in_memory;

#[derive(Default)]
struct Warnings(Mutex<Vec<String>>);

impl Progress for Warnings {
    fn planned(&self, _: u64, _: u64) {}
    fn sent(&self, _: u64) {}
    fn skipped(&self, _: u64) {}
    fn warn(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_owned());
    }
}

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";

fn blob(storage: &Storage, repo: &RepoName, data: &[u8]) -> Digest {
    let digest = Digest::of(data);
    storage.blobs.write_verified(&digest, data).unwrap();
    let record = BlobRecord::new(data.len() as u64, None);
    storage
        .index
        .put_private_blob(repo, &digest, &record)
        .unwrap();
    digest
}

fn image(config: &Digest, layer: &Digest, subject: Option<&Digest>) -> Vec<u8> {
    let subject = subject
        .map(|s| format!(r#","artifactType":"application/example","subject":{{"mediaType":"{IMAGE}","digest":"{s}","size":1}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{IMAGE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":5}}]{subject}}}"#
    )
    .into_bytes()
}

/// Indexes a pushed manifest; `on_disk` other bytes than `body` makes it rotten.
fn manifest(
    storage: &Storage,
    repo: &RepoName,
    body: &[u8],
    on_disk: &[u8],
    tag: Option<&Tag>,
    referrer: Option<(&Digest, &ReferrerRecord)>,
) -> Digest {
    let digest = Digest::of(body);
    let path = storage.blobs.path(&digest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, on_disk).unwrap();
    let pushed = PushedManifest {
        repo,
        digest: &digest,
        media_type: IMAGE,
        size: body.len() as u64,
        tag,
        referrer,
    };
    let record = BlobRecord::new(body.len() as u64, Some(IMAGE.into()));
    storage
        .index
        .put_private_manifest(&pushed, &record)
        .unwrap();
    digest
}

/// Everything a single node's private project holds is read back through the shared
/// store's records after a migration: links with sizes, manifests with their media type,
/// tags, referrers and the catalog; a manifest whose file rotted is left out with its tag,
/// and a rerun writes the same records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_records_are_readable_through_the_shared_records() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::open(dir.path()).unwrap());
    let repo: RepoName = "team/app".parse().unwrap();
    let other: RepoName = "team/other".parse().unwrap();
    let (v1, bad): (Tag, Tag) = ("v1".parse().unwrap(), "bad".parse().unwrap());
    let config = blob(&storage, &repo, b"{}");
    let layer = blob(&storage, &repo, b"layer");
    blob(&storage, &other, b"layer");
    let body = image(&config, &layer, None);
    let main = manifest(&storage, &repo, &body, &body, Some(&v1), None);
    let signature_body = image(&config, &layer, Some(&main));
    let record = ReferrerRecord {
        media_type: IMAGE.into(),
        digest: Digest::of(&signature_body),
        size: signature_body.len() as u64,
        artifact_type: Some("application/example".into()),
        annotations: None,
    };
    manifest(
        &storage,
        &repo,
        &signature_body,
        &signature_body,
        None,
        Some((&main, &record)),
    );
    let rotten_body = image(&layer, &config, None);
    let mut on_disk = rotten_body.clone();
    on_disk[10] ^= 1;
    let rotten = manifest(&storage, &repo, &rotten_body, &on_disk, Some(&bad), None);

    let store = in_memory();
    let warnings = Warnings::default();
    let blobs = copy_blobs(Arc::clone(&storage), &store, &warnings)
        .await
        .unwrap();
    assert_eq!((blobs.copied, blobs.corrupt), (4, 1));
    let report = copy_records(
        Arc::clone(&storage),
        &store,
        blobs.not_copied.clone(),
        &warnings,
    )
    .await
    .unwrap();
    // Links: config, layer and the two good manifests in team/app, the layer in team/other
    // (the rotten manifest's self-link is left out, with the manifest and its tag).
    assert_eq!(
        report,
        RecordReport {
            links: 5,
            manifests: 2,
            referrers: 1,
            tags: 1,
            skipped: 3,
        }
    );

    let records = SharedRecords { store: &store };
    assert_eq!(records.linked_blob(&repo, &layer).await.unwrap(), Some(5));
    assert_eq!(records.linked_blob(&other, &layer).await.unwrap(), Some(5));
    assert_eq!(records.linked_blob(&other, &config).await.unwrap(), None);
    assert_eq!(records.linked_blob(&repo, &rotten).await.unwrap(), None);
    assert_eq!(
        records
            .manifest_type(&repo, &main)
            .await
            .unwrap()
            .as_deref(),
        Some(IMAGE)
    );
    assert_eq!(records.manifest_type(&repo, &rotten).await.unwrap(), None);
    assert_eq!(records.tag(&repo, &v1).await.unwrap(), Some(main.clone()));
    assert_eq!(records.tag(&repo, &bad).await.unwrap(), None);
    assert_eq!(records.tags(&repo).await.unwrap(), ["v1"]);
    assert_eq!(records.referrers(&repo, &main).await.unwrap(), vec![record]);
    assert_eq!(
        records.repositories().await.unwrap(),
        ["team/app", "team/other"]
    );
    assert_eq!(
        store.blob_size(&main).await.unwrap(),
        Some(body.len() as u64)
    );
    let said = warnings.0.lock().unwrap().join("\n");
    assert!(
        said.contains(&format!("team/app:bad left out: its manifest {rotten}")),
        "{said}"
    );

    // A rerun finds the same and writes the same.
    let again = copy_records(storage, &store, blobs.not_copied, &warnings)
        .await
        .unwrap();
    assert_eq!(again, report);
    assert_eq!(records.tag(&repo, &v1).await.unwrap(), Some(main));
}

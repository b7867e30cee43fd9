//! Referrers through the mirror against a real upstream: Distribution 2.8 (`docker-registry`)
//! has no referrers API, so a signature attached there is found through the referrers tag
//! schema (`sha256-<hex>`), as cosign and oras attach them to such registries. Then the same
//! answer offline, from the cache; and a pinned image bringing its signature along, kept
//! through eviction and gc and served offline.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::images::{self, sha256, Blob, Flavor, Image, OCI_INDEX, OCI_MANIFEST};
use common::upstream::{UpstreamRegistry, SEEDER};
use common::{assert_dir_matches, config_for, skopeo_pull, Berth};

const MIB: usize = 1024 * 1024;

const REPO: &str = "library/signed";
const SIG: &str = "application/vnd.example.signature";

/// An artifact of type `SIG` whose subject is `subject`, with one small layer.
fn signature(subject: &Image) -> Image {
    let empty = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    let payload = Blob::new(
        "application/vnd.example.signature.payload",
        b"signed by the test".to_vec(),
    );
    let descriptor = |b: &Blob| serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.data.len()});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIG,
        "config": descriptor(&empty),
        "layers": [descriptor(&payload)],
        "subject": descriptor(&subject.manifest),
    });
    Image {
        manifest: Blob::new(OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap()),
        blobs: vec![empty, payload],
        children: Vec::new(),
    }
}

/// The referrers tag schema's index for `referrers` (all of type `SIG`).
fn tag_index(referrers: &[&Image]) -> Image {
    let manifests: Vec<_> = referrers
        .iter()
        .map(|r| {
            serde_json::json!({
                "mediaType": r.manifest.media_type,
                "digest": r.manifest.digest,
                "size": r.manifest.data.len(),
                "artifactType": SIG,
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    Image {
        manifest: Blob::new(OCI_INDEX, serde_json::to_vec(&index).unwrap()),
        blobs: Vec::new(),
        children: Vec::new(),
    }
}

/// `GET …/referrers/<subject>` through berth: the listed digests and the filter header, after
/// checking that the answer is an OCI index.
async fn referrers(berth: &Berth, subject: &str, query: &str) -> (Vec<String>, Option<String>) {
    let url = format!("{}/v2/{REPO}/referrers/{subject}{query}", berth.url);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("content-type").as_deref(), Some(OCI_INDEX));
    let filters = header("oci-filters-applied");
    let index: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let digests = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .collect();
    (digests, filters)
}

#[tokio::test]
async fn a_signature_tagged_upstream_is_listed_through_the_mirror_and_offline() {
    let mut upstream = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push")]);
    let subject = images::image(Flavor::Oci, 41, &[4096], "amd64");
    let sig = signature(&subject);
    let hex = subject.manifest.digest.trim_start_matches("sha256:");
    upstream.push(REPO, "1", &subject).await;
    upstream.push(REPO, &sig.manifest.digest, &sig).await;
    upstream
        .push(REPO, &format!("sha256-{hex}"), &tag_index(&[&sig]))
        .await;
    let unsigned = images::image(Flavor::Oci, 42, &[4096], "amd64");
    upstream.push(REPO, "2", &unsigned).await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let online = config_for(&upstream.url(), "1h", "");
    let mut berth = Berth::start_in(&online, &data);
    let subject_digest = &subject.manifest.digest;

    let (listed, filters) = referrers(&berth, subject_digest, "").await;
    assert_eq!(listed, vec![sig.manifest.digest.clone()]);
    assert_eq!(filters, None);
    // Distribution 2.8 was asked for its API (and has none), then for the tag.
    assert!(upstream.requests("GET", &format!("/referrers/{subject_digest}")) >= 1);
    assert_eq!(
        upstream.requests("GET", &format!("/manifests/sha256-{hex}")),
        1
    );

    let (listed, filters) =
        referrers(&berth, subject_digest, &format!("?artifactType={SIG}")).await;
    assert_eq!(listed, vec![sig.manifest.digest.clone()]);
    assert_eq!(filters.as_deref(), Some("artifactType"));
    let (listed, filters) =
        referrers(&berth, subject_digest, "?artifactType=application/other").await;
    assert!(listed.is_empty());
    assert_eq!(filters.as_deref(), Some("artifactType"));

    // The signature itself through the mirror, byte for byte (and so cached).
    let url = format!("{}/v2/{REPO}/manifests/{}", berth.url, sig.manifest.digest);
    let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&body), sig.manifest.digest);

    // An image nobody signed, and a subject upstream does not have: empty indexes.
    let (listed, _) = referrers(&berth, &unsigned.manifest.digest, "").await;
    assert!(listed.is_empty());
    let (listed, _) = referrers(&berth, &sha256(b"no such manifest"), "").await;
    assert!(listed.is_empty());

    // Offline, with upstream gone: the cached tag answers; an uncached one is an empty index.
    berth.kill();
    upstream.stop();
    let offline = config_for(&upstream.url(), "1h", "[mirror]\noffline = true\n");
    let berth = Berth::start_in(&offline, &data);
    let (listed, _) = referrers(&berth, subject_digest, "").await;
    assert_eq!(listed, vec![sig.manifest.digest.clone()]);
    let (listed, _) = referrers(&berth, &unsigned.manifest.digest, "").await;
    assert!(listed.is_empty());
}

fn on_disk(files: &[PathBuf], digest: &str) -> bool {
    files
        .iter()
        .any(|f| f.ends_with(digest.trim_start_matches("sha256:")))
}

/// GET `path` through berth: the body, after checking the status is 200.
async fn get_ok(berth: &Berth, path: &str) -> bytes::Bytes {
    let url = format!("{}{path}", berth.url);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}\n{}", berth.log());
    response.bytes().await.unwrap()
}

#[tokio::test]
async fn a_pinned_image_brings_its_signature_kept_through_eviction_and_gc_and_offline() {
    let mut upstream = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push")]);
    let subject = images::image(Flavor::Oci, 43, &[64 * 1024], "amd64");
    let sig = signature(&subject);
    let hex = subject.manifest.digest.trim_start_matches("sha256:");
    let tagged = tag_index(&[&sig]);
    upstream.push(REPO, "1", &subject).await;
    upstream.push(REPO, &sig.manifest.digest, &sig).await;
    upstream.push(REPO, &format!("sha256-{hex}"), &tagged).await;
    let bulk = images::image(Flavor::Oci, 44, &[2 * MIB, 2 * MIB, 2 * MIB], "amd64");
    upstream.push("library/bulk", "1", &bulk).await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sections = "[storage]\nmax_size = \"6MiB\"\nlow_water_percent = 70\n[gc]\ngrace = \"1s\"\n[mirror]\npinned = [\"signed:1\"]\n";
    let online = format!("{sections}{}", config_for(&upstream.url(), "5m", ""));
    let mut berth = Berth::start_in(&online, &data);

    // Seeded with no client asking: the image, the signature and its blobs, the tag's index.
    berth.wait_for_metric("berth_pin_seeds_total", 1).await;
    berth.settle();
    let kept = || {
        let mut all: Vec<&Blob> = sig.all_blobs();
        all.extend(subject.all_blobs());
        all.extend([&sig.manifest, &tagged.manifest, &subject.manifest]);
        all
    };
    let files = berth.blob_files();
    for blob in kept() {
        assert!(
            on_disk(&files, &blob.digest),
            "{} not seeded\n{}",
            blob.digest,
            berth.log()
        );
    }
    assert!(
        berth.log().contains("referrers=1"),
        "the progress line counts the signature\n{}",
        berth.log()
    );

    // Other content pushes the cache past its budget: eviction spares the pin's signature.
    let dest = tempfile::tempdir().unwrap();
    skopeo_pull(&berth, "bulk:1", dest.path(), false);
    assert_dir_matches(dest.path(), &bulk);
    berth.wait_for_metric("berth_evictions_total", 1).await;
    berth.settle();
    let files = berth.blob_files();
    for blob in kept() {
        assert!(on_disk(&files, &blob.digest), "{} evicted", blob.digest);
    }
    assert!(
        bulk.layer_digests().iter().any(|d| !on_disk(&files, d)),
        "no unpinned layer was evicted"
    );

    // gc on the running berth, past its grace: the signature stays.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let config_path = data.with_extension("gc.toml");
    std::fs::write(&config_path, &online).unwrap();
    let gc = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(&data)
        .arg("gc")
        .output()
        .unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let files = berth.blob_files();
    for blob in kept() {
        assert!(on_disk(&files, &blob.digest), "{} collected", blob.digest);
    }

    // Upstream gone, berth offline: the referrers list, the signature and its blobs, byte
    // for byte.
    berth.kill();
    upstream.stop();
    let offline = format!(
        "{sections}offline = true\n{}",
        config_for(&upstream.url(), "5m", "")
    );
    let berth = Berth::start_in(&offline, &data);
    let (listed, _) = referrers(&berth, &subject.manifest.digest, "").await;
    assert_eq!(listed, vec![sig.manifest.digest.clone()]);
    let (listed, filters) = referrers(
        &berth,
        &subject.manifest.digest,
        &format!("?artifactType={SIG}"),
    )
    .await;
    assert_eq!(listed, vec![sig.manifest.digest.clone()]);
    assert_eq!(filters.as_deref(), Some("artifactType"));
    let body = get_ok(
        &berth,
        &format!("/v2/{REPO}/manifests/{}", sig.manifest.digest),
    )
    .await;
    assert_eq!(&body[..], &sig.manifest.data[..]);
    for blob in &sig.blobs {
        let body = get_ok(&berth, &format!("/v2/{REPO}/blobs/{}", blob.digest)).await;
        assert_eq!(&body[..], &blob.data[..], "{}", blob.digest);
    }
    assert_eq!(berth.metric("berth_pin_failures_total").await, 0);
}

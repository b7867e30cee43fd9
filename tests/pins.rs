//! Pinned images: fetched before anyone pulls them, kept through eviction, served when the
//! upstream is gone, and released when the pin is removed.

mod common;

use std::path::{Path, PathBuf};

use common::images::{self, Flavor};
use common::upstream::{UpstreamRegistry, SEEDER};
use common::{assert_dir_matches, config_for, skopeo_pull, Berth};

const MIB: usize = 1024 * 1024;

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn on_disk(files: &[PathBuf], digest: &str) -> bool {
    files.iter().any(|f| f.ends_with(hex(digest)))
}

/// `berth cache stats` on a stopped berth's data directory.
fn cache_stats(data_dir: &Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["cache", "stats"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn pinned_images_are_seeded_ahead_survive_eviction_and_serve_without_upstream() {
    let mut upstream = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push,delete")]);
    // A two-platform index (amd64, arm64), of which only amd64 is wanted.
    let app = images::multi_arch(Flavor::Oci, 41, &[MIB]);
    let (amd64, arm64) = (&app.children[0], &app.children[1]);
    let bulk = images::image(Flavor::Oci, 42, &[2 * MIB, 2 * MIB, 2 * MIB], "amd64");
    upstream.push("library/app", "1", &app).await;
    upstream.push("library/bulk", "1", &bulk).await;
    let gets_before = upstream.blob_gets(&["library/app"]);

    let budget = "[storage]\nmax_size = \"6MiB\"\nlow_water_percent = 70\n";
    let pinned = "[mirror]\npinned = [\"app:1\"]\npin_platforms = [\"linux/amd64\"]\n";
    let config = format!("{budget}{pinned}{}", config_for(&upstream.url(), "5m", ""));
    let berth = Berth::start(&config);

    // Seeded with no client asking: the index, the amd64 image whole, nothing of arm64.
    berth.wait_for_metric("berth_pin_seeds_total", 1).await;
    berth.settle();
    let files = berth.blob_files();
    for digest in [&app.manifest.digest, &amd64.manifest.digest]
        .into_iter()
        .chain(amd64.blobs.iter().map(|b| &b.digest))
    {
        assert!(on_disk(&files, digest), "pinned {digest} was not fetched");
    }
    for blob in arm64.all_blobs().into_iter().chain([&arm64.manifest]) {
        assert!(
            !on_disk(&files, &blob.digest),
            "arm64 {} was fetched",
            blob.digest
        );
    }
    assert_eq!(
        upstream.blob_gets(&["library/app"]) - gets_before,
        amd64.blobs.len(),
        "each wanted blob is fetched once"
    );

    // 6 MiB of other layers push the cache past its budget: eviction runs, and spares the pin.
    let dest = tempfile::tempdir().unwrap();
    skopeo_pull(&berth, "bulk:1", dest.path(), false);
    assert_dir_matches(dest.path(), &bulk);
    berth.wait_for_metric("berth_evictions_total", 1).await;
    berth.settle();
    let files = berth.blob_files();
    for blob in amd64.blobs.iter().chain([&amd64.manifest, &app.manifest]) {
        assert!(
            on_disk(&files, &blob.digest),
            "pinned {} was evicted",
            blob.digest
        );
    }
    let evicted = bulk
        .layer_digests()
        .iter()
        .filter(|d| !on_disk(&files, d))
        .count();
    assert!(evicted >= 1, "no unpinned layer was evicted");
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(
        bytes <= 6 * MIB as u64,
        "{bytes} bytes on disk, over budget"
    );

    // The upstream goes away; the pinned image still pulls, whole and correct.
    upstream.stop();
    let data_dir = berth.into_data_dir();
    let stats = cache_stats(&data_dir);
    assert!(stats.contains("pinned images: 1\n"), "{stats}");
    assert!(
        stats.contains(&format!("  app:1 -> {} (4 blobs)", app.manifest.digest)),
        "{stats}"
    );
    // Offline, as an air-gapped site runs: the pin is found complete in the cache.
    let offline = format!(
        "{budget}{pinned}offline = true\n{}",
        config_for(&upstream.url(), "5m", "")
    );
    let berth = Berth::start_in(&offline, &data_dir);
    berth.wait_for_metric("berth_pin_seeds_total", 1).await;
    let dest = tempfile::tempdir().unwrap();
    skopeo_pull(&berth, "app:1", dest.path(), false);
    assert_dir_matches(dest.path(), amd64);
    assert_eq!(berth.metric("berth_pin_failures_total").await, 0);
    drop(berth);

    // Unpinned by configuration: the record goes, so its content is ordinary cache again.
    let berth = Berth::start_in(
        &format!("{budget}{}", config_for(&upstream.url(), "5m", "")),
        &data_dir,
    );
    assert!(berth.log().contains("no longer pinned"), "{}", berth.log());
    drop(berth);
    let stats = cache_stats(&data_dir);
    assert!(stats.contains("pinned images: 0\n"), "{stats}");
}

#[tokio::test]
async fn a_pinned_tag_that_moves_upstream_is_followed_on_refresh() {
    use common::fault::FaultyUpstream;
    use common::images::{random_bytes, sha256, OCI_MANIFEST};

    let manifest = |layer: &str, size: usize| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(b"{}"), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}],
        }))
        .unwrap()
    };
    let upstream = FaultyUpstream::start();
    upstream.put_blob(b"{}");
    let (first, second) = (random_bytes(51, 200_000), random_bytes(52, 300_000));
    let first_digest = upstream.put_blob(&first);
    let second_digest = upstream.put_blob(&second);
    upstream.put_manifest("v1", OCI_MANIFEST, &manifest(&first_digest, first.len()));

    let berth = Berth::start(&format!(
        "[mirror]\npinned = [\"app:v1\"]\npin_refresh = \"1s\"\n{}",
        config_for(&upstream.url(), "1ms", "")
    ));
    berth.wait_for_metric("berth_pin_seeds_total", 1).await;
    berth.settle();
    assert!(on_disk(&berth.blob_files(), &first_digest));
    assert!(!on_disk(&berth.blob_files(), &second_digest));

    // The tag moves; the next refresh fetches the new image with no client asking.
    upstream.put_manifest("v1", OCI_MANIFEST, &manifest(&second_digest, second.len()));
    let seeds = berth.metric("berth_pin_seeds_total").await;
    berth
        .wait_for_metric("berth_pin_seeds_total", seeds + 2)
        .await;
    berth.settle();
    assert!(
        on_disk(&berth.blob_files(), &second_digest),
        "{}",
        berth.log()
    );
    assert_eq!(
        FaultyUpstream::count(&upstream.blob_gets),
        3,
        "config and both layers, once each"
    );
}

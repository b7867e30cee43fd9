//! Online garbage collection on a real berth: images pushed with skopeo into a project, one
//! deleted by digest, `berth gc` run against the running berth while another client pushes an
//! image reusing the same blobs; and the schedule (`[gc] interval`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cli::{berth_ok, number, on_disk};
use common::images::with_layer;
use common::images::{self, Blob, Flavor, Image};
use common::private::{creds, AuthFiles};
use common::private::{skopeo_pull_as, skopeo_push_to};
use common::upstream::{UpstreamRegistry, SEEDER};
use common::{assert_dir_matches, config_for, skopeo_ok, Berth};

const MIB: usize = 1024 * 1024;

fn push_ok(berth: &Berth, image: &Image, target: &str) {
    let output = skopeo_push_to(&berth.addr, image, target, "alice");
    assert!(
        output.status.success(),
        "push {target}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Bytes of the blob files, leaving out those named in `except`.
fn disk_bytes(files: &[PathBuf], except: &[&Blob]) -> u64 {
    files
        .iter()
        .filter(|f| !except.iter().any(|b| f.ends_with(&b.digest[7..])))
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn gc_reclaims_a_deleted_image_while_another_client_pushes() {
    let upstream = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push,delete")]);
    let v1 = images::image(Flavor::Oci, 91, &[MIB, MIB / 2], "amd64");
    let shared = &v1.blobs[2];
    let v2 = with_layer(&images::image(Flavor::Oci, 92, &[MIB / 4], "amd64"), shared);
    let v3 = with_layer(&images::image(Flavor::Oci, 93, &[MIB / 3], "amd64"), shared);
    // Mirrored: one image pulled by tag (its tag record holds it), one by digest only.
    let tagged = images::image(Flavor::Oci, 94, &[MIB / 5], "amd64");
    let by_digest = images::image(Flavor::Oci, 95, &[MIB / 6], "amd64");
    upstream.push("library/tagged", "1", &tagged).await;
    upstream.push("library/untagged", "1", &by_digest).await;

    let files = AuthFiles::create();
    let config = format!(
        "{}{}",
        files.config(""),
        config_for(&upstream.url(), "5m", "[gc]\ngrace = \"2s\"\n")
    );
    let berth = Berth::start(&config);
    let config_path = berth.data_dir.with_extension("gc.toml");
    std::fs::write(&config_path, &config).unwrap();

    push_ok(&berth, &v1, "team/medium:v1");
    push_ok(&berth, &v2, "team/medium:v2");
    let dest = skopeo_pull_as(&berth, "library/tagged:1", "alice");
    assert_dir_matches(dest.path(), &tagged);
    let untagged = format!("library/untagged@{}", by_digest.manifest.digest);
    let dest = skopeo_pull_as(&berth, &untagged, "alice");
    assert_dir_matches(dest.path(), &by_digest);
    berth.settle();
    // Nothing is garbage yet, whatever the grace.
    let early = berth_ok(&berth, &config_path, &["gc"]);
    assert_eq!(number(&early, "manifests removed:"), 0, "{early}");
    assert_eq!(number(&early, "blobs removed:"), 0, "{early}");
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A maintainer deletes v1 by digest, as `skopeo delete` does.
    skopeo_ok(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &creds("carol"),
        &format!("docker://{}/team/medium@{}", berth.addr, v1.manifest.digest),
    ]);
    let mut own: Vec<&Blob> = v3.blobs[..2].iter().collect();
    own.push(&v3.manifest);
    let before = disk_bytes(&berth.blob_files(), &own);
    let pusher = {
        let (addr, image) = (berth.addr.clone(), v3.clone());
        std::thread::spawn(move || skopeo_push_to(&addr, &image, "team/medium:v3", "alice"))
    };
    let (mut runs, mut manifests, mut blobs, mut freed) = (0, 0, 0, 0);
    while runs == 0 || !pusher.is_finished() {
        let report = berth_ok(&berth, &config_path, &["gc"]);
        manifests += number(&report, "manifests removed:");
        blobs += number(&report, "blobs removed:");
        freed += number(&report, "bytes removed:");
        if runs == 0 {
            assert!(report.starts_with("freed "), "{report}");
            assert!(report.contains(" MiB in "), "{report}");
        }
        runs += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pushed = pusher.join().unwrap();
    assert!(
        pushed.status.success(),
        "push during gc: {}\n{}",
        String::from_utf8_lossy(&pushed.stderr),
        berth.log()
    );
    let after = disk_bytes(&berth.blob_files(), &own);
    // v1's manifest, config and own layer; the digest-only mirror image's manifest, config
    // and layer.
    assert_eq!((manifests, blobs), (2, 4), "in {runs} runs");
    assert_eq!(before - after, freed, "disk went down by what gc reported");
    let expected: usize = [&v1.manifest, &v1.blobs[0], &v1.blobs[1]]
        .into_iter()
        .chain(by_digest.all_blobs())
        .chain([&by_digest.manifest])
        .map(|b| b.data.len())
        .sum();
    assert_eq!(freed, expected as u64);
    for gone in [
        &v1.manifest,
        &v1.blobs[0],
        &v1.blobs[1],
        &by_digest.manifest,
    ] {
        assert!(!on_disk(&berth, &gone.digest), "{} kept", gone.digest);
    }
    assert!(on_disk(&berth, &shared.digest), "the shared layer went");
    for (name, image) in [
        ("team/medium:v2", &v2),
        ("team/medium:v3", &v3),
        ("library/tagged:1", &tagged),
    ] {
        let dest = skopeo_pull_as(&berth, name, "alice");
        assert_dir_matches(dest.path(), image);
    }
    let deleted = common::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds("alice"),
        &format!("docker://{}/team/medium@{}", berth.addr, v1.manifest.digest),
    ]);
    assert!(
        !deleted.status.success(),
        "the deleted manifest is still served"
    );
    assert!(berth.metric("berth_gc_manifests_removed_total").await >= 2);
    assert!(berth.metric("berth_gc_bytes_removed_total").await >= freed);
    assert!(berth.log().contains("garbage collection"));
}

/// `[gc] interval`: the running berth collects by itself.
#[tokio::test]
async fn gc_runs_on_its_schedule() {
    let upstream = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push,delete")]);
    let image = images::image(Flavor::Oci, 96, &[MIB / 4], "amd64");
    let files = AuthFiles::create();
    let gc = "[gc]\ngrace = \"1s\"\ninterval = \"1s\"\n";
    let config = format!(
        "{}{}",
        files.config(""),
        config_for(&upstream.url(), "5m", gc)
    );
    let berth = Berth::start(&config);
    push_ok(&berth, &image, "team/app:1");
    skopeo_ok(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &creds("carol"),
        &format!("docker://{}/team/app@{}", berth.addr, image.manifest.digest),
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while image.all_blobs().iter().any(|b| on_disk(&berth, &b.digest))
        || on_disk(&berth, &image.manifest.digest)
    {
        assert!(Instant::now() < deadline, "not collected:\n{}", berth.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(berth.metric("berth_gc_runs_total").await >= 1);
    assert!(berth.metric("berth_gc_manifests_removed_total").await >= 1);
}

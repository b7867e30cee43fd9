//! Operations on a running berth through its admin socket (`berth cache stats|ls|rm`,
//! `berth gc`), with a real berth process, skopeo, and the Distribution upstream; and the same
//! commands offline on the stopped berth.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::cli::{berth_cli, berth_ok, number, on_disk};
use common::images::with_layer;
use common::images::{self, Blob, Flavor};
use common::private::{skopeo_pull_as, skopeo_push_to};
use common::private::{token_string, AuthFiles};
use common::upstream::{UpstreamRegistry, SEEDER};
use common::{assert_dir_matches, config_for, Berth};

const MIB: usize = 1024 * 1024;

fn disk_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// Fetches a blob through the mirror without its manifest: stored, referenced by nothing.
async fn fetch_blob(berth: &Berth, repo: &str, blob: &Blob) {
    let token = token_string(
        &berth.url,
        Some("alice"),
        &[&format!("repository:{repo}:pull")],
    )
    .await;
    let response = reqwest::Client::new()
        .get(format!("{}/v2/{repo}/blobs/{}", berth.url, blob.digest))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", blob.digest);
    assert_eq!(response.bytes().await.unwrap(), blob.data);
}

#[tokio::test]
async fn stats_ls_rm_and_gc_on_a_running_berth_and_offline() {
    let upstream = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push,delete")]);
    let one = images::image(Flavor::Oci, 71, &[MIB, MIB / 2], "amd64");
    // `two` shares `one`'s second layer.
    let two = with_layer(
        &images::image(Flavor::Oci, 72, &[MIB / 4], "amd64"),
        &one.blobs[2],
    );
    let pushed = images::image(Flavor::Oci, 73, &[MIB, MIB / 2], "amd64");
    let loose = images::image(Flavor::Oci, 74, &[MIB / 3, MIB / 5], "amd64");
    upstream.push("library/app", "1", &one).await;
    upstream.push("library/app", "2", &two).await;
    upstream.push("library/pushed", "1", &pushed).await;
    upstream.push("library/loose", "1", &loose).await;

    let files = AuthFiles::create();
    let config = format!(
        "{}{}",
        files.config(""),
        config_for(&upstream.url(), "5m", "[gc]\ngrace = \"2s\"\n")
    );
    let mut berth = Berth::start(&config);
    let config_path = berth.data_dir.with_extension("admin.toml");
    std::fs::write(&config_path, &config).unwrap();

    // The socket is the user's alone.
    let socket = berth.data_dir.join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin socket mode {mode:o}");
    // Its routes are not on the TCP listener.
    let tcp = reqwest::Client::new()
        .post(format!("{}/admin/gc", berth.url))
        .send()
        .await
        .unwrap();
    assert_eq!(tcp.status(), 404);

    for (tag, image) in [("1", &one), ("2", &two)] {
        let dest = skopeo_pull_as(&berth, &format!("library/app:{tag}"), "alice");
        assert_dir_matches(dest.path(), image);
    }
    berth.settle();

    // Answered by the running berth (the index is locked: an offline open would fail).
    let stats = berth_ok(&berth, &config_path, &["cache", "stats"]);
    assert!(
        stats.contains("cached: ") && stats.contains(" MiB in 7 blobs"),
        "{stats}"
    );
    assert!(
        stats.contains("  manifests: ") && stats.contains("in 2 blobs"),
        "{stats}"
    );
    assert!(stats.contains("cached mirror tags: 2\n"), "{stats}");
    let ls = berth_ok(&berth, &config_path, &["cache", "ls"]);
    for (tag, image) in [("1", &one), ("2", &two)] {
        let line = format!("docker.io/library/app:{tag} -> {}", image.manifest.digest);
        assert!(ls.contains(&line), "{line} missing:\n{ls}");
    }
    assert!(ls.contains(" MiB\n"), "{ls}");

    // rm drops one image: its own blobs go from disk, the shared layer stays.
    let rm = berth_ok(&berth, &config_path, &["cache", "rm", "app:1"]);
    assert!(rm.contains("removed app:1"), "{rm}");
    for gone in [&one.manifest, &one.blobs[0], &one.blobs[1]] {
        assert!(
            !on_disk(&berth, &gone.digest),
            "{} kept:\n{rm}",
            gone.digest
        );
    }
    assert!(
        on_disk(&berth, &one.blobs[2].digest),
        "shared layer removed"
    );
    assert!(rm.contains("1 blobs kept"), "{rm}");
    let ls = berth_ok(&berth, &config_path, &["cache", "ls"]);
    assert!(!ls.contains("app:1 "), "{ls}");
    let missing = berth_cli(&berth, &config_path, &["cache", "rm", "app:9"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not cached"));
    let project = berth_cli(&berth, &config_path, &["cache", "rm", "team/app:1"]);
    assert!(String::from_utf8_lossy(&project.stderr).contains("private project"));
    let dest = skopeo_pull_as(&berth, "library/app:2", "alice");
    assert_dir_matches(dest.path(), &two);

    // gc, quiet: a blob fetched without its manifest goes once the grace has passed, and the
    // disk shrinks by exactly what gc reports.
    fetch_blob(&berth, "library/loose", &loose.blobs[1]).await;
    berth.settle();
    let early = berth_ok(&berth, &config_path, &["gc"]);
    assert_eq!(number(&early, "blobs removed:"), 0, "{early}");
    assert!(on_disk(&berth, &loose.blobs[1].digest));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = disk_bytes(&berth.blob_files());
    let quiet = berth_ok(&berth, &config_path, &["gc"]);
    let after = disk_bytes(&berth.blob_files());
    assert_eq!(number(&quiet, "blobs removed:"), 1, "{quiet}");
    let freed = number(&quiet, "bytes removed:");
    assert_eq!(freed, loose.blobs[1].data.len() as u64, "{quiet}");
    assert_eq!(before - after, freed, "{quiet}");
    assert!(
        quiet.contains(" KiB in 0 manifests and 1 blobs\n"),
        "{quiet}"
    );
    assert!(!on_disk(&berth, &loose.blobs[1].digest));
    assert!(berth.metric("berth_gc_bytes_removed_total").await >= freed);
    assert!(berth.log().contains("garbage collection"));

    // gc while a push of the same blobs into a project runs: the unreferenced copies in the
    // cache may go or stay, but the push and every pull that should work, work.
    for blob in &pushed.blobs {
        fetch_blob(&berth, "library/pushed", blob).await;
    }
    fetch_blob(&berth, "library/loose", &loose.blobs[2]).await;
    berth.settle();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pusher = {
        let addr = berth.addr.clone();
        let image = pushed.clone();
        std::thread::spawn(move || skopeo_push_to(&addr, &image, "team/pushed:1", "alice"))
    };
    let mut runs = 0;
    let mut removed = 0;
    while runs == 0 || !pusher.is_finished() {
        let report = berth_ok(&berth, &config_path, &["gc"]);
        removed += number(&report, "blobs removed:");
        runs += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let push = pusher.join().unwrap();
    assert!(
        push.status.success(),
        "push during gc: {}\n{}",
        String::from_utf8_lossy(&push.stderr),
        berth.log()
    );
    assert!(removed >= 1, "gc removed nothing in {runs} runs");
    assert!(!on_disk(&berth, &loose.blobs[2].digest));
    for blob in pushed.all_blobs() {
        assert!(on_disk(&berth, &blob.digest), "pushed {} lost", blob.digest);
    }
    let dest = skopeo_pull_as(&berth, "team/pushed:1", "alice");
    assert_dir_matches(dest.path(), &pushed);
    let dest = skopeo_pull_as(&berth, "library/app:2", "alice");
    assert_dir_matches(dest.path(), &two);
    berth.settle();

    // Stopped: the socket goes, and the same commands work on the data directory.
    berth.stop();
    assert!(!socket.exists(), "admin socket left behind");
    let stats = berth_ok(&berth, &config_path, &["cache", "stats"]);
    assert!(
        stats.contains("cached: ") && stats.contains(" in "),
        "{stats}"
    );
    let ls = berth_ok(&berth, &config_path, &["cache", "ls"]);
    assert!(ls.contains("docker.io/library/app:2 -> "), "{ls}");
    let gc = berth_ok(&berth, &config_path, &["cache", "gc"]);
    assert!(gc.contains("freed "), "{gc}");
    let rm = berth_ok(
        &berth,
        &config_path,
        &["cache", "rm", "docker.io/library/app:2"],
    );
    assert!(rm.contains("removed docker.io/library/app:2"), "{rm}");
    assert!(!on_disk(&berth, &two.manifest.digest));
    assert!(!on_disk(&berth, &one.blobs[2].digest), "no longer shared");

    // A crash leaves the socket behind; the next start replaces it.
    berth.relaunch();
    berth.restart();
    assert!(socket.exists());
    let dest = skopeo_pull_as(&berth, "team/pushed:1", "alice");
    assert_dir_matches(dest.path(), &pushed);
}

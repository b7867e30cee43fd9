//! `berth storage migrate --to-s3` end to end: a single node's private images, pushed with
//! skopeo, are copied into a bucket of a real Garage cluster, and a node started over that
//! bucket with an empty data directory serves them byte for byte.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::garage::garage;
use common::images::{self, sha256, Flavor};
use common::private::{creds, skopeo_push, AuthFiles};
use common::{config_for, skopeo, Berth};

const MIB: usize = 1024 * 1024;

fn migrate(config: &str, data_dir: &std::path::Path) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["storage", "migrate", "--to-s3"])
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The number a summary line gives, e.g. `blobs copied: 7 (12 MiB)` → 7.
fn count(output: &Output, line: &str) -> u64 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {line:?} in the summary:\n{}", text(output)))
}

/// A bucket just created may not be known to the node asked at once.
async fn wait_for_bucket(bucket: &str) {
    use object_store::ObjectStore;
    let g = garage();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(g.endpoint(0))
        .with_bucket_name(bucket)
        .with_region(g.region())
        .with_access_key_id(g.access_key_id())
        .with_secret_access_key(g.secret_access_key())
        .with_allow_http(true)
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.list_with_delimiter(None).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no bucket {bucket}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_store_moves_to_s3_and_is_served_from_there() {
    let g = tokio::task::spawn_blocking(garage).await.unwrap();
    let bucket = g.new_bucket("migrate-e2e");
    wait_for_bucket(&bucket).await;
    let files = AuthFiles::create();
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    let config = format!("{}{}", files.config(""), config_for(&closed, "5m", ""));

    // A single node with an image (one layer larger than a multipart part) and an index.
    let mut single = Berth::start(&config);
    let image = images::image(Flavor::Oci, 70, &[12 * MIB, MIB], "amd64");
    let index = images::multi_arch(Flavor::Oci, 71, &[MIB]);
    for (img, target) in [(&image, "team/app:1"), (&index, "team/multi:1")] {
        let pushed = skopeo_push(&single, img, target, "alice");
        assert!(pushed.status.success(), "push {target}: {}", text(&pushed));
    }

    // Not while it runs: the index is the node's.
    let shared = format!("{config}\n{}", g.berth_config(0, &bucket));
    let refused = migrate(&shared, &single.data_dir);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("stop it first"),
        "{}",
        text(&refused)
    );

    single.stop();
    let moved = migrate(&shared, &single.data_dir);
    assert!(moved.status.success(), "{}", text(&moved));
    eprintln!("{}", text(&moved));
    // image: config + 2 layers + manifest; index: 2 × (config + layer + manifest) + index.
    assert_eq!(count(&moved, "blobs copied: "), 11, "{}", text(&moved));
    assert_eq!(count(&moved, "blobs corrupt or missing, not copied: "), 0);
    assert_eq!(count(&moved, "records left out: "), 0);

    // Run again (as after an interruption): everything is there, nothing is sent.
    let again = migrate(&shared, &single.data_dir);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(count(&again, "blobs copied: "), 0, "{}", text(&again));
    assert_eq!(count(&again, "blobs already in the store: "), 11);

    // A node over the bucket, with nothing of its own, serves both byte for byte.
    let node = Berth::start(&shared);
    for (img, target) in [(&image, "team/app:1"), (&index, "team/multi:1")] {
        let raw = common::skopeo_inspect_raw(&node, target, Some(&creds("bob")));
        assert!(raw.status.success(), "{target}: {}", text(&raw));
        assert_eq!(sha256(&raw.stdout), img.manifest.digest, "{target}");
        let dest = tempfile::tempdir().unwrap();
        let pulled = skopeo(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-creds",
            &creds("bob"),
            &format!("docker://{}/{target}", node.addr),
            &format!("dir:{}", dest.path().display()),
        ]);
        assert!(
            pulled.status.success(),
            "{target}: {}\n{}",
            text(&pulled),
            node.log()
        );
        common::assert_dir_matches(dest.path(), img);
    }
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        "--creds",
        &creds("bob"),
        &format!("docker://{}/team/app", node.addr),
    ]);
    assert!(
        String::from_utf8_lossy(&tags.stdout).contains("\"1\""),
        "{}",
        text(&tags)
    );
}

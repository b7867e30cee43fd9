//! The cache under load and without upstream: coalesced manifest requests, offline mode,
//! the staleness limit, and recovery from a crash in the middle of a fill.

mod common;

use std::time::Duration;

use common::fault::{FaultyUpstream, Mode};
use common::images::{random_bytes, sha256, OCI_INDEX, OCI_MANIFEST};
use common::{config_for, Berth};

fn manifest_body(layer: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 1}],
    }))
    .unwrap()
}

async fn get_all(url: &str, n: usize) -> Vec<(u16, String)> {
    let client = reqwest::Client::new();
    let requests = (0..n).map(|_| {
        let (client, url) = (client.clone(), url.to_owned());
        tokio::spawn(async move {
            let response = client.get(&url).send().await.unwrap();
            let status = response.status().as_u16();
            let digest = response
                .headers()
                .get("docker-content-digest")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, digest)
        })
    });
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn concurrent_manifest_requests_make_one_upstream_call() {
    let upstream = FaultyUpstream::start();
    let digest = upstream.put_manifest("latest", OCI_MANIFEST, &manifest_body("sha256:a"));
    upstream.set_mode(Mode::Slow(Duration::from_millis(800)));
    let berth = Berth::start(&config_for(&upstream.url(), "1s", ""));
    let url = format!("{}/v2/library/app/manifests/latest", berth.url);

    // Cold: 16 clients, one GET upstream.
    let answers = get_all(&url, 16).await;
    assert!(
        answers.iter().all(|a| *a == (200, digest.clone())),
        "{answers:?}"
    );
    assert_eq!(FaultyUpstream::count(&upstream.manifest_gets), 1);

    // Expired: 16 clients, one HEAD upstream, no GET.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answers = get_all(&url, 16).await;
    assert!(
        answers.iter().all(|a| *a == (200, digest.clone())),
        "{answers:?}"
    );
    assert_eq!(FaultyUpstream::count(&upstream.manifest_heads), 1);
    assert_eq!(FaultyUpstream::count(&upstream.manifest_gets), 1);
    assert!(berth.metric("berth_manifest_coalesced_total").await >= 15);
}

#[tokio::test]
async fn clients_that_take_fewer_manifest_types_are_served_from_the_tag_cache_too() {
    let upstream = FaultyUpstream::start();
    let image = upstream.put_manifest("v1", OCI_MANIFEST, &manifest_body("sha256:a"));
    let index_body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
    }))
    .unwrap();
    upstream.put_manifest("multi", OCI_INDEX, &index_body);
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let client = reqwest::Client::new();
    let get = |tag: &str, accept: &str| {
        let request = client
            .get(format!("{}/v2/library/app/manifests/{tag}", berth.url))
            .header("Accept", accept);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["Docker-Content-Digest"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let gets = || FaultyUpstream::count(&upstream.manifest_gets);

    // An image manifest: a client that only takes image manifests is asked for once, then
    // served from the cache, and so is everyone else.
    assert_eq!(get("v1", OCI_MANIFEST).await, image);
    assert_eq!(gets(), 1);
    assert_eq!(get("v1", OCI_MANIFEST).await, image);
    assert_eq!(
        get("v1", &format!("{OCI_MANIFEST}, {OCI_INDEX}")).await,
        image
    );
    assert_eq!(gets(), 1);

    // An index: it is the tag's answer and is remembered, but upstream picks for a client that
    // does not take indexes (one GET each time; none for clients that do take them).
    get("multi", OCI_MANIFEST).await;
    assert_eq!(
        gets(),
        3,
        "the tag's answer, then upstream's pick for this client"
    );
    get("multi", OCI_MANIFEST).await;
    assert_eq!(gets(), 4);
    get("multi", &format!("{OCI_MANIFEST}, {OCI_INDEX}")).await;
    assert_eq!(gets(), 4);
}

#[tokio::test]
async fn offline_serves_the_cache_and_never_calls_upstream() {
    let upstream = FaultyUpstream::start();
    let layer = random_bytes(5, 300_000);
    let layer_digest = upstream.put_blob(&layer);
    let digest = upstream.put_manifest("v1", OCI_MANIFEST, &manifest_body(&layer_digest));
    upstream.put_manifest("v2", OCI_MANIFEST, &manifest_body("sha256:b"));

    // Seed the cache online, with a TTL that has long expired by the time we go offline.
    let dir = {
        let mut berth = Berth::start(&config_for(&upstream.url(), "1ms", ""));
        let client = reqwest::Client::new();
        let m = client
            .get(format!("{}/v2/library/app/manifests/v1", berth.url))
            .send()
            .await
            .unwrap();
        assert_eq!(m.status(), 200);
        let b = client
            .get(format!("{}/v2/library/app/blobs/{layer_digest}", berth.url))
            .send()
            .await
            .unwrap();
        assert_eq!(b.bytes().await.unwrap(), layer);
        berth.settle();
        berth.kill();
        berth.into_data_dir()
    };
    let calls = |u: &FaultyUpstream| {
        FaultyUpstream::count(&u.manifest_gets)
            + FaultyUpstream::count(&u.manifest_heads)
            + FaultyUpstream::count(&u.blob_gets)
    };
    let before = calls(&upstream);

    for offline_config in ["[mirror]\noffline = true\n", "offline = true\n"] {
        // The second form sets `offline` on the upstream itself (it follows [[upstreams]]).
        let berth = Berth::start_in(&config_for(&upstream.url(), "1ms", offline_config), &dir);
        let client = reqwest::Client::new();
        let m = client
            .get(format!("{}/v2/library/app/manifests/v1", berth.url))
            .send()
            .await
            .unwrap();
        assert_eq!(m.status(), 200, "{offline_config}");
        assert_eq!(
            m.headers()["docker-content-digest"].to_str().unwrap(),
            digest
        );
        let b = client
            .get(format!("{}/v2/library/app/blobs/{layer_digest}", berth.url))
            .send()
            .await
            .unwrap();
        assert_eq!(b.bytes().await.unwrap(), layer);
        let tags: serde_json::Value = serde_json::from_slice(
            &common::get_bytes(&client, &format!("{}/v2/library/app/tags/list", berth.url)).await,
        )
        .unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["v1"]));

        // What is not cached is unknown, quickly and clearly.
        let missing = client
            .get(format!("{}/v2/library/app/manifests/v2", berth.url))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        let body: serde_json::Value =
            serde_json::from_slice(&missing.bytes().await.unwrap()).unwrap();
        assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("offline"),
            "{body}"
        );
        let missing = client
            .get(format!(
                "{}/v2/library/app/blobs/{}",
                berth.url,
                sha256(b"other")
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(berth.metric("berth_upstream_blob_gets_total").await, 0);
    }
    assert_eq!(calls(&upstream), before, "offline berth contacted upstream");
}

#[tokio::test]
async fn stale_tags_are_served_only_up_to_max_stale() {
    let upstream = FaultyUpstream::start();
    upstream.put_manifest("latest", OCI_MANIFEST, &manifest_body("sha256:a"));
    let berth = Berth::start(&config_for(
        &upstream.url(),
        "100ms",
        "max_stale = \"1s\"\n",
    ));
    let url = format!("{}/v2/library/app/manifests/latest", berth.url);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    upstream.set_mode(Mode::Status(503));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stale = reqwest::get(&url).await.unwrap();
    assert_eq!(stale.status(), 200);
    assert!(stale.headers().contains_key("warning"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let too_old = reqwest::get(&url).await.unwrap();
    assert_eq!(too_old.status(), 503);
}

#[tokio::test]
async fn a_crash_mid_fill_leaves_nothing_servable_and_recovers() {
    let upstream = FaultyUpstream::start();
    let blob = random_bytes(9, 4 * 1024 * 1024);
    let digest = upstream.put_blob(&blob);
    upstream.set_mode(Mode::Slow(Duration::from_millis(20)));
    let mut berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);

    // Start a slow fill, then SIGKILL berth halfway through it.
    let client = reqwest::Client::new();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(berth.temp_files() > 0, "no fill in progress");
    berth.kill();
    drop(response);
    // Plant the other leftovers of a crash: a file whose content does not match its name.
    let bogus = sha256(b"bogus");
    let bogus_path = berth
        .data_dir
        .join(format!("blobs/sha256/{}/{}", &bogus[7..9], &bogus[7..]));
    std::fs::create_dir_all(bogus_path.parent().unwrap()).unwrap();
    std::fs::write(&bogus_path, b"not what the name says").unwrap();

    upstream.set_mode(Mode::Normal);
    berth.restart();
    let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);
    // Partial temp files go before berth serves; the rest is reconciled in the background.
    assert_eq!(berth.temp_files(), 0, "tmp/ was not swept");
    // Unindexed, the corrupt file is never served, whether reconciliation got to it or not.
    let bogus_get = reqwest::get(format!("{}/v2/library/x/blobs/{bogus}", berth.url))
        .await
        .unwrap();
    assert_eq!(bogus_get.status(), 404);
    let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&body), digest);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bogus_path.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !bogus_path.exists(),
        "background reconciliation left a corrupt blob file"
    );
}

/// After a crash, an index entry whose file is gone or cut short is met on the request path
/// (before background reconciliation may get to it): a miss, fetched again, never a short or
/// failed body. After a clean stop the index is trusted and served at once.
#[tokio::test]
async fn after_a_crash_a_lost_or_cut_blob_is_fetched_again() {
    let upstream = FaultyUpstream::start();
    let blobs: Vec<Vec<u8>> = (0..2).map(|i| random_bytes(40 + i, 256 * 1024)).collect();
    let digests: Vec<String> = blobs.iter().map(|b| upstream.put_blob(b)).collect();
    let mut berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let client = reqwest::Client::new();
    for digest in &digests {
        let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);
        common::get_bytes(&client, &url).await;
    }
    berth.settle();
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 2);
    berth.kill();
    let data_dir = berth.data_dir.clone();
    let path = |d: &str| data_dir.join(format!("blobs/sha256/{}/{}", &d[7..9], &d[7..]));
    std::fs::remove_file(path(&digests[0])).unwrap();
    std::fs::write(path(&digests[1]), &blobs[1][..1000]).unwrap();
    berth.restart();
    for (digest, blob) in digests.iter().zip(&blobs) {
        let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);
        assert_eq!(common::get_bytes(&client, &url).await, *blob);
    }
    assert_eq!(
        FaultyUpstream::count(&upstream.blob_gets),
        4,
        "each broken blob is fetched once again"
    );
    berth.settle();
    assert_eq!(std::fs::read(path(&digests[1])).unwrap(), blobs[1]);

    // A graceful stop leaves the mark (once reconciliation is done); the next start trusts
    // the index and takes the mark away, and a file lost even then is still only a miss.
    let mark = berth.data_dir.join("clean-shutdown");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !berth.log().contains("storage reconciled") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    berth.stop();
    assert!(mark.exists(), "a graceful stop left no clean-shutdown mark");
    std::fs::remove_file(path(&digests[0])).unwrap();
    berth.relaunch();
    assert!(!mark.exists(), "the mark outlived the start");
    let url = format!("{}/v2/library/x/blobs/{}", berth.url, digests[0]);
    assert_eq!(common::get_bytes(&client, &url).await, blobs[0]);
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 5);
}

#[tokio::test]
async fn eviction_keeps_the_disk_under_max_size_least_recently_used_first() {
    const MIB: usize = 1024 * 1024;
    let upstream = FaultyUpstream::start();
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(100 + i, 2 * MIB)).collect();
    let digests: Vec<String> = blobs.iter().map(|b| upstream.put_blob(b)).collect();
    let berth = Berth::start(&format!(
        "[storage]\nmax_size = \"6MiB\"\nlow_water_percent = 70\n{}",
        config_for(&upstream.url(), "5m", "")
    ));
    let client = reqwest::Client::new();
    let get = |i: usize| {
        let url = format!("{}/v2/library/x/blobs/{}", berth.url, digests[i]);
        let client = client.clone();
        async move { common::get_bytes(&client, &url).await }
    };
    for (i, blob) in blobs.iter().enumerate().take(3) {
        assert_eq!(get(i).await, *blob);
    }
    berth.settle();
    assert_eq!(berth.blob_files().len(), 3, "6 MiB fit the budget");
    // Use blob 0 again, so 1 and 2 are now the least recently used.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(0).await, blobs[0]);
    assert_eq!(get(3).await, blobs[3]);

    // Eviction runs in the background: wait for it to reach the low-water mark (4.2 MiB).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let on_disk = loop {
        let files = berth.blob_files();
        let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
        if bytes * 10 <= 42 * MIB as u64 || std::time::Instant::now() > deadline {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kept: Vec<bool> = digests
        .iter()
        .map(|d| on_disk.iter().any(|f| f.ends_with(&d[7..])))
        .collect();
    assert_eq!(kept, [true, false, false, true], "evicted the wrong blobs");
    // The counter moves just after each file goes: wait for it before checking it.
    berth.wait_for_metric("berth_evictions_total", 2).await;
    assert_eq!(berth.metric("berth_evictions_total").await, 2);
    // An evicted blob is fetched again on demand.
    let before = FaultyUpstream::count(&upstream.blob_gets);
    assert_eq!(get(1).await, blobs[1]);
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), before + 1);
}

#[tokio::test]
async fn cache_gc_removes_unreferenced_blobs_only() {
    let upstream = FaultyUpstream::start();
    let layer = random_bytes(11, 100_000);
    let layer_digest = upstream.put_blob(&layer);
    let orphan = random_bytes(12, 50_000);
    let orphan_digest = upstream.put_blob(&orphan);
    upstream.put_blob(b"{}");
    upstream.put_manifest("v1", OCI_MANIFEST, &manifest_body(&layer_digest));
    let mut berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let client = reqwest::Client::new();
    for path in [
        "manifests/v1".to_owned(),
        format!("blobs/{layer_digest}"),
        format!("blobs/{}", sha256(b"{}")),
        format!("blobs/{orphan_digest}"),
    ] {
        let response = client
            .get(format!("{}/v2/library/app/{path}", berth.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.bytes().await.unwrap();
    }
    berth.settle();
    berth.kill();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--data-dir")
        .arg(&berth.data_dir)
        .args(["cache", "gc"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("blobs removed: 1\n"), "{report}");
    assert!(report.contains("manifests: 1\n"), "{report}");

    // What the manifest needs is still served without upstream; the orphan is gone.
    let dir = berth.into_data_dir();
    let berth = Berth::start_in(&config_for(&upstream.url(), "5m", "offline = true\n"), &dir);
    for (path, status) in [
        ("manifests/v1".to_owned(), 200),
        (format!("blobs/{layer_digest}"), 200),
        (format!("blobs/{orphan_digest}"), 404),
    ] {
        let response = client
            .get(format!("{}/v2/library/app/{path}", berth.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
}

/// A mounted tmpfs of a fixed size, unmounted on drop (the tests run as root, as CI does).
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        SmallDisk { path, _dir: dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_fill_cleanly_and_the_cache_stays_usable() {
    let upstream = FaultyUpstream::start();
    let big = random_bytes(21, 24 * 1024 * 1024);
    let big_digest = upstream.put_blob(&big);
    let small = random_bytes(22, 64 * 1024);
    let small_digest = upstream.put_blob(&small);
    let disk = SmallDisk::mount("12m");
    let berth = Berth::start_in(
        &config_for(&upstream.url(), "5m", ""),
        &disk.path.join("data"),
    );
    let client = reqwest::Client::new();

    let response = client
        .get(format!("{}/v2/library/x/blobs/{big_digest}", berth.url))
        .send()
        .await
        .unwrap();
    let outcome = match response.status().as_u16() {
        200 => response.bytes().await.map(|b| b.len()),
        status => Ok(status as usize),
    };
    assert!(
        !matches!(outcome, Ok(len) if len == big.len()),
        "a blob larger than the disk was served complete"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(berth.blob_files().is_empty(), "a partial blob was kept");
    assert_eq!(
        berth.temp_files(),
        0,
        "the temp file of the failed fill was left"
    );
    assert_eq!(berth.metric("berth_blob_fills_failed_total").await, 1);
    assert!(
        berth.log().contains("No space left on device"),
        "{}",
        berth.log()
    );

    // Space is back; the cache works and the big blob is simply unknown to it.
    let got = common::get_bytes(
        &client,
        &format!("{}/v2/library/x/blobs/{small_digest}", berth.url),
    )
    .await;
    assert_eq!(got, small);
    berth.settle();
    assert_eq!(berth.blob_files().len(), 1);
}

#[tokio::test]
async fn memory_stays_bounded_while_streaming_big_blobs_to_many_clients() {
    let upstream = FaultyUpstream::start();
    let blob = random_bytes(31, 64 * 1024 * 1024);
    let digest = upstream.put_blob(&blob);
    drop(blob);
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let baseline = berth.rss_anon_kib();
    let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);
    let client = reqwest::Client::new();
    let sampling = {
        let pid = berth.pid();
        tokio::spawn(async move {
            let mut peak = 0u64;
            for _ in 0..600 {
                let anon = common::rss_anon_kib(pid);
                peak = peak.max(anon);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    // 6 clients cold (one fill, read along), then 6 warm (memory-mapped).
    for _round in 0..2 {
        let downloads = (0..6).map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                use sha2::Digest as _;
                let mut response = client.get(&url).send().await.unwrap();
                let mut hasher = sha2::Sha256::new();
                while let Some(chunk) = response.chunk().await.unwrap() {
                    hasher.update(&chunk);
                }
                format!("sha256:{}", hex::encode(hasher.finalize()))
            })
        });
        for got in futures_util::future::join_all(downloads).await {
            assert_eq!(got.unwrap(), digest);
        }
    }
    sampling.abort();
    let peak = berth.rss_anon_kib().max(baseline);
    let sampled = sampling.await.unwrap_or(peak);
    let peak = sampled.max(peak);
    // 12 transfers of 64 MiB; the heap may hold a few buffers, never a blob.
    assert!(
        peak < baseline + 40 * 1024,
        "anonymous memory peaked at {peak} KiB (baseline {baseline} KiB)"
    );
}

#[tokio::test]
async fn a_manifest_get_prefetches_the_images_blobs_and_a_head_does_not() {
    let upstream = FaultyUpstream::start();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layers = [random_bytes(71, 300_000), random_bytes(72, 200_000)];
    let blob = |media_type: &str, data: &[u8]| serde_json::json!({"mediaType": media_type, "digest": upstream.put_blob(data), "size": data.len()});
    let layer_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    // A foreign layer is fetched from its own URL, never from the registry.
    let foreign = serde_json::json!({
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": sha256(b"elsewhere"), "size": 9, "urls": ["https://example.invalid/layer"],
    });
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": blob("application/vnd.oci.image.config.v1+json", config),
        "layers": [blob(layer_type, &layers[0]), foreign, blob(layer_type, &layers[1])],
    }))
    .unwrap();
    let digest = upstream.put_manifest("v1", OCI_MANIFEST, &body);
    let berth = Berth::start(&config_for(&upstream.url(), "1h", ""));
    let client = reqwest::Client::new();
    let manifest_url = format!("{}/v2/library/app/manifests/v1", berth.url);

    // A HEAD (a tag check) fetches nothing.
    let head = client.head(&manifest_url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 0);

    // A GET fetches the config and both layers, each once, with no client asking for them.
    let got = client.get(&manifest_url).send().await.unwrap();
    assert_eq!(got.headers()["docker-content-digest"], digest.as_str());
    berth
        .wait_for_metric("berth_prefetched_blobs_total", 3)
        .await;
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 3);
    assert_eq!(berth.metric("berth_prefetch_failures_total").await, 0);

    // They are in the cache: served with upstream failing, and no further upstream GET.
    upstream.set_mode(Mode::Status(503));
    for data in [&config[..], &layers[0], &layers[1]] {
        let url = format!("{}/v2/library/app/blobs/{}", berth.url, sha256(data));
        assert_eq!(common::get_bytes(&client, &url).await, data);
    }
    // Fetched recently: another GET of the manifest walks nothing again.
    client.get(&manifest_url).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 3);
    assert_eq!(berth.metric("berth_prefetched_blobs_total").await, 3);
}

#[tokio::test]
async fn a_client_pulling_layers_one_by_one_joins_the_prefetch() {
    let upstream = FaultyUpstream::start();
    let layers: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(80 + i, 256 * 1024)).collect();
    let entries: Vec<_> = layers
        .iter()
        .map(|data| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": upstream.put_blob(data), "size": data.len()}))
        .collect();
    let config = upstream.put_blob(b"{}");
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": entries,
    }))
    .unwrap();
    upstream.put_manifest("v1", OCI_MANIFEST, &body);
    // Slow enough that the prefetch is still streaming layers when the client asks for them.
    upstream.set_mode(Mode::Slow(Duration::from_millis(40)));
    let berth = Berth::start(&config_for(&upstream.url(), "1h", ""));
    let client = reqwest::Client::new();
    client
        .get(format!("{}/v2/library/app/manifests/v1", berth.url))
        .send()
        .await
        .unwrap();
    for data in &layers {
        let url = format!("{}/v2/library/app/blobs/{}", berth.url, sha256(data));
        assert_eq!(common::get_bytes(&client, &url).await, data.as_slice());
    }
    berth
        .wait_for_metric("berth_prefetched_blobs_total", 4)
        .await;
    // Every blob came from upstream once, whether the client or the prefetch asked first.
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 4);
    assert!(berth.metric("berth_blob_coalesced_total").await >= 1);
}

#[tokio::test]
async fn prefetch_can_be_turned_off() {
    let upstream = FaultyUpstream::start();
    let layer = upstream.put_blob(b"layer");
    upstream.put_manifest("v1", OCI_MANIFEST, &manifest_body(&layer));
    let berth = Berth::start(&config_for(
        &upstream.url(),
        "1h",
        "[mirror]\nprefetch = false\n",
    ));
    let url = format!("{}/v2/library/app/manifests/v1", berth.url);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 0);
}

/// An index written before digest buckets (three sled entries per blob) is served at once on
/// the first start after the upgrade, upstream down; it moves into buckets in the background,
/// and the next start serves from them, never fetching again.
#[tokio::test]
async fn an_index_from_before_buckets_is_served_at_once_and_moved_in_the_background() {
    let upstream = FaultyUpstream::start();
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(70 + i, 64 * 1024)).collect();
    let digests: Vec<String> = blobs.iter().map(|b| upstream.put_blob(b)).collect();
    let mut berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let client = reqwest::Client::new();
    let get_all = |berth: &Berth| {
        let urls: Vec<String> = digests
            .iter()
            .map(|d| format!("{}/v2/library/x/blobs/{d}", berth.url))
            .collect();
        let client = client.clone();
        async move {
            let mut bodies = Vec::new();
            for url in urls {
                bodies.push(common::get_bytes(&client, &url).await);
            }
            bodies
        }
    };
    assert_eq!(get_all(&berth).await, blobs);
    berth.settle();
    berth.stop();

    // The same content, indexed as berth wrote it before: `blobs` (JSON records), `access`
    // (stamps and the totals), `links`.
    let index_dir = berth.data_dir.join("index");
    std::fs::remove_dir_all(&index_dir).unwrap();
    {
        let db = sled::open(&index_dir).unwrap();
        let tree = |name: &str| db.open_tree(name).unwrap();
        let (records, access, links) = (tree("blobs"), tree("access"), tree("links"));
        let mut bytes = 0u64;
        for (n, (digest, blob)) in digests.iter().zip(&blobs).enumerate() {
            let stamp = 1_700_000_000_000u64 + n as u64;
            let record = format!(r#"{{"size":{},"last_access_ms":{stamp}}}"#, blob.len());
            records
                .insert(digest.as_bytes(), record.as_bytes())
                .unwrap();
            let mut key = stamp.to_be_bytes().to_vec();
            key.extend_from_slice(digest.as_bytes());
            access.insert(key, &[] as &[u8]).unwrap();
            let link = format!("docker.io/library/x@{digest}");
            links.insert(link.as_bytes(), &[] as &[u8]).unwrap();
            bytes += blob.len() as u64;
        }
        let mut totals = (digests.len() as u64).to_be_bytes().to_vec();
        totals.extend_from_slice(&bytes.to_be_bytes());
        access
            .insert(b"\xff\xff\xff\xff\xff\xff\xff\xfftotals", totals)
            .unwrap();
        db.flush().unwrap();
    }
    upstream.set_mode(Mode::Status(503));
    berth.relaunch();
    assert_eq!(get_all(&berth).await, blobs, "served from the old layout");
    let moved = "index moved to its compact layout";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !berth.log().contains(moved) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(berth.log().contains(moved), "never moved:\n{}", berth.log());
    berth.stop();
    berth.relaunch();
    assert_eq!(get_all(&berth).await, blobs, "served from buckets");
    assert_eq!(berth.log().matches(moved).count(), 1, "moved once only");
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 3);
}

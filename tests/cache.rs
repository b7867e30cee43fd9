//! The cache under load and without upstream: coalesced manifest requests, offline mode,
//! the staleness limit, and recovery from a crash in the middle of a fill.

mod common;

use std::time::Duration;

use common::fault::{FaultyUpstream, Mode};
use common::images::{random_bytes, sha256, OCI_MANIFEST};
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
    upstream.set_mode(Mode::Slow(Duration::from_millis(300)));
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
            &client
                .get(format!("{}/v2/library/app/tags/list", berth.url))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
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
    assert_eq!(berth.temp_files(), 0, "tmp/ was not swept");
    assert!(
        !bogus_path.exists(),
        "a corrupt blob file survived recovery"
    );
    let bogus_get = reqwest::get(format!("{}/v2/library/x/blobs/{bogus}", berth.url))
        .await
        .unwrap();
    assert_eq!(bogus_get.status(), 404);
    let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&body), digest);
}

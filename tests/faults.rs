//! berth against a misbehaving upstream: corrupt and cut-off blobs are never served or kept,
//! upstream errors become the right spec errors, stale tags are served through outages, and
//! concurrent cold requests share one upstream fetch.

mod common;

use std::time::{Duration, Instant};

use common::fault::{FaultyUpstream, Mode};
use common::images::{random_bytes, sha256, OCI_MANIFEST};
use common::{config_for, Berth};

fn manifest_for(config: &str, layer: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 1}],
    }))
    .unwrap()
}

async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    body["errors"][0]["code"].as_str().unwrap().to_owned()
}

/// Reads a whole body; `Err` when the transfer is cut off.
async fn fetch(url: &str) -> Result<(u16, Vec<u8>), reqwest::Error> {
    let response = reqwest::get(url).await?;
    let status = response.status().as_u16();
    Ok((status, response.bytes().await?.to_vec()))
}

#[tokio::test]
async fn corrupt_or_cut_blobs_are_never_served_or_kept() {
    let upstream = FaultyUpstream::start();
    let blob = random_bytes(42, 3 * 1024 * 1024 + 17);
    let digest = upstream.put_blob(&blob);
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);

    let modes = [
        Mode::FlipByte,
        Mode::Truncate(1024 * 1024),
        Mode::Truncate(0),
        Mode::ShortBody(blob.len() - 1),
        Mode::LongBody(1),
        Mode::LongBody(100_000),
    ];
    for mode in modes.clone() {
        upstream.set_mode(mode.clone());
        match fetch(&url).await {
            Err(_) => {}
            Ok((status, body)) => {
                assert_ne!(body, blob, "{mode:?}: full body served");
                assert!(
                    status != 200 || body.len() < blob.len(),
                    "{mode:?}: complete-looking body {status} of {} bytes",
                    body.len()
                );
            }
        }
        // Give the fill task a moment to clean up, then check nothing was kept.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            berth.blob_files().is_empty(),
            "{mode:?}: a blob file was kept"
        );
        assert_eq!(berth.temp_files(), 0, "{mode:?}: a temp file was left");
    }
    assert_eq!(
        berth.metric("berth_blob_fills_failed_total").await,
        modes.len() as u64
    );

    // The next request retries cleanly, and then it is cached.
    upstream.set_mode(Mode::Normal);
    let before = FaultyUpstream::count(&upstream.blob_gets);
    let (status, body) = fetch(&url).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), digest);
    let (_, again) = fetch(&url).await.unwrap();
    assert_eq!(again, blob);
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets) - before, 1);
    berth.settle();
    assert_eq!(berth.blob_files().len(), 1);
}

#[tokio::test]
async fn upstream_errors_become_spec_errors() {
    let upstream = FaultyUpstream::start();
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let manifest_url = format!("{}/v2/library/x/manifests/latest", berth.url);
    let blob_url = format!("{}/v2/library/x/blobs/{}", berth.url, sha256(b"absent"));

    let response = reqwest::get(&manifest_url).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "MANIFEST_UNKNOWN");
    let response = reqwest::get(&blob_url).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "BLOB_UNKNOWN");

    // Upstream's 404s are remembered for a while: the failures below are for other names.
    let manifest_url = format!("{}/v2/library/x/manifests/other", berth.url);
    let blob_url = format!("{}/v2/library/x/blobs/{}", berth.url, sha256(b"other"));
    upstream.set_mode(Mode::Status(429));
    let response = reqwest::get(&manifest_url).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(error_code(response).await, "TOOMANYREQUESTS");

    for status in [500, 502, 503] {
        upstream.set_mode(Mode::Status(status));
        let response = reqwest::get(&blob_url).await.unwrap();
        assert_eq!(response.status(), 503, "upstream {status}");
        assert_eq!(error_code(response).await, "UNAVAILABLE");
    }
    assert!(berth.blob_files().is_empty());
}

#[tokio::test]
async fn unreachable_upstream_fails_fast_and_clearly() {
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    let berth = Berth::start(&config_for(&closed, "5m", ""));
    let started = Instant::now();
    let response = reqwest::get(format!("{}/v2/library/x/manifests/latest", berth.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn tags_revalidate_after_ttl_and_survive_outages() {
    let upstream = FaultyUpstream::start();
    let config_digest = upstream.put_blob(b"{}");
    let v1 = manifest_for(&config_digest, &sha256(b"a"));
    let v1_digest = upstream.put_manifest("latest", OCI_MANIFEST, &v1);
    let berth = Berth::start(&config_for(&upstream.url(), "1s", ""));
    let client = reqwest::Client::new();
    let url = format!("{}/v2/library/app/manifests/latest", berth.url);
    let digest_of = |r: &reqwest::Response| {
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    let first = client.get(&url).send().await.unwrap();
    assert_eq!(digest_of(&first), v1_digest);
    assert_eq!(FaultyUpstream::count(&upstream.manifest_gets), 1);

    // Within the TTL: no upstream traffic at all, even though upstream moved the tag.
    let v2 = manifest_for(&config_digest, &sha256(b"b"));
    let v2_digest = upstream.put_manifest("latest", OCI_MANIFEST, &v2);
    let cached = client.get(&url).send().await.unwrap();
    assert_eq!(digest_of(&cached), v1_digest);
    assert_eq!(FaultyUpstream::count(&upstream.manifest_gets), 1);
    assert_eq!(FaultyUpstream::count(&upstream.manifest_heads), 0);

    // After it: a HEAD sees the new digest and the new manifest is fetched.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let moved = client.get(&url).send().await.unwrap();
    assert_eq!(digest_of(&moved), v2_digest);
    assert_eq!(moved.bytes().await.unwrap(), v2);
    assert_eq!(FaultyUpstream::count(&upstream.manifest_heads), 1);
    assert_eq!(FaultyUpstream::count(&upstream.manifest_gets), 2);

    // Unchanged upstream: revalidation costs one HEAD and no GET.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let same = client.get(&url).send().await.unwrap();
    assert_eq!(digest_of(&same), v2_digest);
    assert_eq!(FaultyUpstream::count(&upstream.manifest_heads), 2);
    assert_eq!(FaultyUpstream::count(&upstream.manifest_gets), 2);

    // Upstream down: the stale tag is served, marked, and counted.
    for status in [503, 429] {
        upstream.set_mode(Mode::Status(status));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let stale = client.get(&url).send().await.unwrap();
        assert_eq!(stale.status(), 200, "upstream {status}");
        assert_eq!(digest_of(&stale), v2_digest);
        assert!(stale.headers()["warning"]
            .to_str()
            .unwrap()
            .starts_with("110"));
    }
    assert_eq!(berth.metric("berth_stale_serves_total").await, 2);

    // By digest, a cached manifest never needs upstream.
    let by_digest = client
        .get(format!(
            "{}/v2/library/app/manifests/{v1_digest}",
            berth.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(by_digest.status(), 200);
    assert_eq!(by_digest.bytes().await.unwrap(), v1);
}

#[tokio::test]
async fn concurrent_cold_requests_share_one_upstream_fetch() {
    let upstream = FaultyUpstream::start();
    let blob = random_bytes(7, 2 * 1024 * 1024);
    let digest = upstream.put_blob(&blob);
    upstream.set_mode(Mode::Slow(Duration::from_millis(5)));
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);
    let client = reqwest::Client::new();
    let requests = (0..16).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move { common::get_bytes(&client, &url).await })
    });
    let bodies = futures_util::future::join_all(requests).await;
    for body in bodies {
        assert_eq!(sha256(&body.unwrap()), digest);
    }
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 1);
    // Clients get the verified bytes before the fill commits and counts them as upstream's.
    berth.settle();
    let joined = berth.metric("berth_blob_coalesced_total").await;
    let hits = berth.metric("berth_blob_cache_hits_total").await;
    assert_eq!(joined + hits, 15, "joined {joined}, hits {hits}");
    assert!(joined > 0, "no request joined the fill in flight");
    assert_eq!(
        berth.metric("berth_blob_bytes_served_total").await,
        16 * blob.len() as u64,
        "every byte sent to every client is counted once"
    );
    assert_eq!(
        berth.metric("berth_upstream_bytes_total").await,
        blob.len() as u64
    );
}

#[tokio::test]
async fn tag_list_pagination_links_point_back_at_berth() {
    let upstream = FaultyUpstream::start();
    for tag in ["a", "b", "c", "d", "e"] {
        upstream.put_manifest(tag, OCI_MANIFEST, tag.as_bytes());
    }
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let client = reqwest::Client::new();
    let mut next = Some("/v2/app/tags/list?n=2".to_owned());
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(path) = next.take() {
        let page = client
            .get(format!("{}{path}", berth.url))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        next = page.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            // The client's own name, not upstream's `library/app`.
            assert!(link.starts_with("</v2/app/tags/list?"), "{link}");
            link.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_owned()
        });
        let body: serde_json::Value = serde_json::from_slice(&page.bytes().await.unwrap()).unwrap();
        seen.extend(serde_json::from_value::<Vec<String>>(body["tags"].clone()).unwrap());
        pages += 1;
        assert!(pages <= 5, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn a_client_hanging_up_does_not_abort_the_fill() {
    let upstream = FaultyUpstream::start();
    let blob = random_bytes(77, 2 * 1024 * 1024);
    let digest = upstream.put_blob(&blob);
    upstream.set_mode(Mode::Slow(Duration::from_millis(10)));
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);
    let mut response = reqwest::get(&url).await.unwrap();
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    // The fill finishes on its own and is cached: the next request is a hit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while berth.blob_files().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        berth.blob_files().len(),
        1,
        "the fill stopped with its client"
    );
    let (_, body) = fetch(&url).await.unwrap();
    assert_eq!(body, blob);
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 1);
}

#[tokio::test]
async fn a_stalled_upstream_times_out_and_nothing_is_kept() {
    let upstream = FaultyUpstream::start();
    let blob = random_bytes(78, 512 * 1024);
    let digest = upstream.put_blob(&blob);
    upstream.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let config = config_for(&upstream.url(), "5m", "")
        .replace("read_timeout = \"5s\"", "read_timeout = \"500ms\"");
    let berth = Berth::start(&config);
    let started = Instant::now();
    let result = fetch(&format!("{}/v2/library/x/blobs/{digest}", berth.url)).await;
    assert!(
        !matches!(&result, Ok((200, body)) if *body == blob),
        "served despite the stall"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(berth.blob_files().is_empty());
    assert_eq!(berth.temp_files(), 0);
}

/// A ranged GET during a cold fill: a reader withholds only the last byte until the digest is
/// checked, so a range that ends before it must wait for the check. With a byte flipped
/// upstream, the range holding it is refused, never served; nothing is kept.
#[tokio::test]
async fn a_range_of_a_corrupt_cold_blob_is_never_served() {
    let upstream = FaultyUpstream::start();
    let blob = random_bytes(77, 1024 * 1024);
    let digest = upstream.put_blob(&blob);
    upstream.set_mode(Mode::FlipByte);
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);
    // The fault flips the middle byte: ask for a range around it, well before the end.
    let middle = blob.len() / 2;
    let (start, end) = (middle - 1000, middle + 1000);
    let client = reqwest::Client::new();
    let response = client
        .get(&url)
        .header("range", format!("bytes={start}-{end}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await;
    assert_eq!(status, 503, "a corrupt range was answered {status}");
    let flipped = [blob[middle - 1], blob[middle] ^ 0xff, blob[middle + 1]];
    if let Ok(body) = body {
        assert!(
            !body.windows(3).any(|w| w == flipped),
            "the flipped byte was served"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(berth.blob_files().is_empty(), "a corrupt blob was kept");

    // Once upstream behaves, the same range is the blob's own bytes.
    upstream.set_mode(Mode::Normal);
    let response = client
        .get(&url)
        .header("range", format!("bytes={start}-{end}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), blob[start..=end]);
}

/// With a healthy but slow upstream, a ranged GET that starts a cold fill (and one that
/// joins it) waits for the fill's check and then gets exactly the bytes asked for, while a
/// whole-blob GET of the same fill streams along.
#[tokio::test]
async fn a_range_during_a_slow_cold_fill_gets_the_verified_bytes() {
    let upstream = FaultyUpstream::start();
    let blob = random_bytes(78, 1024 * 1024 + 5);
    let digest = upstream.put_blob(&blob);
    // 17 chunks of 64 KiB, 30 ms apart: about half a second for the whole blob.
    upstream.set_mode(Mode::Slow(Duration::from_millis(30)));
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let url = format!("{}/v2/library/x/blobs/{digest}", berth.url);
    let client = reqwest::Client::new();
    let ranged = |range: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let response = client
                .get(&url)
                .header("range", range)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let content_range = response
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, content_range, response.bytes().await.unwrap())
        })
    };
    let first = ranged("bytes=100-65635");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let whole = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { common::get_bytes(&client, &url).await })
    };
    let tail = ranged("bytes=-10");
    let size = blob.len();
    assert_eq!(
        first.await.unwrap(),
        (
            206,
            Some(format!("bytes 100-65635/{size}")),
            bytes::Bytes::copy_from_slice(&blob[100..=65635])
        )
    );
    assert_eq!(
        tail.await.unwrap(),
        (
            206,
            Some(format!("bytes {}-{}/{size}", size - 10, size - 1)),
            bytes::Bytes::copy_from_slice(&blob[size - 10..])
        )
    );
    assert!(whole.await.unwrap() == blob, "the whole body differs");
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 1);
}

/// The real upstream behind the fault proxy: a manifest with a flipped byte or cut short is
/// never served nor kept, and one without `Docker-Content-Digest` is verified all the same.
#[tokio::test]
async fn a_real_upstream_s_bad_manifests_are_caught_through_the_fault_proxy() {
    use common::proxy::{FaultProxy, Mode as ProxyMode};
    let s = common::seeded().await;
    let proxy = FaultProxy::start(&s.upstream.url());
    let berth = Berth::start(&format!(
        "{}\n[mirror]\nprefetch = false\n",
        config_for(&proxy.url(), "5m", "")
    ));
    let digest = &s.oci.manifest.digest;
    let by_tag = format!("{}/v2/library/oci/manifests/1", berth.url);
    let by_digest = format!("{}/v2/library/oci/manifests/{digest}", berth.url);
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let get = |url: String| async move {
        let response = reqwest::Client::new()
            .get(url)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.bytes().await.unwrap_or_default(),
        )
    };
    for mode in [ProxyMode::FlipByte, ProxyMode::Truncate(100)] {
        proxy.set_mode(mode.clone());
        for url in [&by_tag, &by_digest] {
            let (status, body) = get(url.clone()).await;
            assert_eq!(
                status,
                503,
                "{mode:?} {url}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    // Nothing bad was kept: with the header stripped, berth hashes the body itself.
    proxy.set_mode(ProxyMode::StripDigest);
    for url in [&by_tag, &by_digest] {
        let (status, body) = get(url.clone()).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(sha256(&body), *digest);
    }
    let dest = common::try_pull(&berth, "library/oci:1", None)
        .unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
    common::assert_dir_matches(dest.path(), &s.oci);
}

//! Bounded resources and upstream health, against a real berth process: a hung upstream stops
//! costing every request its timeout, upstream 404s are remembered, token requests are bounded,
//! stalled request bodies are dropped, and health checks are answered at the connection limit.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::fault::{FaultyUpstream, Mode};
use common::images::{sha256, OCI_MANIFEST};
use common::{config_for, Berth};

const BREAKER_STATE: &str = "berth_upstream_breaker_state{upstream=\"docker.io\"}";

fn manifest_for(config: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [],
    }))
    .unwrap()
}

async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    body["errors"][0]["code"].as_str().unwrap().to_owned()
}

/// berth's config with `server` lines added to its `[server]` section.
fn with_server(config: String, server: &str) -> String {
    config.replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
}

#[tokio::test]
async fn a_hung_upstream_is_noticed_and_its_recovery_too() {
    let upstream = FaultyUpstream::start();
    let config_digest = upstream.put_blob(b"{}");
    let manifest = manifest_for(&config_digest);
    let digest = upstream.put_manifest("latest", OCI_MANIFEST, &manifest);
    // Upstream answers within 3 s or counts as failed; two failures in a row open the breaker.
    let config = config_for(
        &upstream.url(),
        "1s",
        "breaker_threshold = 2\nbreaker_cooldown = \"3s\"\n[mirror]\nprefetch = false\n",
    )
    .replace("read_timeout = \"5s\"", "read_timeout = \"3s\"");
    let berth = Berth::start(&config);
    let client = reqwest::Client::new();
    let tag_url = format!("{}/v2/library/app/manifests/latest", berth.url);
    let fresh = client.get(&tag_url).send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert!(fresh.headers().get("warning").is_none());

    upstream.set_mode(Mode::Hang);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The tag is due for revalidation: the first requests wait for upstream's timeout (one at
    // a time: concurrent ones would share one revalidation), and are served the cached tag,
    // marked stale.
    for _ in 0..2 {
        let response = client.get(&tag_url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["warning"]
            .to_str()
            .unwrap()
            .starts_with("110"));
    }
    assert_eq!(
        berth.metric(BREAKER_STATE).await,
        1,
        "the breaker did not open"
    );

    // Now nobody waits: the cached tag at once, stale; what is not cached, 503 at once.
    for _ in 0..3 {
        let started = Instant::now();
        let stale = client.get(&tag_url).send().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(stale.status(), 200);
        assert_eq!(stale.headers()["docker-content-digest"], digest.as_str());
        assert!(stale.headers()["warning"]
            .to_str()
            .unwrap()
            .starts_with("110"));
        assert_eq!(stale.bytes().await.unwrap(), manifest);
    }
    let started = Instant::now();
    let uncached = client
        .get(format!("{}/v2/library/app/manifests/other", berth.url))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(uncached.status(), 503);
    assert!(uncached.headers().contains_key("retry-after"));
    assert_eq!(error_code(uncached).await, "UNAVAILABLE");
    let started = Instant::now();
    let blob = client
        .get(format!(
            "{}/v2/library/app/blobs/{}",
            berth.url,
            sha256(b"absent")
        ))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(blob.status(), 503);
    assert!(
        berth
            .metric("berth_upstream_breaker_rejections_total{upstream=\"docker.io\"}")
            .await
            >= 5
    );

    // Upstream recovers: after the cool-down a probe goes through and closes the breaker.
    upstream.set_mode(Mode::Normal);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = client.get(&tag_url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        if response.headers().get("warning").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upstream never counted as up again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(berth.metric(BREAKER_STATE).await, 0);
    let missing = client
        .get(format!("{}/v2/library/app/manifests/other", berth.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "upstream is asked again");
    assert_eq!(
        berth
            .metric("berth_upstream_breaker_trips_total{upstream=\"docker.io\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn upstream_not_found_is_remembered_for_its_ttl() {
    let upstream = FaultyUpstream::start();
    let config = config_for(&upstream.url(), "5m", "not_found_ttl = \"2s\"\n");
    let berth = Berth::start(&config);
    let client = reqwest::Client::new();
    let tag_url = format!("{}/v2/library/app/manifests/nope", berth.url);
    let blob_url = format!("{}/v2/library/app/blobs/{}", berth.url, sha256(b"nope"));
    for _ in 0..5 {
        let response = client.get(&tag_url).send().await.unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(error_code(response).await, "MANIFEST_UNKNOWN");
        let response = client.get(&blob_url).send().await.unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(error_code(response).await, "BLOB_UNKNOWN");
    }
    assert_eq!(FaultyUpstream::count(&upstream.manifest_gets), 1);
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), 1);
    assert_eq!(
        berth
            .metric("berth_upstream_not_found_remembered_total{upstream=\"docker.io\"}")
            .await,
        8
    );

    // Pushed upstream meanwhile: still unknown within the TTL, found after it.
    let manifest = manifest_for(&upstream.put_blob(b"{}"));
    upstream.put_manifest("nope", OCI_MANIFEST, &manifest);
    assert_eq!(client.get(&tag_url).send().await.unwrap().status(), 404);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let found = client.get(&tag_url).send().await.unwrap();
    assert_eq!(found.status(), 200);
    assert_eq!(found.bytes().await.unwrap(), manifest);
}

#[tokio::test]
async fn a_token_request_for_too_many_scopes_is_refused() {
    let upstream = FaultyUpstream::start();
    let berth = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let scopes: Vec<String> = (0..65)
        .map(|i| format!("repository:library/r{i}:pull"))
        .collect();
    let client = reqwest::Client::new();
    let get = |scopes: &[String]| {
        let mut request = client.get(format!("{}/token", berth.url));
        for scope in scopes {
            request = request.query(&[("scope", scope)]);
        }
        request.send()
    };
    let within = get(&scopes[..64]).await.unwrap();
    assert_eq!(within.status(), 200);

    let refused = get(&scopes).await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 64 scopes"),
        "{body}"
    );

    // The OAuth2 form, scopes separated by spaces.
    let refused = client
        .post(format!("{}/token", berth.url))
        .form(&[
            ("grant_type", "password"),
            ("username", "someone"),
            ("password", "x"),
            ("scope", &scopes.join(" ")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(error_code(refused).await, "DENIED");

    // A bearer token too long to be berth's is refused as such, not verified.
    let long = "x".repeat(70 * 1024);
    let response = client
        .get(format!("{}/v2/library/r0/tags/list", berth.url))
        .bearer_auth(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// Opens a connection that sends a `POST /token` with a body it announces and never sends.
fn stalled_post(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(
            b"POST /token HTTP/1.1\r\nHost: berth\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=pa",
        )
        .unwrap();
    stream
}

/// Whether the server closes `stream` within `limit` (it may answer first).
fn closed_within(mut stream: &TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(10)),
            ))
            .unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            // Reset: closed as well.
            Err(_) => return true,
        }
    }
    false
}

#[tokio::test]
async fn stalled_request_bodies_are_dropped_after_read_timeout() {
    let upstream = FaultyUpstream::start();
    let config = with_server(
        config_for(&upstream.url(), "5m", ""),
        "read_timeout = \"1s\"",
    );
    let berth = Berth::start(&config);
    let addr = berth.addr.clone();
    let closed = tokio::task::spawn_blocking(move || {
        let streams: Vec<TcpStream> = (0..20).map(|_| stalled_post(&addr)).collect();
        streams
            .iter()
            .filter(|s| closed_within(s, Duration::from_secs(10)))
            .count()
    })
    .await
    .unwrap();
    assert_eq!(closed, 20, "stalled connections were kept open");
    // berth still serves.
    let health = reqwest::get(format!("{}/healthz", berth.url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn health_is_answered_at_the_connection_limit() {
    let upstream = FaultyUpstream::start();
    let health_port = common::upstream::free_port();
    let config = with_server(
        config_for(&upstream.url(), "5m", ""),
        &format!(
            "workers = 1\nmax_connections = 4\nread_timeout = \"3s\"\nhealth_listen = \"127.0.0.1:{health_port}\""
        ),
    );
    let berth = Berth::start(&config);
    let addr = berth.addr.clone();
    let held: Vec<TcpStream> =
        tokio::task::spawn_blocking(move || (0..4).map(|_| stalled_post(&addr)).collect())
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1000))
        .build()
        .unwrap();
    // The main listener is full: its /healthz is not even accepted.
    assert!(
        client
            .get(format!("{}/healthz", berth.url))
            .send()
            .await
            .is_err(),
        "the connection limit did not apply"
    );
    // The health listener answers all the same.
    let health = client
        .get(format!("http://127.0.0.1:{health_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");
    let metrics = client
        .get(format!("http://127.0.0.1:{health_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(metrics.text().await.unwrap().contains(BREAKER_STATE));

    // The stalled bodies time out and free their slots: the main listener answers again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(response) = client.get(format!("{}/healthz", berth.url)).send().await {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "slots were never freed");
    }
    drop(held);
}

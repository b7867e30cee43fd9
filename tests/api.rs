//! The read API's edges against a real upstream: bad input, HEAD, ranges, tag lists, access
//! refused upstream, and writes on the read-only mirror namespace.

mod common;

use common::{config_for, seeded, Berth};
use reqwest::{Method, StatusCode};

/// A GET with the path sent exactly as given.
fn raw_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

async fn request(method: Method, url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .unwrap()
}

async fn spec_error(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json",
        "{status}"
    );
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let error = &body["errors"][0];
    (
        status,
        error["code"].as_str().unwrap().to_owned(),
        error["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn bad_input_gets_spec_errors_and_touches_nothing() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let long = "a".repeat(256);
    let good_digest = &s.oci.blobs[0].digest;
    let cases: Vec<(Method, String, u16, &str)> = vec![
        (
            Method::GET,
            "/v2/Library/oci/manifests/1".into(),
            400,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/a//b/manifests/1".into(),
            400,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/caf%C3%A9/manifests/1".into(),
            400,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            format!("/v2/{long}/manifests/1"),
            400,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            format!("/v2/org/{long}/blobs/{good_digest}"),
            400,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/library/oci/blobs/sha256:xyz".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/library/oci/blobs/md5:abc".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/library/oci/manifests/sha256:xyz".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/library/oci/manifests/-bad".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/library/oci/manifests/nope".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/library/never-pushed/manifests/1".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            Method::GET,
            format!("/v2/library/oci/blobs/sha256:{}", "0".repeat(64)),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/quay.io/org/x/manifests/1".into(),
            404,
            "NAME_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/x/manifests/1?ns=ghcr.io".into(),
            404,
            "NAME_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/library/oci/nonsense/1".into(),
            404,
            "NAME_UNKNOWN",
        ),
        // Upstream refuses anonymous access to `private/*`: log in (with upstream credentials).
        (
            Method::GET,
            "/v2/private/secret/manifests/1".into(),
            401,
            "UNAUTHORIZED",
        ),
        // The mirror namespace is read-only.
        (
            Method::PUT,
            "/v2/library/oci/manifests/1".into(),
            405,
            "UNSUPPORTED",
        ),
        (
            Method::DELETE,
            format!("/v2/library/oci/blobs/{good_digest}"),
            405,
            "UNSUPPORTED",
        ),
        (
            Method::POST,
            "/v2/library/oci/blobs/uploads/".into(),
            405,
            "UNSUPPORTED",
        ),
        (
            Method::PATCH,
            "/v2/library/oci/blobs/uploads/abc".into(),
            405,
            "UNSUPPORTED",
        ),
        (
            Method::POST,
            "/v2/BAD/blobs/uploads/".into(),
            400,
            "NAME_INVALID",
        ),
    ];
    for (method, path, status, code) in cases {
        let response = request(method.clone(), &format!("{}{path}", berth.url)).await;
        let (got_status, got_code, message) = spec_error(response).await;
        assert_eq!(
            (got_status.as_u16(), got_code.as_str()),
            (status, code),
            "{method} {path}: {message}"
        );
        assert!(!message.is_empty());
    }
    // Paths an HTTP client library would normalize go out raw.
    for path in [
        "/v2/a/../b/manifests/1",
        "/v2/library/../../etc/blobs/sha256:xyz",
        "/v2/./x/manifests/1",
    ] {
        let (status, body) = raw_get(&berth.addr, path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("NAME_INVALID"), "{path}: {body}");
    }
    // HEAD gets the status without a body.
    let head = request(
        Method::HEAD,
        &format!("{}/v2/library/oci/manifests/nope", berth.url),
    )
    .await;
    assert_eq!(head.status(), 404);
    assert!(head.bytes().await.unwrap().is_empty());
    assert!(
        berth.blob_files().is_empty(),
        "bad requests stored something"
    );
    assert!(!berth.log().contains("panicked"));
}

#[tokio::test]
async fn head_range_and_headers_on_blobs_and_manifests() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let layer = &s.docker.blobs[1];
    let blob_url = format!("{}/v2/library/docker/blobs/{}", berth.url, layer.digest);

    // HEAD before anything is cached asks upstream for the size only.
    let head = request(Method::HEAD, &blob_url).await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        layer.data.len().to_string().as_str()
    );
    assert!(berth.blob_files().is_empty(), "HEAD downloaded the blob");

    let full = request(Method::GET, &blob_url).await;
    assert_eq!(full.status(), 200);
    assert_eq!(
        full.headers()["docker-content-digest"],
        layer.digest.as_str()
    );
    assert_eq!(full.bytes().await.unwrap(), layer.data);

    let head = request(Method::HEAD, &blob_url).await;
    assert_eq!(
        head.headers()["content-length"],
        layer.data.len().to_string().as_str()
    );
    assert_eq!(
        head.headers()["docker-content-digest"],
        layer.digest.as_str()
    );
    assert!(head.bytes().await.unwrap().is_empty());

    let client = reqwest::Client::new();
    let size = layer.data.len();
    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, size - 1),
        ("bytes=-10", size - 10, size - 1),
    ] {
        let partial = client
            .get(&blob_url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(partial.status(), 206, "{range}");
        assert_eq!(
            partial.headers()["content-range"].to_str().unwrap(),
            format!("bytes {start}-{end}/{size}")
        );
        assert_eq!(partial.bytes().await.unwrap(), &layer.data[start..=end]);
    }
    let bad = client
        .get(&blob_url)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 416);

    let manifest_url = format!("{}/v2/library/docker/manifests/1", berth.url);
    let head = request(Method::HEAD, &manifest_url).await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["docker-content-digest"],
        s.docker.manifest.digest.as_str()
    );
    assert_eq!(
        head.headers()["content-type"],
        s.docker.manifest.media_type.as_str()
    );
    assert_eq!(
        head.headers()["content-length"],
        s.docker.manifest.data.len().to_string().as_str()
    );
    assert!(head.bytes().await.unwrap().is_empty());

    // The base challenges even on an open mirror: that is how clients learn where to log in.
    let base = request(Method::GET, &format!("{}/v2/", berth.url)).await;
    assert_eq!(base.status(), 401);
    assert!(base.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm="));
    assert_eq!(
        base.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test]
async fn tag_lists_pass_through() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let client = reqwest::Client::new();
    // Give library/oci a few more tags to page through.
    for tag in ["2", "3"] {
        s.upstream.push("library/oci", tag, &s.oci).await;
    }
    let all: serde_json::Value = serde_json::from_slice(
        &common::get_bytes(&client, &format!("{}/v2/oci/tags/list", berth.url)).await,
    )
    .unwrap();
    let mut tags: Vec<String> = serde_json::from_value(all["tags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, ["1", "2", "3"]);

    let bad = client
        .get(format!("{}/v2/oci/tags/list?n=lots", berth.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

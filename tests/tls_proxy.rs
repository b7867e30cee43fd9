//! berth behind an nginx that terminates TLS: pushes must keep working whether berth is told
//! its external URL, trusts the proxy's X-Forwarded-* headers, or is told nothing at all.
//! The classic failures are http:// upload Locations, 401s on PATCH, and "unknown blob".

mod common;

use common::images::{self, sha256, Flavor};
use common::nginx::Nginx;
use common::private::{creds, token_string, write_oci_layout, AuthFiles};
use common::upstream::free_port;
use common::{config_for, skopeo, Berth};

struct Front {
    berth: Berth,
    nginx: Nginx,
    _work: tempfile::TempDir,
}

/// berth (with `server_extra` in `[server]`) behind nginx on TLS, with `forward` directives.
fn front(files: &AuthFiles, server_extra: impl Fn(u16) -> String, forward: &str) -> Front {
    let work = tempfile::tempdir().unwrap();
    let tls =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let (cert, key) = (work.path().join("tls.crt"), work.path().join("tls.key"));
    std::fs::write(&cert, tls.cert.pem()).unwrap();
    std::fs::write(&key, tls.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = format!("{}{}", files.config(""), config_for(&closed, "5m", "")).replacen(
        "[server]\n",
        &format!("[server]\n{}", server_extra(port)),
        1,
    );
    let berth = Berth::start(&config);
    let server = format!(
        "server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    client_max_body_size 0;\n    proxy_request_buffering off;\n    location / {{\n      proxy_http_version 1.1;\n      proxy_pass http://{};\n      proxy_set_header Host $http_host;\n      {forward}\n    }}\n  }}",
        cert.display(),
        key.display(),
        berth.addr
    );
    let nginx = Nginx::start(port, &server, &work.path().join("nginx"));
    Front {
        berth,
        nginx,
        _work: work,
    }
}

fn push_and_pull_through(front: &Front) {
    let image = images::image(Flavor::Oci, 90, &[512 * 1024, 4096], "amd64");
    let source = tempfile::tempdir().unwrap();
    write_oci_layout(&image, source.path());
    let target = format!("docker://127.0.0.1:{}/team/tls:1", front.nginx.port);
    let push = skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds("alice"),
        "--retry-times",
        "0",
        &format!("oci:{}:latest", source.path().display()),
        &target,
    ]);
    assert!(
        push.status.success(),
        "push through the TLS proxy failed:\n{}\nberth log:\n{}",
        String::from_utf8_lossy(&push.stderr),
        front.berth.log()
    );
    let pull = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds("bob"),
        &target,
    ]);
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    assert_eq!(sha256(&pull.stdout), image.manifest.digest);
}

#[tokio::test]
async fn push_through_tls_proxy_with_external_url() {
    let files = AuthFiles::create();
    let front = front(
        &files,
        |port| format!("external_url = \"https://127.0.0.1:{port}\"\n"),
        "",
    );
    push_and_pull_through(&front);
}

#[tokio::test]
async fn push_through_tls_proxy_forwarding_proto_from_a_trusted_address() {
    let files = AuthFiles::create();
    let front = front(
        &files,
        |_| "trusted_proxies = [\"127.0.0.1/32\"]\n".to_owned(),
        "proxy_set_header X-Forwarded-Proto $scheme;",
    );
    push_and_pull_through(&front);
}

/// Told nothing, berth cannot know the client speaks TLS: its realm says http://. But the
/// upload Locations it hands out are relative, so a client holding a token keeps using
/// https:// through the whole upload.
#[tokio::test]
async fn uploads_through_a_proxy_that_forwards_nothing_stay_on_https() {
    let files = AuthFiles::create();
    let front = front(&files, |_| String::new(), "");
    let base = format!("https://127.0.0.1:{}", front.nginx.port);
    let token = token_string(
        &front.berth.url,
        Some("alice"),
        &["repository:team/tls:pull,push"],
    )
    .await;
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let data = images::random_bytes(91, 200_000);
    let digest = sha256(&data);
    let start = client
        .post(format!("{base}/v2/team/tls/blobs/uploads/"))
        .bearer_auth(&token)
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    let status = start.status();
    let headers = format!("{:?}", start.headers());
    assert_eq!(status, 202, "{headers}");
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/v2/"), "{location}");
    let patch = client
        .patch(format!("{base}{location}"))
        .bearer_auth(&token)
        .header("content-range", format!("0-{}", data.len() - 1))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let status = patch.status();
    let headers = format!("{:?}", patch.headers());
    assert_eq!(status, 202, "{headers} {:?}", patch.text().await);
    let location = patch.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/v2/"), "{location}");
    let put = client
        .put(format!("{base}{location}?digest={digest}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let blob = client
        .get(format!("{base}/v2/team/tls/blobs/{digest}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(blob, data);
}

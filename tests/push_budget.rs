//! Pushes under a disk budget: nothing acknowledged is lost to eviction (sequential skopeo
//! pushes, parallel pushers over the HTTP API, and a restart after), concurrent uploads of one
//! blob count once, and failed or cancelled uploads free their space at once.

mod common;

use std::time::Duration;

use common::fault::FaultyUpstream;
use common::images::{self, random_bytes, sha256, Flavor, OCI_MANIFEST};
use common::private::{creds, skopeo_push, token_string, AuthFiles};
use common::{config_for, Berth};
use reqwest::{Method, StatusCode};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// A berth with `[auth]`, projects and `storage.max_size`, mirroring `upstream`.
fn berth_with_budget(files: &AuthFiles, upstream: &str, max_size: &str) -> Berth {
    Berth::start(&format!(
        "[storage]\nmax_size = \"{max_size}\"\n{}{}",
        files.config(""),
        config_for(upstream, "5m", "")
    ))
}

fn closed_upstream() -> String {
    format!("http://127.0.0.1:{}", common::upstream::free_port())
}

/// HTTP with one bearer token.
#[derive(Clone)]
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn new(berth: &Berth, user: Option<&str>, scopes: &[&str]) -> Api {
        Api {
            base: berth.url.clone(),
            token: token_string(&berth.url, user, scopes).await,
            client: reqwest::Client::new(),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        self.client.request(method, url).bearer_auth(&self.token)
    }

    async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.request(method, path).body(body).send().await.unwrap()
    }

    /// POST, then the bytes in one PATCH: the upload's Location.
    async fn upload(&self, repo: &str, data: &[u8]) -> String {
        let start = self
            .send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), vec![])
            .await;
        assert_eq!(start.status(), 202);
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let patch = self.send(Method::PATCH, &location, data.to_vec()).await;
        assert_eq!(patch.status(), 202);
        patch.headers()["location"].to_str().unwrap().to_owned()
    }

    /// A whole chunked upload (POST, PATCH, PUT): the status of the PUT.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> StatusCode {
        let location = self.upload(repo, data).await;
        let put = format!("{location}?digest={}", sha256(data));
        self.send(Method::PUT, &put, vec![]).await.status()
    }

    async fn get(&self, path: &str) -> (StatusCode, bytes::Bytes) {
        let response = self.request(Method::GET, path).send().await.unwrap();
        (response.status(), response.bytes().await.unwrap())
    }
}

/// A small image's manifest over `config` and `layer`.
fn manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": layer.len()}],
    }))
    .unwrap()
}

/// What one pusher pushed to `repo`: (tag, manifest) and every blob.
struct Pushed {
    repo: String,
    manifests: Vec<(String, Vec<u8>)>,
    blobs: Vec<Vec<u8>>,
}

impl Pushed {
    fn bytes(&self) -> u64 {
        let blobs = self.blobs.iter().map(Vec::len);
        let manifests = self.manifests.iter().map(|(_, m)| m.len());
        blobs.chain(manifests).sum::<usize>() as u64
    }

    /// Every manifest (by tag and by digest) and blob reads back byte for byte.
    async fn assert_readable(&self, api: &Api, when: &str) {
        let repo = &self.repo;
        for (tag, body) in &self.manifests {
            for reference in [tag.clone(), sha256(body)] {
                let got = api.get(&format!("/v2/{repo}/manifests/{reference}")).await;
                assert_eq!(got.0, 200, "{when}: {repo}:{reference} lost");
                assert!(got.1 == *body, "{when}: {repo}:{reference} changed");
            }
        }
        for blob in &self.blobs {
            let digest = sha256(blob);
            let got = api.get(&format!("/v2/{repo}/blobs/{digest}")).await;
            assert_eq!(got.0, 200, "{when}: blob {digest} of {repo} lost");
            assert!(got.1 == *blob, "{when}: blob {digest} of {repo} changed");
        }
    }
}

/// Pushes `count` small images (a layer, a config, a tagged manifest) to `repo`, one after
/// another, each acknowledged.
async fn push_images(api: Api, repo: String, seed: u64, count: usize) -> Pushed {
    let mut pushed = Pushed {
        repo: repo.clone(),
        manifests: Vec::new(),
        blobs: Vec::new(),
    };
    for i in 0..count {
        let layer = random_bytes(seed * 1000 + i as u64, 8 * KIB);
        let config = format!(r#"{{"pusher":{seed},"image":{i}}}"#).into_bytes();
        for blob in [&layer, &config] {
            assert_eq!(api.push_blob(&repo, blob).await, 201);
        }
        let body = manifest(&config, &layer);
        let tag = format!("t{i}");
        let put = api
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "{repo}:{tag}");
        pushed.manifests.push((tag, body));
        pushed.blobs.extend([layer, config]);
    }
    pushed
}

/// Four pushers at once, against a budget far below what they push: eviction runs after
/// every store, and must never take what a push was acknowledged for, before or after a
/// restart. Usage counts exactly what is stored.
#[tokio::test]
async fn parallel_pushes_under_a_tiny_budget_are_all_kept_across_a_restart() {
    let files = AuthFiles::create();
    let mut berth = berth_with_budget(&files, &closed_upstream(), "16KiB");
    let repos: Vec<String> = (0..4).map(|i| format!("team/p{i}")).collect();
    let scopes: Vec<String> = repos
        .iter()
        .map(|r| format!("repository:{r}:pull,push"))
        .collect();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let api = Api::new(&berth, Some("alice"), &scopes).await;

    let pushers = repos
        .iter()
        .enumerate()
        .map(|(i, repo)| tokio::spawn(push_images(api.clone(), repo.clone(), i as u64 + 1, 15)));
    let pushed: Vec<Pushed> = futures_util::future::join_all(pushers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for p in &pushed {
        p.assert_readable(&api, "after the pushes").await;
    }
    let total: u64 = pushed.iter().map(Pushed::bytes).sum();
    assert_eq!(berth.metric("berth_storage_used_bytes").await, total);

    berth.restart();
    let api = Api {
        base: berth.url.clone(),
        ..api
    };
    for p in &pushed {
        p.assert_readable(&api, "after a restart").await;
    }
    assert_eq!(berth.metric("berth_storage_used_bytes").await, total);
}

/// skopeo pushes one image after another against a tiny budget; every one is still there
/// after, and after a restart.
#[tokio::test]
async fn sequential_skopeo_pushes_under_a_tiny_budget_are_all_kept() {
    let files = AuthFiles::create();
    let mut berth = berth_with_budget(&files, &closed_upstream(), "16KiB");
    let images: Vec<images::Image> = (0..8)
        .map(|i| images::image(Flavor::Oci, 300 + i, &[16 * KIB], "amd64"))
        .collect();
    for (i, image) in images.iter().enumerate() {
        let output = skopeo_push(&berth, image, &format!("team/seq:{i}"), "alice");
        assert!(
            output.status.success(),
            "push {i}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            berth.log()
        );
    }
    let pushed = Pushed {
        repo: "team/seq".into(),
        manifests: images
            .iter()
            .enumerate()
            .map(|(i, image)| (i.to_string(), image.manifest.data.clone()))
            .collect(),
        blobs: images
            .iter()
            .flat_map(|image| image.all_blobs().into_iter().map(|b| b.data.clone()))
            .collect(),
    };
    let scope = ["repository:team/seq:pull"];
    let api = Api::new(&berth, Some("bob"), &scope).await;
    pushed.assert_readable(&api, "after the pushes").await;
    berth.restart();
    let api = Api::new(&berth, Some("bob"), &scope).await;
    pushed.assert_readable(&api, "after a restart").await;
    // And a real client pulls each one back.
    for (i, image) in images.iter().enumerate() {
        let raw = common::skopeo_inspect_raw(&berth, &format!("team/seq:{i}"), Some(&creds("bob")));
        assert!(
            raw.status.success(),
            "{}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert_eq!(sha256(&raw.stdout), image.manifest.digest);
    }
}

/// Eight clients upload the same blob at once: it is stored once and counted once, and the
/// mirror blob cached before stays (the budget holds both, and the eight uploads' bytes while
/// they are on disk). A second round changes nothing.
#[tokio::test]
async fn concurrent_uploads_of_one_blob_count_once_and_spare_the_mirror() {
    let upstream = FaultyUpstream::start();
    let mirrored = random_bytes(501, MIB);
    let mirrored_digest = upstream.put_blob(&mirrored);
    let files = AuthFiles::create();
    let berth = berth_with_budget(&files, &upstream.url(), "12MiB");
    let reader = Api::new(&berth, None, &["repository:library/x:pull"]).await;
    let got = reader
        .get(&format!("/v2/library/x/blobs/{mirrored_digest}"))
        .await;
    assert!(got.0 == 200 && got.1 == mirrored);
    // The fill counts the blob once it is committed, just after the client has it.
    berth
        .wait_for_metric("berth_storage_used_bytes", MIB as u64)
        .await;
    assert_eq!(berth.metric("berth_storage_used_bytes").await, MIB as u64);

    let pusher = Api::new(&berth, Some("alice"), &["repository:team/same:pull,push"]).await;
    let blob = random_bytes(502, MIB);
    for round in 0..2 {
        let uploads = (0..8).map(|_| {
            let (pusher, blob) = (pusher.clone(), blob.clone());
            tokio::spawn(async move { pusher.push_blob("team/same", &blob).await })
        });
        for status in futures_util::future::join_all(uploads).await {
            assert_eq!(status.unwrap(), 201, "round {round}");
        }
        assert_eq!(
            berth.metric("berth_storage_used_bytes").await,
            2 * MIB as u64,
            "round {round}: the blob was not counted once"
        );
        assert_eq!(uploads_left(&berth), 0, "round {round}: upload files left");
    }
    assert_eq!(berth.metric("berth_evictions_total").await, 0);
    let got = pusher
        .get(&format!("/v2/team/same/blobs/{}", sha256(&blob)))
        .await;
    assert!(got.0 == 200 && got.1 == blob);
    let files_on_disk = berth.blob_files();
    assert!(
        files_on_disk
            .iter()
            .any(|f| f.ends_with(&mirrored_digest[7..])),
        "the mirror blob was evicted"
    );
    assert_eq!(files_on_disk.len(), 2);
}

fn uploads_left(berth: &Berth) -> usize {
    std::fs::read_dir(berth.data_dir.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits (5 s at most) until no upload file is left.
async fn wait_for_no_uploads(berth: &Berth, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while uploads_left(berth) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the upload file stayed; log:\n{}",
            berth.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cancelled, wrong-digest and cut-off uploads free their file and their usage at once; only
/// an abandoned one stays (for the expiry), and it counts, across a restart too.
#[tokio::test]
async fn failed_and_cancelled_uploads_free_their_space_at_once() {
    let files = AuthFiles::create();
    let mut berth = berth_with_budget(&files, &closed_upstream(), "unlimited");
    let api = Api::new(&berth, Some("alice"), &["repository:team/up:pull,push"]).await;
    let data = random_bytes(601, 512 * KIB);
    let used = || berth.metric("berth_storage_used_bytes");

    // In progress: on disk, and counted.
    let location = api.upload("team/up", &data).await;
    assert_eq!(uploads_left(&berth), 1);
    assert_eq!(used().await, data.len() as u64);
    // Cancelled: gone by the time the answer comes.
    assert_eq!(
        api.send(Method::DELETE, &location, vec![]).await.status(),
        204
    );
    assert_eq!(uploads_left(&berth), 0, "a cancelled upload kept its file");
    assert_eq!(used().await, 0);

    // The wrong digest, chunked and monolithic.
    let wrong = sha256(b"not these bytes");
    let location = api.upload("team/up", &data).await;
    let put = api
        .send(Method::PUT, &format!("{location}?digest={wrong}"), vec![])
        .await;
    assert_eq!(put.status(), 400);
    assert_eq!(uploads_left(&berth), 0, "a mismatched upload kept its file");
    let post = api
        .send(
            Method::POST,
            &format!("/v2/team/up/blobs/uploads/?digest={wrong}"),
            data.clone(),
        )
        .await;
    assert_eq!(post.status(), 400);
    assert_eq!(uploads_left(&berth), 0, "a mismatched monolithic upload");
    assert_eq!(used().await, 0);

    // A PATCH whose body breaks off: the client is gone, the upload with it.
    let start = api
        .send(Method::POST, "/v2/team/up/blobs/uploads/", vec![])
        .await;
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    // Over a raw connection: the headers promise the whole body, 300 KiB come, then the
    // client closes the connection.
    {
        use tokio::io::AsyncWriteExt;
        let mut connection = tokio::net::TcpStream::connect(&berth.addr).await.unwrap();
        let head = format!(
            "PATCH {location} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            berth.addr,
            api.token,
            data.len()
        );
        connection.write_all(head.as_bytes()).await.unwrap();
        connection.write_all(&data[..300 * KIB]).await.unwrap();
        connection.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_no_uploads(&berth, "a cut-off PATCH").await;
    let status = api.send(Method::GET, &location, vec![]).await;
    assert_eq!(status.status(), 404, "the cut-off upload is still known");
    assert_eq!(used().await, 0);

    // Abandoned: it stays for the expiry, and counts, after a restart too.
    api.upload("team/up", &data).await;
    assert_eq!(uploads_left(&berth), 1);
    berth.restart();
    assert_eq!(uploads_left(&berth), 1);
    assert_eq!(
        berth.metric("berth_storage_used_bytes").await,
        data.len() as u64
    );
}

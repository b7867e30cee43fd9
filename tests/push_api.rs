//! The push API's edges over raw HTTP (the behaviours of the OCI conformance workflows):
//! uploads (monolithic, chunked, out of order, resumed after a restart, wrong digest,
//! cancelled, empty, mounted), manifest validation, tags and catalog pagination, referrers,
//! deletes; and tokens trusted by a stock Distribution registry and by a second berth.

mod common;

use common::images::{random_bytes, sha256, OCI_INDEX, OCI_MANIFEST};
use common::private::{token_string, AuthFiles};
use common::{config_for, Berth};
use reqwest::{Method, StatusCode};

fn private_berth(files: &AuthFiles, extra_server: &str) -> Berth {
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    let config = format!("{}{}", files.config(""), config_for(&closed, "5m", ""));
    Berth::start(&config.replacen("[server]\n", &format!("[server]\n{extra_server}"), 1))
}

/// HTTP against one repository with one user's token (all actions that user has).
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn new(berth: &Berth, user: &str, scopes: &[&str]) -> Api {
        Api {
            base: berth.url.clone(),
            token: token_string(&berth.url, Some(user), scopes).await,
            client: reqwest::Client::new(),
        }
    }

    /// A request with no extra headers and no body.
    async fn call(&self, method: Method, path: &str) -> reqwest::Response {
        self.send(method, path, &[], vec![]).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut request = self
            .client
            .request(method, url)
            .bearer_auth(&self.token)
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.unwrap()
    }

    async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let response = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        digest
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> reqwest::Response {
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            body.to_vec(),
        )
        .await
    }
}

async fn code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or_default();
    (
        status,
        body["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn image_manifest(
    config: &str,
    config_len: usize,
    layers: &[(&str, usize)],
    extra: serde_json::Value,
) -> Vec<u8> {
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    if let (Some(target), Some(extra)) = (manifest.as_object_mut(), extra.as_object()) {
        target.extend(extra.clone());
    }
    serde_json::to_vec(&manifest).unwrap()
}

#[tokio::test]
async fn uploads_chunked_out_of_order_resumed_wrong_digest_cancelled_and_empty() {
    let files = AuthFiles::create();
    let mut berth = private_berth(&files, "");
    let api = Api::new(&berth, "alice", &["repository:team/up:pull,push"]).await;
    let data = random_bytes(1, 300_000);
    let digest = sha256(&data);
    let (first, second) = data.split_at(100_000);

    // Start: 202 with a relative Location.
    let start = api.call(Method::POST, "/v2/team/up/blobs/uploads/").await;
    assert_eq!(start.status(), 202);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/v2/team/up/blobs/uploads/"),
        "{location}"
    );
    assert!(start.headers().contains_key("docker-upload-uuid"));

    let patch = api
        .send(
            Method::PATCH,
            &location,
            &[
                ("content-range", "0-99999"),
                ("content-type", "application/octet-stream"),
            ],
            first.to_vec(),
        )
        .await;
    assert_eq!(patch.status(), 202);
    assert_eq!(patch.headers()["range"], "0-99999");
    let location = patch.headers()["location"].to_str().unwrap().to_owned();

    // Out of order: refused, nothing written.
    let wrong = api
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "150000-199999")],
            second[50_000..100_000].to_vec(),
        )
        .await;
    assert_eq!(wrong.status(), 416);

    // The upload survives a hard restart.
    berth.restart();
    let api = Api {
        base: berth.url.clone(),
        ..api
    };
    let status = api.call(Method::GET, &location).await;
    assert_eq!(
        status.status(),
        204,
        "{:?} {}",
        status.headers().get("www-authenticate"),
        berth.log()
    );
    assert_eq!(status.headers()["range"], "0-99999");

    let patch = api
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "100000-299999")],
            second.to_vec(),
        )
        .await;
    assert_eq!(patch.status(), 202);
    let done = api
        .send(
            Method::PUT,
            &format!("{location}?digest={digest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(done.status(), 201);
    assert_eq!(
        done.headers()["location"].to_str().unwrap(),
        format!("/v2/team/up/blobs/{digest}")
    );
    assert_eq!(
        done.headers()["docker-content-digest"].to_str().unwrap(),
        digest
    );
    let got = api
        .send(
            Method::GET,
            &format!("/v2/team/up/blobs/{digest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(got.bytes().await.unwrap(), data);
    // A finished upload is gone.
    assert_eq!(
        code(api.call(Method::GET, &location).await).await,
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );

    // Wrong digest: refused, nothing kept.
    let other = random_bytes(2, 1000);
    let start = api.call(Method::POST, "/v2/team/up/blobs/uploads/").await;
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let claimed = sha256(b"something else");
    let bad = api
        .send(
            Method::PUT,
            &format!("{location}?digest={claimed}"),
            &[],
            other.clone(),
        )
        .await;
    assert_eq!(code(bad).await, (400, "DIGEST_INVALID".into()));
    let head = api
        .send(
            Method::HEAD,
            &format!("/v2/team/up/blobs/{claimed}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(head.status(), 404);
    let head = api
        .send(
            Method::HEAD,
            &format!("/v2/team/up/blobs/{}", sha256(&other)),
            &[],
            vec![],
        )
        .await;
    assert_eq!(head.status(), 404);
    // `sha256:totallywrong` is a client error, not a server one.
    let start = api.call(Method::POST, "/v2/team/up/blobs/uploads/").await;
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let bad = api
        .send(
            Method::PUT,
            &format!("{location}?digest=sha256:totallywrong"),
            &[],
            other.clone(),
        )
        .await;
    assert_eq!(code(bad).await, (400, "DIGEST_INVALID".into()));

    // Cancel.
    let start = api.call(Method::POST, "/v2/team/up/blobs/uploads/").await;
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(api.call(Method::DELETE, &location).await.status(), 204);
    assert_eq!(
        code(api.send(Method::PATCH, &location, &[], b"x".to_vec()).await).await,
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );

    // The empty blob, monolithically.
    let empty = api.push_blob("team/up", b"").await;
    let got = api
        .send(
            Method::GET,
            &format!("/v2/team/up/blobs/{empty}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap().is_empty());
    assert_eq!(berth.temp_files(), 0);
}

#[tokio::test]
async fn cross_repository_mount_needs_read_access_to_the_source() {
    let files = AuthFiles::create();
    let berth = private_berth(&files, "");
    let alice = Api::new(
        &berth,
        "alice",
        &[
            "repository:team/a:pull,push",
            "repository:team/b:push,pull",
            "repository:pub/c:push,pull",
        ],
    )
    .await;
    let digest = alice.push_blob("team/a", &random_bytes(3, 5000)).await;
    let mount = alice
        .send(
            Method::POST,
            &format!("/v2/team/b/blobs/uploads/?mount={digest}&from=team/a"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(mount.status(), 201);
    assert_eq!(
        mount.headers()["location"].to_str().unwrap(),
        format!("/v2/team/b/blobs/{digest}")
    );
    assert_eq!(
        alice
            .send(
                Method::HEAD,
                &format!("/v2/team/b/blobs/{digest}"),
                &[],
                vec![]
            )
            .await
            .status(),
        200
    );

    // A client without a token learns from the challenge every scope a mount needs, the
    // source's pull included, and with a token for exactly those the mount happens.
    let mount_path = format!("/v2/team/c2/blobs/uploads/?mount={digest}&from=team/a");
    let challenged = reqwest::Client::new()
        .post(format!("{}{mount_path}", berth.url))
        .send()
        .await
        .unwrap();
    assert_eq!(challenged.status(), 401);
    let challenge = challenged.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let scope = challenge
        .split("scope=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        scope, "repository:team/c2:push repository:team/a:pull",
        "{challenge}"
    );
    let scopes: Vec<&str> = scope.split(' ').collect();
    let answered = Api::new(&berth, "alice", &scopes).await;
    let mounted = answered.send(Method::POST, &mount_path, &[], vec![]).await;
    assert_eq!(mounted.status(), 201, "mount with the challenged scopes");

    let root = Api::new(&berth, "root", &["repository:pub/d:push,pull"]).await;
    let fallback = alice
        .send(
            Method::POST,
            &format!("/v2/pub/c/blobs/uploads/?mount={digest}&from=team/missing"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(
        fallback.status(),
        202,
        "mount from a repository without the blob"
    );
    let fallback = root
        .send(
            Method::POST,
            &format!("/v2/pub/d/blobs/uploads/?mount={digest}&from=team/a"),
            &[],
            vec![],
        )
        .await;
    // root is an admin, but this token holds no pull on team/a: fallback, not a mount.
    assert_eq!(fallback.status(), 202);
    assert_eq!(
        root.call(Method::HEAD, &format!("/v2/pub/d/blobs/{digest}"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn manifests_are_validated_and_referrers_listed() {
    let files = AuthFiles::create();
    let berth = private_berth(&files, "");
    let api = Api::new(&berth, "carol", &["repository:team/m:pull,push,delete"]).await;
    let config = api.push_blob("team/m", b"{}").await;
    let layer_data = random_bytes(4, 2000);
    let layer = api.push_blob("team/m", &layer_data).await;
    let manifest = image_manifest(&config, 2, &[(&layer, 2000)], serde_json::json!({}));
    let digest = sha256(&manifest);

    // A layer that was never pushed.
    let missing = image_manifest(
        &config,
        2,
        &[(&sha256(b"never pushed"), 12)],
        serde_json::json!({}),
    );
    assert_eq!(
        code(
            api.put_manifest("team/m", "bad", OCI_MANIFEST, &missing)
                .await
        )
        .await,
        (400, "MANIFEST_BLOB_UNKNOWN".into())
    );
    assert_eq!(
        code(
            api.put_manifest("team/m", "bad", OCI_MANIFEST, b"{not json")
                .await
        )
        .await,
        (400, "MANIFEST_INVALID".into())
    );
    assert_eq!(
        code(
            api.put_manifest("team/m", "bad", "text/plain", &manifest)
                .await
        )
        .await,
        (400, "MANIFEST_INVALID".into())
    );
    // Digests a manifest names, its schema version and its media type are the spec's too.
    let bad_layer = image_manifest(&config, 2, &[("sha256:nothex", 1)], serde_json::json!({}));
    let schema1 = image_manifest(&config, 2, &[], serde_json::json!({"schemaVersion": 1}));
    let unknown = image_manifest(
        &config,
        2,
        &[],
        serde_json::json!({"mediaType": "application/vnd.example+json"}),
    );
    for (content_type, body) in [
        (OCI_MANIFEST, &bad_layer),
        (OCI_MANIFEST, &schema1),
        ("application/vnd.example+json", &unknown),
        (OCI_INDEX, &manifest),
    ] {
        assert_eq!(
            code(api.put_manifest("team/m", "bad", content_type, body).await).await,
            (400, "MANIFEST_INVALID".into()),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let wrong_digest = sha256(b"other");
    assert_eq!(
        code(
            api.put_manifest("team/m", &wrong_digest, OCI_MANIFEST, &manifest)
                .await
        )
        .await,
        (400, "DIGEST_INVALID".into())
    );
    // A reference that is not a valid tag: a PUT is a client error, a read finds nothing.
    assert_eq!(
        code(
            api.put_manifest("team/m", "-bad", OCI_MANIFEST, &manifest)
                .await
        )
        .await,
        (400, "TAG_INVALID".into())
    );
    assert_eq!(
        code(api.call(Method::GET, "/v2/team/m/manifests/-bad").await).await,
        (404, "MANIFEST_UNKNOWN".into())
    );
    assert_eq!(
        api.call(Method::HEAD, "/v2/team/m/manifests/-bad")
            .await
            .status(),
        404
    );
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    assert_eq!(
        code(
            api.put_manifest("team/m", "huge", OCI_MANIFEST, &huge)
                .await
        )
        .await
        .0,
        400
    );

    // By digest, then by tag.
    let put = api
        .put_manifest("team/m", &digest, OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(put.status(), 201);
    assert_eq!(
        put.headers()["docker-content-digest"].to_str().unwrap(),
        digest
    );
    assert_eq!(
        put.headers()["location"].to_str().unwrap(),
        format!("/v2/team/m/manifests/{digest}")
    );
    for tag in ["v1", "v2", "v3", "latest"] {
        assert_eq!(
            api.put_manifest("team/m", tag, OCI_MANIFEST, &manifest)
                .await
                .status(),
            201
        );
    }
    let got = api.call(Method::GET, "/v2/team/m/manifests/v2").await;
    assert_eq!(got.headers()["content-type"], OCI_MANIFEST);
    assert_eq!(got.bytes().await.unwrap(), manifest);

    // Tags, paginated.
    let page = api.call(Method::GET, "/v2/team/m/tags/list?n=2").await;
    let link = page.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(link, "</v2/team/m/tags/list?last=v1&n=2>; rel=\"next\"");
    let body: serde_json::Value = serde_json::from_slice(&page.bytes().await.unwrap()).unwrap();
    assert_eq!(body["tags"], serde_json::json!(["latest", "v1"]));
    let rest: serde_json::Value = serde_json::from_slice(
        &api.call(Method::GET, "/v2/team/m/tags/list?n=2&last=v1")
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rest["tags"], serde_json::json!(["v2", "v3"]));

    // An index over it, and an artifact that refers to it.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()}],
    }))
    .unwrap();
    assert_eq!(
        api.put_manifest("team/m", "index", OCI_INDEX, &index)
            .await
            .status(),
        201
    );
    let empty_config = api.push_blob("team/m", b"{}").await;
    let signature = image_manifest(
        &empty_config,
        2,
        &[(&layer, 2000)],
        serde_json::json!({"artifactType": "application/vnd.example.sig", "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()}}),
    );
    let put = api
        .put_manifest("team/m", &sha256(&signature), OCI_MANIFEST, &signature)
        .await;
    assert_eq!(put.status(), 201);
    assert_eq!(put.headers()["oci-subject"].to_str().unwrap(), digest);
    let referrers = api
        .send(
            Method::GET,
            &format!("/v2/team/m/referrers/{digest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(referrers.headers()["content-type"], OCI_INDEX);
    let body: serde_json::Value =
        serde_json::from_slice(&referrers.bytes().await.unwrap()).unwrap();
    assert_eq!(body["manifests"][0]["digest"], sha256(&signature));
    assert_eq!(
        body["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    let filtered = api
        .send(
            Method::GET,
            &format!("/v2/team/m/referrers/{digest}?artifactType=application/other"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(filtered.headers()["oci-filters-applied"], "artifactType");
    let body: serde_json::Value = serde_json::from_slice(&filtered.bytes().await.unwrap()).unwrap();
    assert_eq!(body["manifests"], serde_json::json!([]));

    // Deletes: a tag, then the manifest by digest (its tags go with it), then a blob.
    assert_eq!(
        api.call(Method::DELETE, "/v2/team/m/manifests/v3")
            .await
            .status(),
        202
    );
    assert_eq!(
        code(api.call(Method::GET, "/v2/team/m/manifests/v3").await).await,
        (404, "MANIFEST_UNKNOWN".into())
    );
    assert_eq!(
        api.call(Method::DELETE, &format!("/v2/team/m/manifests/{digest}"))
            .await
            .status(),
        202
    );
    assert_eq!(
        code(api.call(Method::GET, "/v2/team/m/manifests/v1").await).await,
        (404, "MANIFEST_UNKNOWN".into())
    );
    assert_eq!(
        code(
            api.call(Method::DELETE, &format!("/v2/team/m/manifests/{digest}"))
                .await
        )
        .await,
        (404, "MANIFEST_UNKNOWN".into())
    );
    assert_eq!(
        api.call(Method::DELETE, &format!("/v2/team/m/blobs/{layer}"))
            .await
            .status(),
        202
    );
    assert_eq!(
        api.call(Method::HEAD, &format!("/v2/team/m/blobs/{layer}"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn catalog_lists_only_what_the_caller_may_pull() {
    let files = AuthFiles::create();
    let berth = private_berth(&files, "");
    let root = Api::new(
        &berth,
        "root",
        &["repository:team/x:push,pull", "repository:pub/y:push,pull"],
    )
    .await;
    for repo in ["team/x", "pub/y"] {
        let config = root.push_blob(repo, b"{}").await;
        let manifest = image_manifest(&config, 2, &[], serde_json::json!({}));
        assert_eq!(
            root.put_manifest(repo, "1", OCI_MANIFEST, &manifest)
                .await
                .status(),
            201
        );
    }
    let list = |user: Option<&'static str>| {
        let base = berth.url.clone();
        async move {
            let token = token_string(&base, user, &["registry:catalog:*"]).await;
            let response = reqwest::Client::new()
                .get(format!("{base}/v2/_catalog"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            body["repositories"].clone()
        }
    };
    assert_eq!(
        list(Some("root")).await,
        serde_json::json!(["pub/y", "team/x"])
    );
    assert_eq!(
        list(Some("bob")).await,
        serde_json::json!(["pub/y", "team/x"])
    );
    assert_eq!(list(Some("dave")).await, serde_json::json!(["pub/y"]));
    assert_eq!(list(None).await, serde_json::json!(["pub/y"]));
    let page = reqwest::Client::new()
        .get(format!("{}/v2/_catalog?n=1", berth.url))
        .bearer_auth(token_string(&berth.url, Some("root"), &["registry:catalog:*"]).await)
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["link"],
        "</v2/_catalog?last=pub%2Fy&n=1>; rel=\"next\""
    );
    // Without a token: a challenge, not a list.
    let anonymous = reqwest::get(format!("{}/v2/_catalog", berth.url))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm="));
}

#[tokio::test]
async fn tokens_work_on_a_second_node_and_on_a_stock_distribution_registry() {
    let files = AuthFiles::create();
    let node_a = private_berth(&files, "");
    let node_b = private_berth(&files, "");
    let from_a = Api::new(&node_a, "alice", &["repository:team/ha:pull,push"]).await;
    let digest = from_a
        .push_blob("team/ha", b"shared storage comes later")
        .await;
    // Node B accepts node A's token (a blob pushed to B with it).
    let on_b = Api {
        base: node_b.url.clone(),
        ..from_a
    };
    assert_eq!(
        on_b.push_blob("team/ha", b"shared storage comes later")
            .await,
        digest
    );

    // A stock registry configured with berth's certificate accepts berth's tokens.
    let dir = tempfile::tempdir().unwrap();
    let port = common::upstream::free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: {}/token\n    service: berth-test\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
        dir.path().join("data").display(),
        node_a.url,
        files.cert.display()
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let mut registry = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
        .spawn()
        .unwrap();
    common::upstream::reap_with_parent(registry.id());
    common::upstream::wait_for_port(port, std::time::Duration::from_secs(10));
    let stock = Api {
        base: format!("http://127.0.0.1:{port}"),
        token: token_string(
            &node_a.url,
            Some("alice"),
            &["repository:team/ha:pull,push"],
        )
        .await,
        client: reqwest::Client::new(),
    };
    // Distribution 2.8 has no monolithic POST: start, then PUT.
    let start = stock.call(Method::POST, "/v2/team/ha/blobs/uploads/").await;
    assert_eq!(start.status(), 202, "{:?}", start.text().await);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let digest = sha256(b"pushed to Distribution");
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = stock
        .send(
            Method::PUT,
            &format!("{location}{separator}digest={digest}"),
            &[],
            b"pushed to Distribution".to_vec(),
        )
        .await;
    assert_eq!(put.status(), 201);
    // Without the token it refuses, pointing at berth's realm.
    let refused = reqwest::get(format!("http://127.0.0.1:{port}/v2/"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains(&format!("{}/token", node_a.url)));
    // A token for a repository alice may only pull does not let her push there.
    let guest = Api {
        token: token_string(&node_a.url, Some("bob"), &["repository:team/ha:pull,push"]).await,
        ..stock
    };
    let denied = guest.call(Method::POST, "/v2/team/ha/blobs/uploads/").await;
    assert_eq!(denied.status(), 401);
    let _ = registry.kill();
    let _ = registry.wait();
}

//! Several berth nodes over one shared store behave as one registry (issue 14): three nodes
//! over a real 3-node Garage cluster (replication 3), behind an nginx round-robin without
//! sticky sessions, driven by skopeo, podman and raw HTTP. The nodes reach Garage through a
//! second balancer over its three S3 endpoints, as a site would, so that a Garage node may die.

mod common;

use std::time::Duration;

use common::balancer::Balancer;
use common::garage::{garage, REGION};
use common::images::{self, sha256, Flavor};
use common::private::{creds, podman_round_trip, write_oci_layout, AuthFiles};
use common::{config_for, seeded, skopeo, skopeo_ok, Berth, PRIVATE_USER};

const MIB: usize = 1024 * 1024;

/// Three berth nodes over one bucket, behind a balancer.
struct Site {
    nodes: Vec<Berth>,
    balancer: Balancer,
    _store: Balancer,
}

impl Site {
    /// `config`: everything but `[storage.s3]`, the same for every node.
    async fn start(bucket: &str, config: &str) -> Site {
        let garage = garage();
        garage.new_bucket(bucket);
        wait_for_bucket(bucket).await;
        let store = Balancer::start(&(0..3).map(|i| garage.s3_addr(i)).collect::<Vec<_>>());
        let s3 = s3_section(&store.base_url(), bucket);
        let nodes: Vec<Berth> = (0..3)
            .map(|_| Berth::start(&format!("{config}\n{s3}")))
            .collect();
        let balancer = Balancer::start(&nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>());
        Site {
            nodes,
            balancer,
            _store: store,
        }
    }

    fn addr(&self) -> String {
        self.balancer.addr()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {i} ---\n{}", n.log()))
            .collect()
    }

    async fn metric_sum(&self, name: &str) -> u64 {
        let mut sum = 0;
        for node in &self.nodes {
            sum += node.metric(name).await;
        }
        sum
    }
}

/// A bucket just created is not known to every Garage node at once: waits until each one's
/// S3 endpoint lists it.
async fn wait_for_bucket(bucket: &str) {
    use object_store::ObjectStore;
    let garage = garage();
    for i in 0..3 {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(garage.endpoint(i))
            .with_bucket_name(bucket)
            .with_region(REGION)
            .with_access_key_id(garage.access_key_id())
            .with_secret_access_key(garage.secret_access_key())
            .with_allow_http(true)
            .build()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.list_with_delimiter(None).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "bucket {bucket} never appeared on garage node {i}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn s3_section(endpoint: &str, bucket: &str) -> String {
    let garage = garage();
    format!(
        "[storage.s3]\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nregion = \"{REGION}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        garage.access_key_id(),
        garage.secret_access_key()
    )
}

/// A private site: `[auth]` with project `team`, and an upstream that is never reached.
async fn private_site(bucket: &str, files: &AuthFiles) -> Site {
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    Site::start(
        bucket,
        &format!("{}{}", files.config(""), config_for(&closed, "5m", "")),
    )
    .await
}

fn push(addr: &str, image: &images::Image, target: &str, user: &str) {
    let source = tempfile::tempdir().unwrap();
    write_oci_layout(image, source.path());
    skopeo_ok(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(user),
        "--retry-times",
        "0",
        &format!("oci:{}:latest", source.path().display()),
        &format!("docker://{addr}/{target}"),
    ]);
}

fn pull_and_check(addr: &str, image: &images::Image, target: &str, user: &str) {
    let dest = tempfile::tempdir().unwrap();
    skopeo_ok(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds(user),
        "--retry-times",
        "0",
        &format!("docker://{addr}/{target}"),
        &format!("dir:{}", dest.path().display()),
    ]);
    common::assert_dir_matches(dest.path(), image);
}

fn inspect_digest(addr: &str, target: &str, user: &str) -> String {
    let raw = skopeo_ok(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds(user),
        "--retry-times",
        "0",
        &format!("docker://{addr}/{target}"),
    ]);
    sha256(raw.as_bytes())
}

#[tokio::test]
async fn private_images_push_and_pull_through_any_node() {
    let files = AuthFiles::create();
    let site = private_site("private-push", &files).await;
    let addr = site.addr();
    for round in 0..5u64 {
        let image = images::image(Flavor::Oci, 100 + round, &[MIB, MIB / 3], "amd64");
        let target = format!("team/app{round}:v{round}");
        push(&addr, &image, &target, "alice");
        pull_and_check(&addr, &image, &target, "bob");
    }
    // Every node took part: no sticky sessions.
    site.balancer.wait_logged(1);
    let spread = site.balancer.per_backend();
    assert!(
        spread.iter().all(|&n| n > 5),
        "requests per node: {spread:?}\n{}",
        site.logs()
    );
    // One catalog, whichever node answers.
    for node in &site.nodes {
        let token =
            common::private::token_string(&node.url, Some("root"), &["registry:catalog:*"]).await;
        let catalog = reqwest::Client::new()
            .get(format!("{}/v2/_catalog", node.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let catalog: serde_json::Value = serde_json::from_slice(&catalog).unwrap();
        let repos = catalog["repositories"].as_array().unwrap();
        assert_eq!(repos.len(), 5, "{catalog}");
    }
}

#[tokio::test]
async fn podman_pushes_and_pulls_through_the_balancer() {
    let files = AuthFiles::create();
    let site = private_site("podman-push", &files).await;
    let podman = common::Podman::new();
    for round in 0..5u64 {
        let image = images::image(Flavor::Oci, 200 + round, &[MIB], "amd64");
        let target = format!("{}/team/podman{round}:1", site.addr());
        // The balancer's address is the registry; node 0's log is shown on failure.
        let layers = podman_round_trip(&podman, &site.nodes[0], &image, &target, "alice", "bob");
        assert!(layers.contains(image.blobs[1].digest.as_str()), "{layers}");
    }
}

/// A token from one node's token service, valid on every node.
async fn push_token(node: &Berth, repo: &str) -> String {
    common::private::token_string(
        &node.url,
        Some("alice"),
        &[&format!("repository:{repo}:pull,push")],
    )
    .await
}

#[tokio::test]
async fn an_upload_moves_between_nodes_and_a_tag_is_seen_everywhere_at_once() {
    let files = AuthFiles::create();
    let site = private_site("upload-moves", &files).await;
    let (a, b, c) = (&site.nodes[0], &site.nodes[1], &site.nodes[2]);
    let token = push_token(a, "team/moved").await;
    let client = reqwest::Client::new();
    let layer = images::random_bytes(7, 3 * MIB + 17);
    let digest = sha256(&layer);
    // POST on A, a PATCH on B, a PATCH on C, the PUT on A.
    let started = client
        .post(format!("{}/v2/team/moved/blobs/uploads/", a.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let path = location.trim_start_matches(&a.url).to_owned();
    let (first, rest) = layer.split_at(MIB + 5);
    for (node, chunk, from) in [(b, first, 0), (c, rest, first.len())] {
        let patched = client
            .patch(format!("{}{path}", node.url))
            .bearer_auth(&token)
            .header(
                "Content-Range",
                format!("{from}-{}", from + chunk.len() - 1),
            )
            .header("Content-Type", "application/octet-stream")
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 202, "{}", site.logs());
    }
    // The upload's state is the same through any node.
    let status = client
        .get(format!("{}{path}", b.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(
        status.headers()["range"].to_str().unwrap(),
        format!("0-{}", layer.len() - 1)
    );
    let separator = if path.contains('?') { '&' } else { '?' };
    let wrong = client
        .put(format!(
            "{}{path}{separator}digest={}",
            a.url,
            sha256(b"nope")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400, "a wrong digest is refused");
    // The failed PUT ended that upload: start again, monolithic this time, through C.
    let put = client
        .post(format!(
            "{}/v2/team/moved/blobs/uploads/?digest={digest}",
            c.url
        ))
        .bearer_auth(&token)
        .header("Content-Type", "application/octet-stream")
        .body(layer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", site.logs());
    // Readable through A at once.
    let read = client
        .get(format!("{}/v2/team/moved/blobs/{digest}", a.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(sha256(&read.bytes().await.unwrap()), digest);
    // A tag pushed through A is read through B and C at once, and moved through C is read
    // through A at once.
    let first = images::image(Flavor::Oci, 300, &[MIB / 2], "amd64");
    let second = images::image(Flavor::Oci, 301, &[MIB / 2], "amd64");
    push(&a.addr, &first, "team/moved:latest", "alice");
    assert_eq!(
        inspect_digest(&b.addr, "team/moved:latest", "bob"),
        first.manifest.digest
    );
    assert_eq!(
        inspect_digest(&c.addr, "team/moved:latest", "bob"),
        first.manifest.digest
    );
    push(&c.addr, &second, "team/moved:latest", "alice");
    assert_eq!(
        inspect_digest(&a.addr, "team/moved:latest", "bob"),
        second.manifest.digest
    );
}

#[tokio::test]
async fn open_mirror_nodes_share_one_key_and_one_upstream_fetch_per_blob() {
    let seeded = seeded().await;
    let site = Site::start("open-mirror", &config_for(&seeded.upstream.url(), "5m", "")).await;
    let addr = site.addr();
    // Every pull starts with a token from one node and goes on through the others.
    for round in 0..10 {
        let dest = tempfile::tempdir().unwrap();
        let output = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-no-creds",
            "--retry-times",
            "0",
            &format!("docker://{addr}/library/oci:1"),
            &format!("dir:{}", dest.path().display()),
        ]);
        assert!(
            output.status.success(),
            "pull {round}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            site.logs()
        );
        common::assert_dir_matches(dest.path(), &seeded.oci);
    }
    // Each blob came from upstream once, whichever node first missed it.
    let blobs = seeded.oci.all_blobs().len() as u64;
    assert_eq!(
        site.metric_sum("berth_upstream_blob_gets_total").await,
        blobs,
        "{}",
        site.logs()
    );
    // Pass-through: the client's upstream credentials, sealed in a token any node takes.
    for round in 0..10 {
        let dest = tempfile::tempdir().unwrap();
        let output = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("{}:{}", PRIVATE_USER.0, PRIVATE_USER.1),
            "--retry-times",
            "0",
            &format!("docker://{addr}/private/secret:1"),
            &format!("dir:{}", dest.path().display()),
        ]);
        assert!(
            output.status.success(),
            "passthrough pull {round}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            site.logs()
        );
    }
}

#[tokio::test]
async fn a_killed_node_and_a_killed_store_node_do_not_stop_the_site() {
    let files = AuthFiles::create();
    let mut site = private_site("faults", &files).await;
    let addr = site.addr();
    let before = images::image(Flavor::Oci, 400, &[2 * MIB], "amd64");
    push(&addr, &before, "team/faults:1", "alice");
    // A node dies in the middle of an upload: the client's retry goes to another node.
    let token = push_token(&site.nodes[0], "team/faults").await;
    let client = reqwest::Client::new();
    let started = client
        .post(format!(
            "{}/v2/team/faults/blobs/uploads/",
            site.nodes[0].url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let path = location.trim_start_matches(&site.nodes[0].url).to_owned();
    site.nodes[0].kill();
    let layer = images::random_bytes(9, MIB);
    let digest = sha256(&layer);
    let separator = if path.contains('?') { '&' } else { '?' };
    let finished = client
        .put(format!(
            "{}{path}{separator}digest={digest}",
            site.nodes[1].url
        ))
        .bearer_auth(&token)
        .header("Content-Type", "application/octet-stream")
        .body(layer)
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), 201, "{}", site.logs());
    // Through the balancer with the node still dead: skopeo retries what hit it.
    let during = images::image(Flavor::Oci, 401, &[MIB], "amd64");
    let source = tempfile::tempdir().unwrap();
    write_oci_layout(&during, source.path());
    skopeo_ok(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds("alice"),
        "--retry-times",
        "3",
        &format!("oci:{}:latest", source.path().display()),
        &format!("docker://{addr}/team/faults:2"),
    ]);
    site.nodes[0].relaunch();
    // One of three Garage nodes dies: pushes and pulls go on (quorum 2 of 3).
    let garage = garage();
    garage.kill(2);
    let degraded = images::image(Flavor::Oci, 402, &[MIB], "amd64");
    push(&addr, &degraded, "team/faults:3", "alice");
    for (image, tag) in [(&before, "1"), (&during, "2"), (&degraded, "3")] {
        pull_and_check(&addr, image, &format!("team/faults:{tag}"), "bob");
    }
    garage.restart(2);
}

/// A blob larger than one read part (8 MiB) comes back whole through a node that never held
/// it: its first read passes straight from the bucket as ranged GETs fetched ahead, a read
/// again fills the node's tier (ranged too), and a range is served from the tier.
#[tokio::test]
async fn a_large_blob_is_read_in_ranged_parts_through_a_node_that_never_held_it() {
    let files = AuthFiles::create();
    let site = private_site("ranged-reads", &files).await;
    let image = images::image(Flavor::Oci, 600, &[19 * MIB + 12_345], "amd64");
    push(&site.addr(), &image, "team/big:1", "alice");
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    let node = Berth::start(&format!(
        "{}{}\n{}",
        files.config(""),
        config_for(&closed, "5m", ""),
        s3_section(&garage().endpoint(0), "ranged-reads")
    ));
    let token =
        common::private::token_string(&node.url, Some("bob"), &["repository:team/big:pull"]).await;
    let layer = image.blobs.iter().max_by_key(|b| b.data.len()).unwrap();
    let url = format!("{}/v2/team/big/blobs/{}", node.url, layer.digest);
    let client = reqwest::Client::new();
    for (read, passes, fills) in [(1, 1, 0), (2, 1, 1)] {
        let got = client.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(got.status(), 200, "read {read}: {}", node.log());
        let bytes = got.bytes().await.unwrap();
        assert_eq!(bytes.len(), layer.data.len(), "read {read}");
        assert_eq!(sha256(&bytes), layer.digest, "read {read}");
        assert_eq!(node.metric("berth_shared_blob_passes_total").await, passes);
        assert_eq!(node.metric("berth_shared_blob_gets_total").await, fills);
    }
    node.settle();
    let (start, end) = (9 * MIB - 3, 17 * MIB + 5);
    let part = client
        .get(&url)
        .bearer_auth(&token)
        .header("Range", format!("bytes={start}-{end}"))
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206, "{}", node.log());
    assert_eq!(&part.bytes().await.unwrap()[..], &layer.data[start..=end]);
    assert_eq!(
        node.metric("berth_shared_blob_gets_total").await,
        1,
        "from the tier"
    );
}

#[tokio::test]
async fn with_the_store_out_of_reach_the_tier_still_serves_and_the_rest_is_unavailable() {
    let files = AuthFiles::create();
    let site = private_site("unreachable", &files).await;
    let image = images::image(Flavor::Oci, 500, &[MIB], "amd64");
    push(&site.addr(), &image, "team/cut:1", "alice");
    // A fourth node reaches the store through a proxy that can be cut.
    let proxy = common::proxy::FaultProxy::start_keeping_host(&garage().endpoint(0));
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    let node = Berth::start(&format!(
        "{}{}\n{}",
        files.config(""),
        config_for(&closed, "5m", ""),
        s3_section(&proxy.url(), "unreachable")
    ));
    let token =
        common::private::token_string(&node.url, Some("bob"), &["repository:team/cut:pull"]).await;
    let client = reqwest::Client::new();
    let layer = &image.blobs[1];
    let get = |path: String| {
        client
            .get(format!("{}/v2/team/cut/{path}", node.url))
            .bearer_auth(&token)
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
    };
    // Read once while the store answers, the layer passes straight through, unkept; read
    // again, it lands in this node's tier.
    let read = get(format!("blobs/{}", layer.digest)).await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(sha256(&read.bytes().await.unwrap()), layer.digest);
    assert_eq!(node.metric("berth_shared_blob_passes_total").await, 1);
    assert!(node.blob_files().is_empty(), "{:?}", node.blob_files());
    let read = get(format!("blobs/{}", layer.digest)).await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(sha256(&read.bytes().await.unwrap()), layer.digest);
    assert_eq!(node.metric("berth_shared_blob_gets_total").await, 1);
    node.settle();
    proxy.set_mode(common::proxy::Mode::Status(503));
    let read = get(format!("blobs/{}", layer.digest)).await.unwrap();
    assert_eq!(read.status(), 200, "{}", node.log());
    assert_eq!(sha256(&read.bytes().await.unwrap()), layer.digest);
    let manifest = get("manifests/1".into()).await.unwrap();
    assert_eq!(manifest.status(), 503);
    let body: serde_json::Value = serde_json::from_slice(&manifest.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    // The store is back: so is everything else.
    proxy.set_mode(common::proxy::Mode::Pass);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let manifest = get("manifests/1".into()).await.unwrap();
    assert_eq!(manifest.status(), 200, "{}", node.log());
    assert_eq!(
        sha256(&manifest.bytes().await.unwrap()),
        image.manifest.digest
    );
}

#[tokio::test]
async fn dockerd_logs_in_pushes_and_pulls_through_the_balancer() {
    let files = AuthFiles::create();
    let site = private_site("dockerd-push", &files).await;
    let addr = site.addr();
    let dockerd = common::dockerd::Dockerd::start(&addr);
    // `docker login` asks /v2/ for a challenge and the token service for a token: twenty of
    // them land on every node in turn.
    for _ in 0..20 {
        let out = dockerd.docker(&["login", "-u", "alice", "-p", "alice-pw", &addr]);
        assert!(out.contains("Login Succeeded"), "{out}");
    }
    let work = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let content = images::random_bytes(600 + round, MIB);
        let tar = work.path().join(format!("rootfs{round}.tar"));
        std::fs::write(&tar, images::tar_with_file("data.bin", &content)).unwrap();
        let target = format!("{addr}/team/docker{round}:1");
        dockerd.docker(&["import", tar.to_str().unwrap(), &target]);
        let pushed = dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &target]);
        dockerd.docker(&["push", "--quiet", &target]);
        dockerd.docker(&["rmi", &target]);
        dockerd.docker(&["pull", "--quiet", &target]);
        let pulled = dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &target]);
        assert_eq!(pushed, pulled, "the image id (its config digest) changed");
    }
    dockerd.docker(&["logout", &addr]);
}

/// Writes `images` as an OCI image layout whose `index.json` names each by its full name, as
/// `berth export` does.
fn write_bundle(dir: &std::path::Path, images: &[(&images::Image, &str)]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut entries = Vec::new();
    for (image, name) in images {
        for blob in image.all_blobs().into_iter().chain([&image.manifest]) {
            std::fs::write(blobs.join(&blob.digest[7..]), &blob.data).unwrap();
        }
        entries.push(serde_json::json!({
            "mediaType": image.manifest.media_type,
            "digest": image.manifest.digest,
            "size": image.manifest.data.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": entries});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// `berth import` of `bundle` with node's configuration and data directory: through its
/// admin socket while it runs, into the store directly when it is stopped.
fn import(node: &Berth, bundle: &std::path::Path, into: Option<&str>) -> std::process::Output {
    let config = node
        .data_dir
        .with_extension(format!("{}.toml", std::process::id()));
    let mut args = vec!["import".to_owned(), bundle.display().to_string()];
    if let Some(project) = into {
        args.extend(["--into".to_owned(), project.to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::cli::berth_cli(node, &config, &args)
}

/// A bundle imported into a project through one node (its admin socket), and another on a
/// stopped node, go into the shared store: every node serves them at once, byte for byte,
/// and the platform the bundle left out stays out. A bundle for the mirror is refused with
/// the reason: each node keeps its own cached tags.
#[tokio::test]
async fn a_bundle_imported_through_one_node_is_served_by_every_node() {
    let files = AuthFiles::create();
    let mut site = private_site("imported", &files).await;
    let app = images::multi_arch(Flavor::Oci, 700, &[MIB, MIB / 2]);
    let solo = images::image(Flavor::Oci, 701, &[MIB + 3], "amd64");
    let work = tempfile::tempdir().unwrap();
    let (first, second) = (work.path().join("first"), work.path().join("second"));
    write_bundle(&first, &[(&app, "docker.io/library/app:1")]);
    let arm64 = &app.children[1];
    for blob in arm64.all_blobs().into_iter().chain([&arm64.manifest]) {
        std::fs::remove_file(first.join("blobs/sha256").join(&blob.digest[7..])).unwrap();
    }
    write_bundle(&second, &[(&solo, "docker.io/library/solo:1")]);

    let refused = import(&site.nodes[0], &first, None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("into a private project only"),
        "{stderr}"
    );

    let done = import(&site.nodes[0], &first, Some("team"));
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&done.stderr),
        site.logs()
    );
    assert!(
        stdout.contains(&format!(
            "imported docker.io/library/app:1 as team/library/app:1 ({})",
            app.manifest.digest
        )),
        "{stdout}"
    );
    for node in &site.nodes {
        pull_and_check(&node.addr, &app.children[0], "team/library/app:1", "bob");
        assert_eq!(
            inspect_digest(&node.addr, "team/library/app:1", "bob"),
            app.manifest.digest
        );
    }
    let token = common::private::token_string(
        &site.nodes[1].url,
        Some("bob"),
        &["repository:team/library/app:pull"],
    )
    .await;
    let left_out = reqwest::Client::new()
        .get(format!(
            "{}/v2/team/library/app/manifests/{}",
            site.nodes[1].url, arm64.manifest.digest
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(left_out.status(), 404);

    // A stopped node imports straight into the shared store; the running ones serve it.
    site.nodes[2].stop();
    let done = import(&site.nodes[2], &second, Some("team"));
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    for node in &site.nodes[..2] {
        pull_and_check(&node.addr, &solo, "team/library/solo:1", "bob");
    }
    site.nodes[2].relaunch();
    pull_and_check(
        &site.nodes[2].addr,
        &app.children[0],
        "team/library/app:1",
        "bob",
    );
}

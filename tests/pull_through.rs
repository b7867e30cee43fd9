//! End to end: skopeo pulls through berth from a real, token-protected Distribution upstream,
//! cold, warm, and after a hard restart.

mod common;

use common::{assert_dir_matches, config_for, seeded, skopeo_pull, Berth};

#[tokio::test]
async fn cold_warm_and_restarted_pulls_of_every_manifest_type() {
    let s = seeded().await;
    let mut berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let cases = [
        ("oci:1", &s.oci, false),
        ("docker:1", &s.docker, false),
        ("multi-oci:1", &s.oci_index, true),
        ("multi-docker:1", &s.docker_list, true),
    ];

    let repos = [
        "library/oci",
        "library/docker",
        "library/multi-oci",
        "library/multi-docker",
    ];

    // Cold: everything comes from upstream, once.
    let gets_before = s.upstream.blob_gets(&repos);
    for (image, seeded_image, all) in &cases {
        let dest = tempfile::tempdir().unwrap();
        skopeo_pull(&berth, image, dest.path(), *all);
        assert_dir_matches(dest.path(), seeded_image);
    }
    let cold_gets = s.upstream.blob_gets(&repos) - gets_before;
    let distinct_blobs: usize = cases
        .iter()
        .map(|(_, image, _)| {
            image
                .all_blobs()
                .iter()
                .filter(|b| !b.media_type.contains("manifest"))
                .count()
        })
        .sum();
    assert_eq!(
        cold_gets, distinct_blobs,
        "each blob fetched from upstream exactly once"
    );
    assert_eq!(
        berth.metric("berth_upstream_blob_gets_total").await,
        distinct_blobs as u64
    );
    berth.settle();
    assert_eq!(
        berth.temp_files(),
        0,
        "no temp files left after verified fills"
    );

    // Warm: no blob request reaches upstream.
    for (image, seeded_image, all) in &cases {
        let dest = tempfile::tempdir().unwrap();
        skopeo_pull(&berth, image, dest.path(), *all);
        assert_dir_matches(dest.path(), seeded_image);
    }
    assert_eq!(
        s.upstream.blob_gets(&repos) - gets_before,
        cold_gets,
        "warm pulls hit upstream"
    );
    assert!(berth.metric("berth_blob_cache_hits_total").await >= distinct_blobs as u64);

    // After SIGKILL and restart, the cache is still there.
    berth.restart();
    for (image, seeded_image, all) in &cases {
        let dest = tempfile::tempdir().unwrap();
        skopeo_pull(&berth, image, dest.path(), *all);
        assert_dir_matches(dest.path(), seeded_image);
    }
    assert_eq!(
        s.upstream.blob_gets(&repos) - gets_before,
        cold_gets,
        "pulls after a restart hit upstream for blobs"
    );
    assert_eq!(berth.metric("berth_upstream_blob_gets_total").await, 0);
}

#[tokio::test]
async fn names_select_upstreams_and_library_prefix() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    // A single-component name gets `library/`; `docker.io/` and `?ns=` select the same upstream.
    let client = reqwest::Client::new();
    let accept = common::images::OCI_MANIFEST;
    for path in [
        "/v2/oci/manifests/1",
        "/v2/library/oci/manifests/1",
        "/v2/docker.io/library/oci/manifests/1",
        "/v2/docker.io/oci/manifests/1",
        "/v2/library/oci/manifests/1?ns=docker.io",
        "/v2/oci/manifests/1?ns=docker.io",
    ] {
        let response = client
            .get(format!("{}{path}", berth.url))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["docker-content-digest"]
                .to_str()
                .unwrap(),
            s.oci.manifest.digest,
            "{path}"
        );
        assert_eq!(response.headers()["content-type"].to_str().unwrap(), accept);
        assert_eq!(
            response.headers()["docker-distribution-api-version"]
                .to_str()
                .unwrap(),
            "registry/2.0"
        );
        assert_eq!(response.bytes().await.unwrap(), s.oci.manifest.data);
    }
}

/// podman pulls (and unpacks: the layers are real tars) through berth, single- and multi-arch.
#[tokio::test]
async fn podman_pulls_through_berth() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let podman = common::Podman::new();
    let podman = |args: &[&str]| podman.run(&berth, args);
    // Repositories of its own, so that the blob counts of the skopeo test stay exact.
    for (repo, seeded_image) in [
        ("library/podman-docker", &s.docker),
        ("library/podman-oci", &s.oci),
        ("library/podman-multi-docker", &s.docker_list),
        ("library/podman-multi-oci", &s.oci_index),
    ] {
        s.upstream.push(repo, "1", seeded_image).await;
        let reference = format!("{}/{repo}:1", berth.addr);
        podman(&[
            "pull",
            "--quiet",
            "--tls-verify=false",
            "--arch",
            "amd64",
            &reference,
        ]);
        let digest = podman(&["image", "inspect", "--format", "{{.Digest}}", &reference]);
        assert_eq!(digest, seeded_image.manifest.digest, "{repo}");
    }
}

/// containerd (through `ctr` and a `hosts.toml` mirror entry, which adds `?ns=docker.io`)
/// pulls and unpacks single- and multi-arch images through berth.
#[tokio::test]
async fn containerd_pulls_through_berth_with_hosts_toml() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let containerd = common::containerd::Containerd::start();
    let hosts = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hosts.path().join("docker.io")).unwrap();
    std::fs::write(
        hosts.path().join("docker.io/hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            berth.addr
        ),
    )
    .unwrap();
    let hosts_dir = hosts.path().to_str().unwrap();
    for (repo, seeded_image, all_platforms) in [
        ("library/ctd-docker", &s.docker, false),
        ("library/ctd-oci", &s.oci, false),
        ("library/ctd-multi-docker", &s.docker_list, true),
        ("library/ctd-multi-oci", &s.oci_index, true),
    ] {
        s.upstream.push(repo, "1", seeded_image).await;
        let reference = format!("docker.io/{repo}:1");
        let mut args = vec![
            "images",
            "pull",
            "--hosts-dir",
            hosts_dir,
            "--snapshotter",
            "native",
        ];
        if all_platforms {
            args.push("--all-platforms");
        } else {
            args.extend(["--platform", "linux/amd64"]);
        }
        args.push(&reference);
        containerd.ctr(&args);
        let listed = containerd.ctr(&["images", "ls"]);
        let line = listed
            .lines()
            .find(|l| l.starts_with(&reference))
            .unwrap_or_else(|| panic!("{reference} not in:\n{listed}"));
        assert!(line.contains(&seeded_image.manifest.digest), "{line}");
    }
    // Every request carried containerd's ?ns=docker.io and was answered by berth.
    assert!(berth.metric("berth_upstream_blob_gets_total").await > 0);
}

/// dockerd with berth as its `registry-mirrors` entry pulls (and unpacks) Docker Hub names,
/// single- and multi-arch, through berth.
#[tokio::test]
async fn dockerd_pulls_through_berth_as_registry_mirror() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let dockerd = common::dockerd::Dockerd::start(&berth.addr);
    for (repo, seeded_image) in [
        ("library/dk-docker", &s.docker),
        ("library/dk-multi-docker", &s.docker_list),
        ("library/dk-oci", &s.oci),
        ("library/dk-multi-oci", &s.oci_index),
    ] {
        s.upstream.push(repo, "1", seeded_image).await;
        // A Docker Hub name: dockerd asks its mirror, which is berth.
        let name = format!("{}:1", repo.trim_start_matches("library/"));
        dockerd.docker(&["pull", "--quiet", &name]);
        let digests = dockerd.docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &name,
        ]);
        assert!(
            digests.contains(&seeded_image.manifest.digest),
            "{repo}: {digests}"
        );
    }
    assert!(berth.metric("berth_upstream_blob_gets_total").await > 0);
}

//! berth's own TLS listener, with a private CA, driven by real clients that verify it: skopeo,
//! podman and containerd with the CA installed the way their docs say and no insecure setting,
//! dockerd with `certs.d`; refusals without the CA; HTTP/2 through ALPN; client certificates.
//! The certificate reload (SIGHUP, file change, a bad pair) is in tests/tls_reload.rs.

mod common;

use common::ca::{served_fingerprint, Ca};
use common::images::{self, sha256, Flavor};
use common::private::{creds, write_oci_layout, AuthFiles};
use common::{config_for, seeded, skopeo, Berth, Podman};

const MIB: usize = 1024 * 1024;

/// An open mirror of the seeded upstream, serving `ca`'s pair (plus `server_extra`).
fn tls_mirror(ca: &Ca, upstream: &str, server_extra: &str) -> Berth {
    Berth::start(&with_server(
        &config_for(upstream, "5m", ""),
        &format!("{}{server_extra}", ca.server_config()),
    ))
}

/// A berth with `[auth]` and projects (`team` is private), serving `ca`'s pair.
fn tls_private(ca: &Ca, files: &AuthFiles, upstream: &str) -> Berth {
    let config = format!("{}{}", files.config(""), config_for(upstream, "5m", ""));
    Berth::start(&with_server(&config, &ca.server_config()))
}

fn with_server(config: &str, lines: &str) -> String {
    config.replacen("[server]\n", &format!("[server]\n{lines}"), 1)
}

fn assert_x509_refusal(what: &str, output: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "{what} trusted berth without the CA"
    );
    assert!(
        stderr.contains("x509") || stderr.contains("certificate signed by unknown authority"),
        "{what} failed, but not on the certificate:\n{stderr}"
    );
}

#[tokio::test]
async fn berth_says_https_and_builds_https_realms() {
    let s = seeded().await;
    let (ca, _) = Ca::new("realm");
    let berth = tls_mirror(&ca, &s.upstream.url(), "");
    assert!(berth.url.starts_with("https://127.0.0.1:"), "{}", berth.url);
    let client = ca.client_builder().build().unwrap();
    let v2 = client
        .get(format!("{}/v2/", berth.url))
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status(), 401);
    let challenge = v2.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(&format!("realm=\"https://{}/token\"", berth.addr)),
        "{challenge}"
    );
    let log = berth.log();
    let summary = log
        .lines()
        .find(|l| l.contains("berth serving"))
        .unwrap_or_else(|| panic!("no summary line in:\n{log}"));
    for part in [
        &format!("listen=https://{}", berth.addr),
        "auth=open mirror",
        &format!("docker.io={}", s.upstream.url()),
        "offline=false",
        "storage=local ",
    ] {
        assert!(summary.contains(part), "{part:?} missing in: {summary}");
    }
    // On loopback with TLS, nothing to warn about.
    assert!(!log.contains("the token realm will be http://"), "{log}");
}

#[tokio::test]
async fn http2_is_negotiated_through_alpn_and_http1_still_served() {
    let s = seeded().await;
    let (ca, _) = Ca::new("h2");
    let berth = tls_mirror(&ca, &s.upstream.url(), "");
    let layer = s
        .oci
        .all_blobs()
        .into_iter()
        .max_by_key(|b| b.data.len())
        .unwrap();
    let url = format!("{}/v2/library/oci/blobs/{}", berth.url, layer.digest);
    let h2 = ca.client_builder().build().unwrap();
    let h1 = ca.client_builder().http1_only().build().unwrap();
    for (client, version) in [
        (&h2, reqwest::Version::HTTP_2),
        (&h1, reqwest::Version::HTTP_11),
    ] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), version);
        let body = response.bytes().await.unwrap();
        assert_eq!(sha256(&body), layer.digest, "{version:?}");
    }
}

#[tokio::test]
async fn skopeo_and_podman_verify_berth_against_the_ca_and_refuse_it_without() {
    let s = seeded().await;
    let (ca, _) = Ca::new("podman");
    let files = AuthFiles::create();
    let berth = tls_private(&ca, &files, &s.upstream.url());
    let cert_dir = ca.cert_dir();
    let cert_dir = cert_dir.to_str().unwrap();
    let mirror = format!("{}/library/oci:1", berth.addr);

    // Without the CA (and without any --tls-verify=false), both refuse berth on x509.
    let inspect = |extra: &[&str]| {
        let reference = format!("docker://{mirror}");
        let mut args = vec!["inspect", "--raw", "--retry-times", "0"];
        args.extend(extra);
        args.push(&reference);
        skopeo(&args)
    };
    assert_x509_refusal("skopeo", &inspect(&[]));
    let podman = Podman::new();
    assert_x509_refusal("podman", &podman.output(&["pull", "--quiet", &mirror]));

    // With the CA: skopeo reads the mirror, podman pulls it and pushes into a private project.
    let raw = inspect(&["--cert-dir", cert_dir]);
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(sha256(&raw.stdout), s.oci.manifest.digest);
    podman.run(
        &berth,
        &["pull", "--quiet", "--cert-dir", cert_dir, &mirror],
    );
    let digest = podman.run(
        &berth,
        &["image", "inspect", "--format", "{{.Digest}}", &mirror],
    );
    assert_eq!(digest, s.oci.manifest.digest);

    let image = images::image(Flavor::Oci, 120, &[2 * MIB, MIB], "amd64");
    let layout = tempfile::Builder::new()
        .prefix("berth")
        .rand_bytes(0)
        .suffix(&format!("-tls-oci-{}", std::process::id()))
        .tempdir()
        .unwrap();
    write_oci_layout(&image, layout.path());
    let local = format!("oci:{}:latest", layout.path().display());
    let target = format!("{}/team/tls:1", berth.addr);
    // `pull --quiet` prints the image ID.
    let id = podman.run(&berth, &["pull", "--quiet", &local]);
    let (alice, destination) = (creds("alice"), format!("docker://{target}"));
    podman.run(
        &berth,
        &[
            "push",
            "--quiet",
            "--cert-dir",
            cert_dir,
            "--creds",
            &alice,
            &id,
            &destination,
        ],
    );
    podman.run(&berth, &["rmi", "--all", "--force"]);
    let bob = creds("bob");
    podman.run(
        &berth,
        &[
            "pull",
            "--quiet",
            "--cert-dir",
            cert_dir,
            "--creds",
            &bob,
            &target,
        ],
    );
    let layers = podman.run(
        &berth,
        &[
            "image",
            "inspect",
            "--format",
            "{{.RootFS.Layers}}",
            &target,
        ],
    );
    assert_eq!(layers.matches("sha256:").count(), 2, "{layers}");
}

#[tokio::test]
async fn containerd_pulls_through_berth_with_the_ca_in_hosts_toml() {
    let s = seeded().await;
    let (ca, _) = Ca::new("containerd");
    let berth = tls_mirror(&ca, &s.upstream.url(), "");
    let containerd = common::containerd::Containerd::start();
    s.upstream.push("library/ctd-tls", "1", &s.docker).await;

    // berth as the docker.io mirror, its CA named with `ca` (containerd's hosts.toml).
    let hosts = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hosts.path().join("docker.io")).unwrap();
    std::fs::write(
        hosts.path().join("docker.io/hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"https://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
            berth.addr,
            ca.ca_file.display()
        ),
    )
    .unwrap();
    let reference = "docker.io/library/ctd-tls:1";
    containerd.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        "--snapshotter",
        "native",
        "--platform",
        "linux/amd64",
        reference,
    ]);
    let listed = containerd.ctr(&["images", "ls"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(reference))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains(&s.docker.manifest.digest), "{line}");

    // The same mirror entry without `ca`: containerd refuses berth (and the next host, a
    // closed port, fails too). The refusal shows in its "trying next host" line.
    // (Without any hosts.toml it would fall back to plain HTTP for 127.0.0.1, as dockerd does.)
    let no_ca = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(no_ca.path().join("docker.io")).unwrap();
    std::fs::write(
        no_ca.path().join("docker.io/hosts.toml"),
        format!(
            "server = \"https://127.0.0.1:{}\"\n\n[host.\"https://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            common::upstream::free_port(),
            berth.addr
        ),
    )
    .unwrap();
    let refused = containerd.ctr_output(&[
        "images",
        "pull",
        "--hosts-dir",
        no_ca.path().to_str().unwrap(),
        "docker.io/library/ctd-tls:1",
    ]);
    assert_x509_refusal("containerd", &refused);
}

/// containerd pushes into a private project over TLS with the CA named in the berth host's
/// `hosts.toml`, and what it pushed reads back through berth by digest.
#[tokio::test]
async fn containerd_pushes_into_a_project_with_the_ca_in_hosts_toml() {
    let s = seeded().await;
    let (ca, _) = Ca::new("containerd-push");
    let files = AuthFiles::create();
    let berth = tls_private(&ca, &files, &s.upstream.url());
    let containerd = common::containerd::Containerd::start();
    s.upstream.push("library/ctd-push", "1", &s.docker).await;

    // One hosts.toml for docker.io (berth as its mirror), one for berth itself.
    let hosts = tempfile::tempdir().unwrap();
    for (dir, server) in [
        (
            "docker.io".to_owned(),
            "https://registry-1.docker.io".to_owned(),
        ),
        (berth.addr.clone(), format!("https://{}", berth.addr)),
    ] {
        std::fs::create_dir_all(hosts.path().join(&dir)).unwrap();
        std::fs::write(
            hosts.path().join(&dir).join("hosts.toml"),
            format!(
                "server = \"{server}\"\n\n[host.\"https://{}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = \"{}\"\n",
                berth.addr,
                ca.ca_file.display()
            ),
        )
        .unwrap();
    }
    let hosts_dir = hosts.path().to_str().unwrap();
    let (pulled, pushed) = (
        "docker.io/library/ctd-push:1",
        format!("{}/team/ctd:1", berth.addr),
    );
    containerd.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        hosts_dir,
        "--snapshotter",
        "native",
        "--platform",
        "linux/amd64",
        pulled,
    ]);
    containerd.ctr(&["images", "tag", pulled, &pushed]);
    let alice = creds("alice");
    containerd.ctr(&[
        "images",
        "push",
        "--hosts-dir",
        hosts_dir,
        "--user",
        &alice,
        "--platform",
        "linux/amd64",
        &pushed,
    ]);

    // Read back through berth, verified against the same CA.
    let cert_dir = ca.cert_dir();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        "--creds",
        &creds("bob"),
        &format!("docker://{pushed}"),
    ]);
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(sha256(&raw.stdout), s.docker.manifest.digest);
}

/// The CA where dockerd looks for it, removed again on drop.
struct DockerCertsD(std::path::PathBuf);

impl DockerCertsD {
    fn install(ca: &Ca, addr: &str) -> DockerCertsD {
        let dir = std::path::Path::new("/etc/docker/certs.d").join(addr);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&ca.ca_file, dir.join("ca.crt")).unwrap();
        DockerCertsD(dir)
    }
}

impl Drop for DockerCertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// dockerd pulls through berth as an `https://` mirror and pushes into a private project, with
/// the CA in `/etc/docker/certs.d/HOST:PORT/ca.crt` and no `insecure-registries` entry.
/// dockerd always counts 127.0.0.0/8 as an insecure registry: it still speaks TLS to berth
/// first, but may skip verifying it, so this test shows dockerd works over berth's TLS; the
/// proof that the CA is checked is skopeo's, podman's and containerd's above.
#[tokio::test]
async fn dockerd_pulls_and_pushes_over_tls_with_the_ca_in_certs_d() {
    let s = seeded().await;
    let (ca, _) = Ca::new("dockerd");
    let files = AuthFiles::create();
    let berth = tls_private(&ca, &files, &s.upstream.url());
    let _certs = DockerCertsD::install(&ca, &berth.addr);
    let dockerd = common::dockerd::Dockerd::start_tls(&berth.addr);
    s.upstream.push("library/dk-tls", "1", &s.docker).await;
    // A Docker Hub name: dockerd asks its mirror, berth (nothing else is reachable here).
    dockerd.docker(&["pull", "--quiet", "dk-tls:1"]);
    let digests = dockerd.docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        "dk-tls:1",
    ]);
    assert!(digests.contains(&s.docker.manifest.digest), "{digests}");

    let out = dockerd.docker(&["login", "-u", "alice", "-p", "alice-pw", &berth.addr]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("rootfs.tar");
    std::fs::write(
        &tar,
        images::tar_with_file("data.bin", &images::random_bytes(121, MIB)),
    )
    .unwrap();
    let target = format!("{}/team/docker-tls:1", berth.addr);
    dockerd.docker(&["import", tar.to_str().unwrap(), &target]);
    let pushed = dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &target]);
    dockerd.docker(&["push", "--quiet", &target]);
    dockerd.docker(&["rmi", &target]);
    dockerd.docker(&["pull", "--quiet", &target]);
    let pulled = dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &target]);
    dockerd.docker(&["logout", &berth.addr]);
    assert_eq!(pushed, pulled, "the image id (its config digest) changed");
    // The push went over TLS into berth: its token service saw alice.
    assert!(berth.log().contains("team/docker-tls"), "{}", berth.log());
}

#[tokio::test]
async fn client_certificates_signed_by_the_client_ca_are_required() {
    let s = seeded().await;
    let (ca, _) = Ca::new("server");
    let (clients, _) = Ca::new("clients");
    let (strangers, _) = Ca::new("strangers");
    let extra = format!("tls_client_ca = \"{}\"\n", clients.ca_file.display());
    let berth = tls_mirror(&ca, &s.upstream.url(), &extra);
    let url = format!("{}/v2/library/oci/manifests/1", berth.url);
    let with = |issuer: Option<&Ca>| {
        let mut builder = ca.client_builder();
        if let Some(issuer) = issuer {
            let issued = issuer.client("builder");
            let pem = format!("{}{}", issued.cert_pem, issued.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };
    for (name, client) in [
        ("no certificate", with(None)),
        ("a stranger's", with(Some(&strangers))),
    ] {
        let result = async { client.get(&url).send().await?.bytes().await }.await;
        assert!(result.is_err(), "{name} was served");
    }
    let response = with(Some(&clients)).get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_fingerprint(&response).len(), 64);
    assert_eq!(
        sha256(&response.bytes().await.unwrap()),
        s.oci.manifest.digest
    );
}

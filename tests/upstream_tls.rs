//! Upstreams over TLS with a private CA (`ca_file`), with mutual TLS (`client_certificate`,
//! `client_key`), unverified (`insecure`), and with a cap on requests in flight
//! (`max_concurrent_requests`). The upstream is a real Distribution (`docker-registry`) serving
//! TLS itself; skopeo pulls through a real berth.

mod common;

use std::path::Path;

use common::gauge::GaugeProxy;
use common::images::{self, Flavor, Image};
use common::pki::{PrivateCa, ServeTls};
use common::upstream::{Options, UpstreamRegistry, SEEDER};
use common::{assert_dir_matches, config_for, try_pull, Berth};

const MIB: usize = 1024 * 1024;

fn grants() -> Vec<common::upstream::Grant> {
    vec![(SEEDER.0, SEEDER.1, "", "pull,push,delete")]
}

/// An upstream on TLS with a certificate from `ca`, requiring client certificates from
/// `client_ca` when given, seeded with `library/tls:1`.
async fn tls_upstream(
    dir: &Path,
    ca: &PrivateCa,
    client_ca: Option<&PrivateCa>,
) -> (UpstreamRegistry, Image) {
    let tls = ServeTls {
        ca_pem: ca.pem(),
        server: ca.server(dir, "server"),
        client_ca: client_ca.map(|c| c.write(dir, "client-ca.pem")),
        client: client_ca.map(|c| c.client(dir, "seeder", "seeder")),
    };
    let upstream = UpstreamRegistry::start_with(
        grants(),
        Options {
            tls: Some(tls),
            direct_blobs: true,
        },
    );
    let image = images::image(Flavor::Oci, 61, &[2 * MIB, MIB / 2], "amd64");
    upstream.push("library/tls", "1", &image).await;
    (upstream, image)
}

fn pull_matches(berth: &Berth, image: &Image) {
    let dest = try_pull(berth, "library/tls:1", None)
        .unwrap_or_else(|e| panic!("pull failed: {e}\nberth log:\n{}", berth.log()));
    assert_dir_matches(dest.path(), image);
}

fn check_config(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[actix_rt::test]
async fn private_ca_upstream_with_ca_file_without_it_and_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let ca = PrivateCa::generate("Example Internal CA");
    let (upstream, image) = tls_upstream(dir.path(), &ca, None).await;
    let ca_file = ca.write(dir.path(), "upstream-ca.pem");

    // Trusting the private CA: the pull works, byte for byte.
    let trusted = Berth::start(&config_for(
        &upstream.url(),
        "5m",
        &format!("ca_file = {:?}\n", ca_file.display().to_string()),
    ));
    pull_matches(&trusted, &image);
    assert!(upstream.blob_gets(&["library/tls"]) >= 2);
    assert!(!trusted.log().contains("insecure"), "{}", trusted.log());

    // Public roots only: the handshake fails, and berth's log says it was the certificate.
    let untrusting = Berth::start(&config_for(&upstream.url(), "5m", ""));
    let error = try_pull(&untrusting, "library/tls:1", None).err();
    assert!(error.is_some(), "the pull must fail without ca_file");
    let log = untrusting.log();
    assert!(
        log.contains("certificate") && log.contains("UnknownIssuer"),
        "berth's log names no certificate error:\n{log}"
    );

    // Unverified: works, and says so loudly at start and in check-config.
    let config = config_for(&upstream.url(), "5m", "insecure = true\n");
    let insecure = Berth::start(&config);
    let log = insecure.log();
    assert!(
        log.contains("WARN") && log.contains("\"docker.io\"") && log.contains("NOT verified"),
        "no startup warning:\n{log}"
    );
    pull_matches(&insecure, &image);
    let checked = check_config(&config);
    assert!(
        checked.starts_with("# WARNING: upstream \"docker.io\"")
            && checked.contains("NOT verified"),
        "{checked}"
    );
    assert!(!check_config(&config_for(&upstream.url(), "5m", "")).contains("WARNING"));
}

#[actix_rt::test]
async fn upstream_requiring_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = PrivateCa::generate("Example Internal CA");
    let clients = PrivateCa::generate("Example Client CA");
    let (upstream, image) = tls_upstream(dir.path(), &ca, Some(&clients)).await;
    let ca_file = ca.write(dir.path(), "upstream-ca.pem");
    let trust = format!("ca_file = {:?}\n", ca_file.display().to_string());

    let anonymous = Berth::start(&config_for(&upstream.url(), "5m", &trust));
    assert!(
        try_pull(&anonymous, "library/tls:1", None).is_err(),
        "the upstream requires a client certificate"
    );

    // A certificate from another CA is refused as well.
    let stranger = PrivateCa::generate("Someone Else").client(dir.path(), "stranger", "berth");
    let mut wrong = Berth::start(&config_for(
        &upstream.url(),
        "5m",
        &format!(
            "{trust}client_certificate = {:?}\nclient_key = {:?}\n",
            stranger.cert.display().to_string(),
            stranger.key.display().to_string()
        ),
    ));
    assert!(try_pull(&wrong, "library/tls:1", None).is_err());
    wrong.stop();

    let issued = clients.client(dir.path(), "berth", "berth");
    let berth = Berth::start(&config_for(
        &upstream.url(),
        "5m",
        &format!(
            "{trust}client_certificate = {:?}\nclient_key = {:?}\n",
            issued.cert.display().to_string(),
            issued.key.display().to_string()
        ),
    ));
    pull_matches(&berth, &image);
}

#[test]
fn a_missing_or_unreadable_tls_file_stops_the_start_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM at all\n").unwrap();
    // A certificate with a key that is not its own.
    let ca = PrivateCa::generate("CA");
    let issued = ca.client(dir.path(), "client", "berth");
    let other_key = ca.client(dir.path(), "other", "other").key;
    let url = "https://127.0.0.1:9";
    for (extra, key) in [
        (
            format!("ca_file = {:?}", missing.display().to_string()),
            "ca_file",
        ),
        (
            format!("ca_file = {:?}", junk.display().to_string()),
            "ca_file",
        ),
        (
            format!(
                "client_certificate = {:?}\nclient_key = {:?}",
                junk.display().to_string(),
                junk.display().to_string()
            ),
            "client_certificate",
        ),
        (
            format!(
                "client_certificate = {:?}\nclient_key = {:?}",
                issued.cert.display().to_string(),
                other_key.display().to_string()
            ),
            "client_key",
        ),
    ] {
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, config_for(url, "5m", &extra)).unwrap();
        for command in ["check-config", "serve"] {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                .arg("--config")
                .arg(&path)
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg(command)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success(),
                "{command} with {extra}: {output:?}"
            );
            assert!(stderr.contains(key), "{command} with {extra}: {stderr}");
        }
    }
}

/// Three pulls at once of images with different blobs, through berth with `extra` in its
/// upstream section; the most requests the upstream saw in flight at once.
fn concurrent_pulls(upstream: &UpstreamRegistry, images: &[Image], extra: &str) -> (usize, usize) {
    let gauge = GaugeProxy::start(&upstream.url());
    let berth = Berth::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info,berth=debug\"\n[[upstreams]]\nname = \"docker.io\"\nurl = \"{}\"\nread_timeout = \"60s\"\n{extra}",
        gauge.url()
    ));
    std::thread::scope(|scope| {
        let pulls: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let berth = &berth;
                scope.spawn(move || {
                    let dest = try_pull(berth, &format!("library/many-{i}:1"), None)
                        .unwrap_or_else(|e| panic!("pull {i}: {e}\nberth log:\n{}", berth.log()));
                    assert_dir_matches(dest.path(), image);
                })
            })
            .collect();
        for pull in pulls {
            pull.join().unwrap();
        }
    });
    (gauge.max_in_flight(), gauge.total())
}

#[actix_rt::test]
async fn max_concurrent_requests_caps_what_is_in_flight_upstream() {
    let upstream = UpstreamRegistry::start_with(
        grants(),
        Options {
            tls: None,
            direct_blobs: true,
        },
    );
    let images: Vec<Image> = (0..3)
        .map(|i| images::image(Flavor::Oci, 70 + i, &[MIB, MIB], "amd64"))
        .collect();
    for (i, image) in images.iter().enumerate() {
        upstream
            .push(&format!("library/many-{i}"), "1", image)
            .await;
    }
    let blobs = images.iter().map(|i| i.blobs.len()).sum::<usize>();

    // Without a cap the pulls overlap upstream: the measurement can see it.
    let (uncapped, _) = concurrent_pulls(&upstream, &images, "");
    assert!(uncapped > 1, "uncapped pulls never overlapped upstream");

    let (capped, total) = concurrent_pulls(&upstream, &images, "max_concurrent_requests = 1\n");
    assert!(
        total >= blobs,
        "only {total} requests upstream for {blobs} blobs"
    );
    assert_eq!(capped, 1, "more than one request in flight upstream");
    eprintln!(
        "in flight upstream at most: {uncapped} uncapped, {capped} capped ({total} requests)"
    );
}

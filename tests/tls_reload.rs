//! Reloading berth's certificate without dropping connections: a pull that is under way when
//! the pair is swapped finishes on its connection, byte for byte, while new connections get the
//! new certificate, whether the swap is announced with SIGHUP or only written to the files; a
//! pair that does not load is refused and the old one kept. Also the warnings about a realm that
//! would be http:// behind a proxy berth does not trust.

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use common::ca::{served_fingerprint, Ca};
use common::images::{self, sha256, Flavor};
use common::{config_for, seeded, Berth};

const MIB: usize = 1024 * 1024;

/// The fingerprint a brand-new connection to `berth` is served.
async fn fresh_fingerprint(ca: &Ca, berth: &Berth) -> String {
    let client = ca.client_builder().build().unwrap();
    let response = client
        .get(format!("{}/v2/", berth.url))
        .send()
        .await
        .unwrap();
    served_fingerprint(&response)
}

/// Waits (up to `within`) until new connections are served `expected`.
async fn wait_for_fingerprint(ca: &Ca, berth: &Berth, expected: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let served = fresh_fingerprint(ca, berth).await;
        if served == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "new connections still get {served}, not {expected}; log:\n{}",
            berth.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hangup(berth: &Berth) {
    let pid = rustix::process::Pid::from_raw(berth.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
}

#[tokio::test]
async fn a_certificate_swap_during_a_long_pull_does_not_break_it() {
    let s = seeded().await;
    let (ca, first) = Ca::new("reload");
    let config = config_for(&s.upstream.url(), "5m", "").replacen(
        "[server]\n",
        &format!("[server]\n{}", ca.server_config()),
        1,
    );
    let berth = Berth::start(&config);
    let image = images::image(Flavor::Oci, 130, &[48 * MIB], "amd64");
    s.upstream.push("library/big-tls", "1", &image).await;
    let layer = image
        .all_blobs()
        .into_iter()
        .max_by_key(|b| b.data.len())
        .unwrap();
    let url = format!("{}/v2/library/big-tls/blobs/{}", berth.url, layer.digest);
    // Cached first, so the slow read below is berth's own serving, not upstream's pace.
    let warm = ca.client_builder().build().unwrap();
    let body = warm.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&body), layer.digest);
    assert_eq!(fresh_fingerprint(&ca, &berth).await, first.fingerprint);

    // A slow reader: 1 MiB taken, then the pair swapped under it.
    let slow = ca.client_builder().http1_only().build().unwrap();
    let response = slow.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_fingerprint(&response), first.fingerprint);
    let mut stream = response.bytes_stream();
    let mut received = Vec::with_capacity(layer.data.len());
    while received.len() < MIB {
        received.extend_from_slice(&stream.next().await.unwrap().unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let second = ca.server();
    assert_ne!(second.fingerprint, first.fingerprint);
    ca.install(&second.cert_pem, &second.key_pem);
    hangup(&berth);
    wait_for_fingerprint(&ca, &berth, &second.fingerprint, Duration::from_secs(5)).await;
    assert!(
        received.len() < layer.data.len() / 2,
        "the pull was not under way during the swap ({} of {} bytes read)",
        received.len(),
        layer.data.len()
    );
    // The old connection goes on to the end, unbroken.
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.expect("the pull broke after the swap"));
    }
    assert_eq!(received.len(), layer.data.len());
    assert_eq!(
        sha256(&received),
        layer.digest,
        "bytes changed across the swap"
    );

    // Written to the files alone (no signal), the next pair is picked up by polling.
    let third = ca.server();
    ca.install(&third.cert_pem, &third.key_pem);
    wait_for_fingerprint(&ca, &berth, &third.fingerprint, Duration::from_secs(15)).await;

    // A certificate with somebody else's key: refused, logged, and the served pair kept.
    let (fourth, fifth) = (ca.server(), ca.server());
    ca.install(&fourth.cert_pem, &fifth.key_pem);
    hangup(&berth);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !berth.log().contains("TLS certificate not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            berth.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fresh_fingerprint(&ca, &berth).await, third.fingerprint);
    // Fixed again, the next reload takes it.
    ca.install(&fifth.cert_pem, &fifth.key_pem);
    hangup(&berth);
    wait_for_fingerprint(&ca, &berth, &fifth.fingerprint, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn plain_http_beyond_loopback_and_untrusted_forwarded_proto_are_warned_about() {
    let s = seeded().await;
    let config = config_for(&s.upstream.url(), "5m", "").replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"0.0.0.0:0\"",
        1,
    );
    let berth = Berth::start(&config);
    let port = berth.addr.rsplit(':').next().unwrap().to_owned();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        berth.log().contains("the token realm will be http://"),
        "no warning about the realm:\n{}",
        berth.log()
    );
    // A peer that is not a trusted proxy claims https: the realm stays http://, and the log
    // says why, once for that peer.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let v2 = client
            .get(format!("{base}/v2/"))
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .unwrap();
        let challenge = v2.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.contains("realm=\"http://"), "{challenge}");
    }
    let warnings = berth
        .log()
        .matches("X-Forwarded-Proto from a peer not in server.trusted_proxies")
        .count();
    assert_eq!(warnings, 1, "{}", berth.log());

    // On loopback, no realm warning.
    let quiet = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    assert!(!quiet.log().contains("the token realm will be http://"));
}

/// `systemctl reload berth` sends SIGHUP whatever the configuration: a berth without TLS
/// must take it and go on serving, not die (and be restarted by the unit).
#[tokio::test]
async fn a_plain_http_berth_takes_sighup_and_goes_on() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    hangup(&berth);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !berth.log().contains("SIGHUP: nothing to reload") {
        assert!(
            Instant::now() < deadline,
            "no SIGHUP line:\n{}",
            berth.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = reqwest::get(format!("{}/healthz", berth.url))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", berth.log());
}

/// `server.tls_client_ca` is re-read like the pair: after the CA file is replaced (atomically,
/// as a deploy tool does) and SIGHUP, new connections need a certificate from the new CA and
/// one from the old CA is refused; a CA file that does not load keeps the one in use.
#[tokio::test]
async fn a_replaced_client_ca_is_required_after_a_reload() {
    let s = seeded().await;
    let (ca, _) = Ca::new("server");
    let (old_clients, _) = Ca::new("old clients");
    let (new_clients, _) = Ca::new("new clients");
    let client_ca = ca.dir.path().join("clients.crt");
    std::fs::copy(&old_clients.ca_file, &client_ca).unwrap();
    let server = format!(
        "[server]\n{}tls_client_ca = \"{}\"\n",
        ca.server_config(),
        client_ca.display()
    );
    let berth =
        Berth::start(&config_for(&s.upstream.url(), "5m", "").replacen("[server]\n", &server, 1));
    let url = format!("{}/v2/library/oci/manifests/1", berth.url);
    // A new connection each time, so each one is a new handshake.
    let served = |issuer: &Ca| {
        let issued = issuer.client("puller");
        let pem = format!("{}{}", issued.cert_pem, issued.key_pem);
        let client = ca
            .client_builder()
            .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let url = url.clone();
        async move {
            match client.get(&url).send().await {
                Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    };
    let replace = |pem: &[u8]| {
        let next = ca.dir.path().join("clients.crt.new");
        std::fs::write(&next, pem).unwrap();
        std::fs::rename(&next, &client_ca).unwrap();
        hangup(&berth);
    };
    assert!(served(&old_clients).await);
    assert!(!served(&new_clients).await);

    replace(&std::fs::read(&new_clients.ca_file).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served(&new_clients).await {
        assert!(
            Instant::now() < deadline,
            "the new client CA was not taken; log:\n{}",
            berth.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !served(&old_clients).await,
        "the old client CA still admits"
    );

    replace(b"not a certificate\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !berth.log().contains("TLS client CA not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            berth.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served(&new_clients).await,
        "a bad CA file dropped the one in use"
    );
    assert!(!served(&old_clients).await);
}

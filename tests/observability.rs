//! Observability end to end: JSON log lines, access and audit records, labelled metrics and
//! histograms, `/readyz`, the metrics listener, and the drain on SIGTERM, each against a real
//! berth process driven by skopeo or reqwest.

mod common;

use std::time::{Duration, Instant};

use common::fault::{FaultyUpstream, Mode};
use common::images::{self, Flavor};
use common::private::{creds, skopeo_push, AuthFiles};
use common::{config_for, metric_in, skopeo_ok, Berth};
use serde_json::Value;

const MIB: usize = 1024 * 1024;

/// Every line berth wrote to stderr, each parsed as JSON (the test fails on one that is not).
fn json_lines(berth: &Berth) -> Vec<Value> {
    berth
        .log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

fn records<'a>(lines: &'a [Value], target: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["target"] == target).collect()
}

async fn metrics_text(url: &str) -> String {
    let response = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn value(text: &str, series: &str) -> u64 {
    metric_in(text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"))
}

#[tokio::test]
async fn json_logs_carry_access_and_audit_records() {
    let files = AuthFiles::create();
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    let config = format!("{}{}", files.config(""), config_for(&closed, "5m", "")).replace(
        "level = \"info,berth=debug\"",
        "level = \"info,berth=debug\"\nformat = \"json\"",
    );
    let berth = Berth::start(&config);
    let image = images::image(Flavor::Oci, 70, &[MIB, MIB / 2], "amd64");

    // A push by alice, a pull by alice, a delete by carol, a failed login by bob.
    let pushed = skopeo_push(&berth, &image, "team/app:1", "alice");
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let dest = tempfile::tempdir().unwrap();
    skopeo_ok(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds("alice"),
        &format!("docker://{}/team/app:1", berth.addr),
        &format!("dir:{}", dest.path().display()),
    ]);
    let refused = reqwest::Client::new()
        .get(format!("{}/token", berth.url))
        .query(&[
            ("service", "berth-test"),
            ("scope", "repository:team/app:pull"),
        ])
        .basic_auth("bob", Some("not-bobs-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let request_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(request_id.len(), 16, "{request_id}");
    skopeo_ok(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &creds("carol"),
        &format!("docker://{}/team/app:1", berth.addr),
    ]);

    let lines = json_lines(&berth);
    assert!(lines.len() > 10, "{} lines", lines.len());
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "{key} missing: {line}");
        }
    }

    // Access records: the pull's blob GETs, with skopeo's user agent and alice as the user.
    let access = records(&lines, "berth::access");
    let blob_gets: Vec<_> = access
        .iter()
        .filter(|r| {
            r["method"] == "GET"
                && r["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("/v2/team/app/blobs/sha256:")
        })
        .collect();
    assert!(blob_gets.len() >= 3, "{access:#?}");
    let bytes: u64 = blob_gets.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert!(bytes >= (MIB + MIB / 2) as u64, "{bytes} bytes logged");
    for record in &blob_gets {
        assert_eq!(record["status"], 200, "{record}");
        assert_eq!(record["user"], "alice", "{record}");
        assert_eq!(record["client"], "127.0.0.1", "{record}");
        assert!(
            record["user_agent"].as_str().unwrap().contains("skopeo"),
            "{record}"
        );
        assert!(record["duration_ms"].as_f64().is_some(), "{record}");
        assert_eq!(record["request_id"].as_str().unwrap().len(), 16, "{record}");
    }
    let ids: std::collections::HashSet<_> = access.iter().map(|r| &r["request_id"]).collect();
    assert_eq!(ids.len(), access.len(), "request ids repeat");
    let token_record = access
        .iter()
        .find(|r| r["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no access record for {request_id}"));
    assert_eq!(token_record["path"], "/token");
    assert_eq!(token_record["status"], 401);

    // Audit records: the push, the delete, the logins.
    let audit = records(&lines, "berth::audit");
    let push = audit
        .iter()
        .find(|r| r["action"] == "push" && r["reference"] == "1")
        .unwrap_or_else(|| panic!("no push record: {audit:#?}"));
    assert_eq!(push["repository"], "team/app");
    assert_eq!(push["user"], "alice");
    assert_eq!(push["client"], "127.0.0.1");
    assert_eq!(push["digest"], image.manifest.digest.as_str());
    let delete = audit
        .iter()
        .find(|r| r["action"] == "delete")
        .unwrap_or_else(|| panic!("no delete record: {audit:#?}"));
    assert_eq!(delete["kind"], "manifest");
    assert_eq!(delete["user"], "carol");
    assert_eq!(delete["reference"], image.manifest.digest.as_str());
    let failed = audit
        .iter()
        .find(|r| r["action"] == "login" && r["result"] == "failure")
        .unwrap_or_else(|| panic!("no failed login: {audit:#?}"));
    assert_eq!(failed["user"], "bob");
    assert!(!failed["reason"].as_str().unwrap().is_empty());
    assert!(audit
        .iter()
        .any(|r| r["action"] == "login" && r["result"] == "success" && r["user"] == "carol"));

    // And the counters moved with them.
    let text = metrics_text(&berth.url).await;
    assert!(value(&text, "berth_pushes_total") >= 1);
    assert_eq!(value(&text, "berth_deletes_total{kind=\"manifest\"}"), 1);
    assert_eq!(value(&text, "berth_logins_total{result=\"failure\"}"), 1);
    assert!(value(&text, "berth_logins_total{result=\"success\"}") >= 3);
    assert!(value(&text, "berth_token_requests_total{grant=\"password\"}") >= 4);
    assert!(
        value(
            &text,
            "berth_http_requests_total{endpoint=\"token\",status=\"4xx\"}"
        ) >= 1
    );
    assert!(
        value(
            &text,
            "berth_http_requests_total{endpoint=\"upload\",status=\"2xx\"}"
        ) >= 2
    );
}

#[tokio::test]
async fn metrics_carry_labels_and_histograms_after_a_pull() {
    let seeded = common::seeded().await;
    let berth = Berth::start(&config_for(&seeded.upstream.url(), "5m", ""));
    let image = &seeded.docker;
    let dest = tempfile::tempdir().unwrap();
    common::skopeo_pull(&berth, "library/docker:1", dest.path(), false);
    let text = metrics_text(&berth.url).await;
    let blobs = image.blobs.len() as u64; // the config and the layers
    assert_eq!(
        value(
            &text,
            "berth_cache_requests_total{kind=\"blob\",result=\"miss\"}"
        ),
        blobs,
        "{text}"
    );
    assert!(
        value(
            &text,
            "berth_upstream_requests_total{upstream=\"docker.io\",result=\"ok\"}"
        ) > blobs
    );
    assert!(
        value(
            &text,
            "berth_http_requests_total{endpoint=\"blob\",status=\"2xx\"}"
        ) >= blobs
    );
    assert!(
        value(
            &text,
            "berth_http_request_duration_seconds_count{endpoint=\"blob\"}"
        ) >= blobs
    );
    assert!(
        value(
            &text,
            "berth_http_request_duration_seconds_bucket{endpoint=\"manifest\",le=\"+Inf\"}"
        ) >= 1
    );
    // The old unlabelled names stay.
    assert_eq!(value(&text, "berth_blob_cache_misses_total"), blobs);
    berth.settle();
    let text = metrics_text(&berth.url).await;
    // The manifest is kept as a blob too.
    assert_eq!(value(&text, "berth_stored_blobs"), blobs + 1, "{text}");
    assert!(
        value(&text, "berth_stored_bytes")
            >= image.blobs.iter().map(|b| b.data.len() as u64).sum::<u64>()
    );
    // By kind: the one manifest and the layers and config, adding up to the totals.
    let kind = |family: &str, kind: &str| value(&text, &format!("{family}{{kind=\"{kind}\"}}"));
    assert_eq!(kind("berth_stored_blobs_by_kind", "manifest"), 1, "{text}");
    assert_eq!(kind("berth_stored_blobs_by_kind", "blob"), blobs, "{text}");
    for family in ["blobs", "bytes"] {
        let by_kind = format!("berth_stored_{family}_by_kind");
        assert_eq!(
            kind(&by_kind, "manifest") + kind(&by_kind, "blob"),
            value(&text, &format!("berth_stored_{family}")),
            "{text}"
        );
    }
    assert!(kind("berth_stored_bytes_by_kind", "manifest") > 0);
    assert_eq!(value(&text, "berth_fills_in_flight"), 0);
    assert_eq!(value(&text, "berth_uploads_open"), 0);

    // A second pull hits the cache.
    let again = tempfile::tempdir().unwrap();
    common::skopeo_pull(&berth, "library/docker:1", again.path(), false);
    assert!(
        berth
            .metric("berth_cache_requests_total{kind=\"blob\",result=\"hit\"}")
            .await
            >= blobs
    );
    // The text access log names skopeo too.
    let log = berth.log();
    assert!(
        log.lines()
            .any(|l| l.contains("berth::access") && l.contains("user_agent=skopeo")),
        "{log}"
    );
}

#[tokio::test]
async fn readyz_answers_on_both_listeners_and_reports_the_shared_store() {
    let seeded = common::seeded().await;
    let health_port = common::upstream::free_port();
    let berth = Berth::start(&config_for(&seeded.upstream.url(), "5m", "").replace(
        "[server]\n",
        &format!("[server]\nhealth_listen = \"127.0.0.1:{health_port}\"\n"),
    ));
    for base in [berth.url.clone(), format!("http://127.0.0.1:{health_port}")] {
        let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(response.status(), 200, "{base}");
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body["ready"], true, "{body}");
        assert!(
            body["checks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["ok"] == true),
            "{body}"
        );
    }

    // A node whose shared store is a closed port is alive, but not ready.
    let files = AuthFiles::create();
    let closed = common::upstream::free_port();
    let config = format!(
        "{}{}[storage.s3]\nendpoint = \"http://127.0.0.1:{closed}\"\nbucket = \"b\"\nregion = \"garage\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
        files.config(""),
        config_for(&seeded.upstream.url(), "5m", "")
    );
    let unready = Berth::start(&config);
    assert_eq!(
        reqwest::get(format!("{}/healthz", unready.url))
            .await
            .unwrap()
            .status(),
        200
    );
    let started = Instant::now();
    let response = reqwest::get(format!("{}/readyz", unready.url))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a probe waited"
    );
    assert_eq!(response.status(), 503);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["ready"], false, "{body}");
    let shared = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "shared_store")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(shared["ok"], false, "{body}");
    assert!(!shared["detail"].as_str().unwrap().is_empty(), "{body}");
}

#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_main_port() {
    let seeded = common::seeded().await;
    let port = common::upstream::free_port();
    let berth = Berth::start(&config_for(&seeded.upstream.url(), "5m", "").replace(
        "[server]\n",
        &format!("[server]\nmetrics_listen = \"127.0.0.1:{port}\"\n"),
    ));
    let main = reqwest::get(format!("{}/metrics", berth.url))
        .await
        .unwrap();
    assert_eq!(main.status(), 404);
    let text = metrics_text(&format!("http://127.0.0.1:{port}")).await;
    // The 404 above was counted; the metrics port serves nothing but /metrics.
    assert!(
        value(
            &text,
            "berth_http_requests_total{endpoint=\"other\",status=\"4xx\"}"
        ) >= 1
    );
    let v2 = reqwest::get(format!("http://127.0.0.1:{port}/v2/"))
        .await
        .unwrap();
    assert_eq!(v2.status(), 404);
    assert_eq!(
        reqwest::get(format!("{}/readyz", berth.url))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sigterm_lets_a_slow_download_finish_within_the_drain_time() {
    let upstream = FaultyUpstream::start();
    let blob: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
    let digest = upstream.put_blob(&blob);
    // 16 chunks of 64 KiB, 150 ms apart: about 2.4 s.
    upstream.set_mode(Mode::Slow(Duration::from_millis(150)));
    let mut berth = Berth::start(
        &config_for(&upstream.url(), "5m", "")
            // With every side listener, which must not cut the drain short either.
            .replace(
                "[server]\n",
                "[server]\nshutdown_timeout = \"20s\"\nhealth_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n",
            ),
    );
    let mut response = reqwest::get(format!("{}/v2/library/x/blobs/{digest}", berth.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.chunk().await.unwrap().unwrap().to_vec();
    let signalled = Instant::now();
    berth.terminate();
    // Stopped accepting: a new connection is refused while the download goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        reqwest::get(format!("{}/healthz", berth.url))
            .await
            .is_err(),
        "still accepting after SIGTERM"
    );
    while let Some(chunk) = response.chunk().await.unwrap_or_else(|e| {
        panic!(
            "download cut after {} bytes: {e}\n{}",
            body.len(),
            berth.log()
        )
    }) {
        body.extend_from_slice(&chunk);
    }
    assert!(body == blob, "{} bytes of {}", body.len(), blob.len());
    let status = tokio::task::spawn_blocking(move || {
        let status = berth.wait_exit();
        (status, berth)
    })
    .await
    .unwrap();
    let (status, mut berth) = status;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(20));
    // The fill was committed and the index flushed: served from disk after a restart.
    upstream.set_mode(Mode::Normal);
    let gets = FaultyUpstream::count(&upstream.blob_gets);
    berth.relaunch();
    let again = common::get_bytes(
        &reqwest::Client::new(),
        &format!("{}/v2/library/x/blobs/{digest}", berth.url),
    )
    .await;
    assert!(again == blob);
    assert_eq!(FaultyUpstream::count(&upstream.blob_gets), gets);
}

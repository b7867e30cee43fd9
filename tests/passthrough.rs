//! Token passthrough: a client's own upstream credentials, presented to berth's token endpoint,
//! pull content that upstream serves only with credentials. The upstream is a real
//! `docker-registry` whose token issuer lets `priv` pull `private/*`.

mod common;

use base64::Engine as _;
use common::images::sha256;
use common::private::AuthFiles;
use common::{
    config_for, seeded, skopeo, skopeo_inspect_raw, try_pull, Berth, OTHER_USER, PRIVATE_USER,
};

fn creds(user: (&str, &str)) -> String {
    format!("{}:{}", user.0, user.1)
}

/// `skopeo inspect --raw` through berth; the manifest bytes on success.
fn inspect(berth: &Berth, image: &str, creds: Option<&str>) -> Result<Vec<u8>, String> {
    let output = skopeo_inspect_raw(berth, image, creds);
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn credentials_pass_through_and_guarded_content_stays_guarded() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let repo = ["private/secret"];
    let priv_creds = creds(PRIVATE_USER);

    // Anonymous: refused, with a challenge to log in.
    assert!(inspect(&berth, "private/secret:1", None).is_err());
    // With the upstream account: the whole image, byte for byte.
    let dest = try_pull(&berth, "private/secret:1", Some(&priv_creds))
        .unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
    common::assert_dir_matches(dest.path(), &s.oci);
    // Prefetch ran with the client's own credentials: upstream refused none of its fetches.
    berth
        .wait_for_metric("berth_prefetched_blobs_total", 1)
        .await;
    assert_eq!(berth.metric("berth_prefetch_failures_total").await, 0);
    // Prefetch may still be fetching its last blobs: count once they are in. Counted by this
    // berth, not by the upstream, which other tests of this binary pull the same repository from.
    berth.settle();
    let gets = berth.metric("berth_upstream_blob_gets_total").await;
    assert!(gets > 0 && s.upstream.blob_gets(&repo) > 0);

    // Again: from the cache, no blob GET upstream.
    let dest = try_pull(&berth, "private/secret:1", Some(&priv_creds)).unwrap();
    common::assert_dir_matches(dest.path(), &s.oci);
    assert_eq!(
        berth.metric("berth_upstream_blob_gets_total").await,
        gets,
        "the cached pull fetched blobs upstream"
    );

    // Cached, but still refused without credentials, with wrong ones, and to another account.
    assert!(
        inspect(&berth, "private/secret:1", None).is_err(),
        "served guarded content anonymously"
    );
    assert!(try_pull(&berth, "private/secret:1", None).is_err());
    assert!(inspect(&berth, "private/secret:1", Some("priv:wrong")).is_err());
    assert!(try_pull(&berth, "private/secret:1", Some(&creds(OTHER_USER))).is_err());
    // A blob of the guarded repository, asked for directly without a token.
    let layer = &s.oci.blobs[1].digest;
    let direct = reqwest::get(format!("{}/v2/private/secret/blobs/{layer}", berth.url))
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
    let challenge = direct.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}/token\"", berth.url)),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:private/secret:pull\""),
        "{challenge}"
    );

    // Public repositories stay anonymous, and credentials appear in no log.
    assert!(inspect(&berth, "library/oci:1", None).is_ok());
    assert!(
        !berth.log().contains(PRIVATE_USER.1),
        "a password reached the log"
    );
}

#[tokio::test]
async fn two_users_at_once_each_get_what_upstream_grants_them() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let allowed = creds(PRIVATE_USER);
    let refused = creds(OTHER_USER);
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| try_pull(&berth, "private/secret:1", Some(&allowed)));
        let b = scope.spawn(|| try_pull(&berth, "private/secret:1", Some(&refused)));
        (a.join().unwrap(), b.join().unwrap())
    });
    let dest = a.unwrap_or_else(|e| panic!("{e}"));
    common::assert_dir_matches(dest.path(), &s.oci);
    assert!(
        b.is_err(),
        "an account upstream refuses got guarded content"
    );
}

#[tokio::test]
async fn podman_passes_credentials_through() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let podman = common::Podman::new();
    let reference = format!("{}/private/secret:1", berth.addr);
    podman.run(
        &berth,
        &[
            "pull",
            "--quiet",
            "--tls-verify=false",
            "--creds",
            &creds(PRIVATE_USER),
            &reference,
        ],
    );
    let digest = podman.run(
        &berth,
        &["image", "inspect", "--format", "{{.Digest}}", &reference],
    );
    assert_eq!(digest, s.oci.manifest.digest);
}

#[tokio::test]
async fn site_credentials_open_guarded_content_to_every_client() {
    let s = seeded().await;
    let site = format!(
        "username = \"{}\"\npassword = \"{}\"\n",
        PRIVATE_USER.0, PRIVATE_USER.1
    );
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", &site));
    let raw = inspect(&berth, "private/secret:1", None)
        .unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
    assert_eq!(sha256(&raw), s.oci.manifest.digest);
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(
            berth
                .data_dir
                .with_extension(format!("{}.toml", std::process::id())),
        )
        .arg("check-config")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        !shown.is_empty() && !shown.contains(PRIVATE_USER.1),
        "{shown}"
    );
}

#[tokio::test]
async fn logging_in_to_the_mirror_checks_the_upstream_credentials() {
    let s = seeded().await;
    let berth = Berth::start(&config_for(&s.upstream.url(), "5m", ""));
    let auth = tempfile::tempdir().unwrap();
    let authfile = auth.path().join("auth.json");
    let login = |password: &str| {
        skopeo(&[
            "login",
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
            "--username",
            PRIVATE_USER.0,
            "--password",
            password,
            &berth.addr,
        ])
    };
    assert!(
        !login("wrong").status.success(),
        "a wrong password logged in"
    );
    let ok = login(PRIVATE_USER.1);
    assert!(
        ok.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        berth.log()
    );
    // The stored login then opens guarded content.
    let output = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        authfile.to_str().unwrap(),
        &format!("docker://{}/private/secret:1", berth.addr),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(sha256(&output.stdout), s.oci.manifest.digest);
}

#[tokio::test]
async fn a_repository_upstream_could_not_classify_opens_once_upstream_answers() {
    let s = seeded().await;
    let repo = "library/flaky";
    s.upstream.push(repo, "1", &s.oci).await;
    let berth = Berth::start(&config_for(
        &s.upstream.url(),
        "5m",
        "[mirror]\nguard_ttl = \"1s\"\n",
    ));
    // Upstream's token service fails berth's anonymous check of this public repository, while
    // it still serves the client's own account.
    s.upstream.issuer.fail_anonymous(Some(repo));
    let dest = try_pull(&berth, "library/flaky:1", Some(&creds(PRIVATE_USER)))
        .unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
    common::assert_dir_matches(dest.path(), &s.oci);

    // Not knowing whether it is public, berth keeps what that client fetched from anonymous
    // clients (the retry after 1 s fails the same way).
    let refused = inspect(&berth, "library/flaky:1", None);
    assert!(refused.is_err(), "served unclassified content anonymously");

    // Once upstream answers, a request after the retry interval finds the repository public:
    // served anonymously, from the cache.
    s.upstream.issuer.fail_anonymous(None);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let gets = s.upstream.blob_gets(&[repo]);
    let dest = try_pull(&berth, "library/flaky:1", None)
        .unwrap_or_else(|e| panic!("still guarded: {e}\n{}", berth.log()));
    common::assert_dir_matches(dest.path(), &s.oci);
    assert_eq!(
        s.upstream.blob_gets(&[repo]),
        gets,
        "the anonymous pull fetched blobs upstream"
    );
}

/// A token from `berth`'s token endpoint for pull on `repo`, obtained with upstream credentials
/// as a client gets one.
async fn passthrough_token(berth: &Berth, repo: &str, user: (&str, &str)) -> String {
    let response = reqwest::Client::new()
        .get(format!("{}/token", berth.url))
        .query(&[
            ("service", "berth-test"),
            ("scope", &format!("repository:{repo}:pull")),
        ])
        .basic_auth(user.0, Some(user.1))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", berth.log());
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// `skopeo copy` through `berth` presenting `token` as it is (no login of its own).
fn pull_with_token(berth: &Berth, image: &str, token: &str) -> Result<tempfile::TempDir, String> {
    let dest = tempfile::tempdir().unwrap();
    let output = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--retry-times",
        "0",
        "--src-registry-token",
        token,
        &format!("docker://{}/{image}", berth.addr),
        &format!("dir:{}", dest.path().display()),
    ]);
    if output.status.success() {
        Ok(dest)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn a_passthrough_token_from_one_node_pulls_through_another() {
    let s = seeded().await;
    // Two nodes configured with the same signing key, and nothing else in common.
    let files = AuthFiles::create();
    let config = config_for(&s.upstream.url(), "5m", &files.config(""));
    let node1 = Berth::start(&config);
    let node2 = Berth::start(&config);

    // The client logs in through node 1 only: node 2 never sees its credentials.
    let allowed = passthrough_token(&node1, "private/secret", PRIVATE_USER).await;
    let refused = passthrough_token(&node1, "private/secret", OTHER_USER).await;
    assert!(
        !allowed.contains(PRIVATE_USER.1) && !refused.contains(OTHER_USER.1),
        "credentials in a token"
    );
    // With one repository's upstream token sealed in, the token stays well within the 8 KiB
    // request line and header buffers of a load balancer's defaults (nginx's).
    assert!(allowed.len() < 4096, "a {} byte token", allowed.len());

    // Node 2 serves the whole image, byte for byte, to a real client presenting that token.
    let dest = pull_with_token(&node2, "private/secret:1", &allowed)
        .unwrap_or_else(|e| panic!("{e}\nnode 2:\n{}", node2.log()));
    common::assert_dir_matches(dest.path(), &s.oci);
    // And to a plain GET, for the manifest and for a layer (now cached on node 2).
    let client = reqwest::Client::new();
    let get = |path: String, token: &str| {
        client
            .get(format!("{}/v2/private/secret/{path}", node2.url))
            .header("accept", s.oci.manifest.media_type.as_str())
            .bearer_auth(token)
            .send()
    };
    let manifest = get("manifests/1".into(), &allowed).await.unwrap();
    assert_eq!(manifest.status(), 200);
    assert_eq!(
        sha256(&manifest.bytes().await.unwrap()),
        s.oci.manifest.digest
    );
    let layer = &s.oci.blobs[1];
    let blob = get(format!("blobs/{}", layer.digest), &allowed)
        .await
        .unwrap();
    assert_eq!(blob.status(), 200);
    assert_eq!(&blob.bytes().await.unwrap()[..], &layer.data[..]);

    // A token earned with an account upstream refuses pulls nothing through node 2, though
    // node 2 now holds the allowed account's grant and the content.
    assert!(
        pull_with_token(&node2, "private/secret:1", &refused).is_err(),
        "another account's token pulled guarded content"
    );
    for path in ["manifests/1".to_owned(), format!("blobs/{}", layer.digest)] {
        let reply = get(path.clone(), &refused).await.unwrap();
        assert_eq!(reply.status(), 401, "{path}");
    }
    // Nor does one whose sealed grant was altered (its signature breaks first).
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = allowed.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    let mut upg = claims["upg"].as_str().unwrap().to_owned().into_bytes();
    let middle = upg.len() / 2;
    upg[middle] = if upg[middle] == b'A' { b'B' } else { b'A' };
    claims["upg"] = String::from_utf8(upg).unwrap().into();
    let payload = b64.encode(serde_json::to_vec(&claims).unwrap());
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let reply = get("manifests/1".into(), &tampered).await.unwrap();
    assert_eq!(reply.status(), 401);
    for node in [&node1, &node2] {
        assert!(
            !node.log().contains(PRIVATE_USER.1),
            "a password reached a log"
        );
    }
}

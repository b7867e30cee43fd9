//! Private projects end to end: skopeo and podman push and pull through berth's own token
//! service, per role; the push API's edges over raw HTTP.

mod common;

use common::images::{self, sha256, Flavor};
use common::private::{creds, podman_round_trip, skopeo_push, token_string, AuthFiles};
use common::{config_for, skopeo, skopeo_ok, Berth};

const MIB: usize = 1024 * 1024;

/// A berth with `[auth]` and projects, mirroring an upstream that is never reached here.
fn private_berth(files: &AuthFiles) -> Berth {
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    Berth::start(&format!(
        "{}{}",
        files.config(""),
        config_for(&closed, "5m", "")
    ))
}

fn raw_manifest(berth: &Berth, target: &str, user: Option<&str>) -> std::process::Output {
    common::skopeo_inspect_raw(berth, target, user.map(creds).as_deref())
}

#[tokio::test]
async fn skopeo_pushes_and_pulls_images_and_indexes_by_role() {
    let files = AuthFiles::create();
    let berth = private_berth(&files);
    let image = images::image(Flavor::Oci, 50, &[2 * MIB, MIB], "amd64");
    let index = images::multi_arch(Flavor::Oci, 51, &[MIB]);

    // A developer pushes an image and a multi-arch index.
    for (img, target) in [(&image, "team/app:1"), (&index, "team/multi:1")] {
        let output = skopeo_push(&berth, img, target, "alice");
        assert!(
            output.status.success(),
            "push {target}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            berth.log()
        );
    }

    // A guest pulls them back, byte for byte.
    for (img, target) in [(&image, "team/app:1"), (&index, "team/multi:1")] {
        let raw = raw_manifest(&berth, target, Some("bob"));
        assert!(
            raw.status.success(),
            "{}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert_eq!(sha256(&raw.stdout), img.manifest.digest, "{target}");
    }
    let dest = tempfile::tempdir().unwrap();
    let creds_bob = creds("bob");
    skopeo_ok(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-creds",
        &creds_bob,
        &format!("docker://{}/team/multi:1", berth.addr),
        &format!("dir:{}", dest.path().display()),
    ]);
    common::assert_dir_matches(dest.path(), &index);

    // Refusals: anonymous and non-members cannot pull a private project, a guest cannot
    // push, a wrong password gets nothing.
    assert!(!raw_manifest(&berth, "team/app:1", None).status.success());
    assert!(!raw_manifest(&berth, "team/app:1", Some("dave"))
        .status
        .success());
    let guest_push = skopeo_push(&berth, &image, "team/guest:1", "bob");
    assert!(!guest_push.status.success(), "a guest pushed");
    let wrong = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "alice:wrong",
        &format!("docker://{}/team/app:1", berth.addr),
    ]);
    assert!(!wrong.status.success());
    // The admin and the maintainer may pull; the mirror namespace refuses pushes.
    assert!(raw_manifest(&berth, "team/app:1", Some("root"))
        .status
        .success());
    assert!(raw_manifest(&berth, "team/app:1", Some("carol"))
        .status
        .success());
    let mirror_push = skopeo_push(&berth, &image, "library/app:1", "root");
    assert!(
        !mirror_push.status.success(),
        "pushed into the mirror namespace"
    );
}

#[tokio::test]
async fn public_projects_pull_anonymously_and_delete_needs_maintainer() {
    let files = AuthFiles::create();
    let berth = private_berth(&files);
    let image = images::image(Flavor::Oci, 60, &[MIB / 2], "amd64");
    assert!(skopeo_push(&berth, &image, "pub/tool:1", "alice")
        .status
        .success());
    assert!(skopeo_push(&berth, &image, "team/tool:1", "alice")
        .status
        .success());
    let anonymous = raw_manifest(&berth, "pub/tool:1", None);
    assert!(
        anonymous.status.success(),
        "{}",
        String::from_utf8_lossy(&anonymous.stderr)
    );
    assert_eq!(sha256(&anonymous.stdout), image.manifest.digest);

    let reference = format!("docker://{}/team/tool:1", berth.addr);
    for user in ["bob", "alice"] {
        let denied = skopeo(&[
            "delete",
            "--tls-verify=false",
            "--creds",
            &creds(user),
            &reference,
        ]);
        assert!(!denied.status.success(), "{user} deleted");
    }
    skopeo_ok(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &creds("carol"),
        &reference,
    ]);
    assert!(
        !raw_manifest(&berth, "team/tool:1", Some("carol"))
            .status
            .success(),
        "still there"
    );
}

#[tokio::test]
async fn podman_pushes_and_pulls() {
    let files = AuthFiles::create();
    let berth = private_berth(&files);
    let image = images::image(Flavor::Oci, 70, &[MIB], "amd64");
    let target = format!("{}/team/podman:1", berth.addr);
    let layers = podman_round_trip(
        &common::Podman::new(),
        &berth,
        &image,
        &target,
        "alice",
        "bob",
    );
    // The layer is an uncompressed tar: its digest is its diff ID.
    let diff_id = &image.blobs[1].digest;
    assert!(
        layers.contains(diff_id.as_str()),
        "{layers} lacks {diff_id}"
    );
}

#[tokio::test]
async fn token_attacks_are_refused() {
    use base64::Engine as _;
    let files = AuthFiles::create();
    let berth = private_berth(&files);
    let image = images::image(Flavor::Oci, 80, &[1000], "amd64");
    assert!(skopeo_push(&berth, &image, "team/app:1", "alice")
        .status
        .success());
    let url = format!("{}/v2/team/app/manifests/1", berth.url);
    let client = reqwest::Client::new();
    let get = |token: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .get(&url)
                .header("accept", images::OCI_MANIFEST)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let good = token_string(&berth.url, Some("bob"), &["repository:team/app:pull"]).await;
    assert_eq!(get(good.clone()).await, 200);

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = good.split('.').collect();
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    let with_claims = |header: &serde_json::Value, claims: &serde_json::Value, signature: &str| {
        format!(
            "{}.{}.{signature}",
            b64.encode(serde_json::to_vec(header).unwrap()),
            b64.encode(serde_json::to_vec(claims).unwrap())
        )
    };
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();

    // A flipped signature byte.
    let mut signature = b64.decode(parts[2]).unwrap();
    signature[5] ^= 1;
    let tampered = format!("{}.{}.{}", parts[0], parts[1], b64.encode(&signature));
    // alg=none.
    let none = with_claims(
        &serde_json::json!({"alg": "none", "typ": "JWT"}),
        &claims,
        "",
    );
    // HS256 keyed with the public certificate.
    let hs256 = {
        let key =
            jsonwebtoken::EncodingKey::from_secret(std::fs::read(&files.cert).unwrap().as_slice());
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = header["kid"].as_str().map(str::to_owned);
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    };
    // Well signed by another key, claims otherwise valid.
    let foreign = {
        let other = rcgen::KeyPair::generate().unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = header["kid"].as_str().map(str::to_owned);
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    };
    // Changed claims under the original signature: expired, other audience, other repo.
    let mut expired = claims.clone();
    expired["exp"] = serde_json::json!(1);
    let mut other_aud = claims.clone();
    other_aud["aud"] = serde_json::json!("someone-else");
    let mut other_repo = claims.clone();
    other_repo["access"] = serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push", "delete"]}]);
    for (what, token) in [
        ("tampered signature", tampered),
        ("alg none", none),
        ("HS256 with the public key", hs256),
        ("foreign key", foreign),
        ("expired", with_claims(&header, &expired, parts[2])),
        ("wrong audience", with_claims(&header, &other_aud, parts[2])),
        (
            "widened access",
            with_claims(&header, &other_repo, parts[2]),
        ),
    ] {
        assert_eq!(get(token).await, 401, "{what} was accepted");
    }
    // A valid token for another repository does not open this one.
    let other = token_string(&berth.url, Some("bob"), &["repository:team/other:pull"]).await;
    let response = client.get(&url).bearer_auth(other).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:team/app:pull\""),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("realm=\"{}/token\"", berth.url)),
        "{challenge}"
    );
}

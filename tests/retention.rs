//! Retention per project (`berth retention [--dry-run]`) and deleting whole repositories
//! (`DELETE /berth/v1/repositories/<name>`, `berth repo rm`, `berth cache rm REPO`), with a
//! real berth process, skopeo pushes and pulls, and the Distribution upstream for the mirror.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::cli::{berth_cli, berth_ok};
use common::images::{self, Blob, Flavor, Image, OCI_MANIFEST};
use common::private::{creds, skopeo_push, token_string, AuthFiles};
use common::upstream::{UpstreamRegistry, SEEDER};
use common::{config_for, Berth};
use reqwest::Method;

/// A berth with projects `team` (with `retention`, when given) and `pub`, mirroring
/// `upstream` (or a closed port), and the path of its config for the CLI.
fn berth_with(
    files: &AuthFiles,
    retention: Option<&str>,
    upstream: Option<&str>,
) -> (Berth, PathBuf) {
    let mut projects = files.config("");
    if let Some(rules) = retention {
        projects = projects.replacen(
            "name = \"team\"\n",
            &format!("name = \"team\"\nretention = {rules}\n"),
            1,
        );
    }
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    let config = format!(
        "{projects}{}",
        config_for(upstream.unwrap_or(&closed), "5m", "")
    );
    let berth = Berth::start(&config);
    let path = berth.data_dir.with_extension("cli.toml");
    std::fs::write(&path, &config).unwrap();
    (berth, path)
}

fn push_ok(berth: &Berth, image: &Image, target: &str, user: &str) {
    let output = skopeo_push(berth, image, target, user);
    assert!(
        output.status.success(),
        "push {target}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// HTTP with one user's token (or none).
struct Api {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    async fn new(berth: &Berth, user: Option<&str>, scopes: &[&str]) -> Api {
        let token = match user {
            Some(_) => Some(token_string(&berth.url, user, scopes).await),
            None => None,
        };
        Api {
            base: berth.url.clone(),
            token,
            client: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn call(&self, method: Method, path: &str) -> reqwest::Response {
        self.send(method, path, "application/octet-stream", Vec::new())
            .await
    }

    async fn push_blob(&self, repo: &str, blob: &Blob) {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest);
        let response = self
            .send(
                Method::POST,
                &path,
                "application/octet-stream",
                blob.data.clone(),
            )
            .await;
        assert_eq!(response.status(), 201, "{}", blob.digest);
    }

    /// Pushes `manifest` by digest (untagged), or as `tag`.
    async fn push_manifest(&self, repo: &str, reference: Option<&str>, manifest: &Blob) {
        let path = format!(
            "/v2/{repo}/manifests/{}",
            reference.unwrap_or(&manifest.digest)
        );
        let response = self
            .send(
                Method::PUT,
                &path,
                &manifest.media_type,
                manifest.data.clone(),
            )
            .await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }

    async fn push_image(&self, repo: &str, reference: Option<&str>, image: &Image) {
        for blob in &image.blobs {
            self.push_blob(repo, blob).await;
        }
        self.push_manifest(repo, reference, &image.manifest).await;
    }

    async fn tags(&self, repo: &str) -> Result<Vec<String>, (u16, String)> {
        let response = self
            .call(Method::GET, &format!("/v2/{repo}/tags/list"))
            .await;
        let status = response.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or_default();
        if status != 200 {
            return Err((
                status,
                body["errors"][0]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
        let mut tags: Vec<String> = body["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| Some(t.as_str()?.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        Ok(tags)
    }

    async fn manifest_status(&self, repo: &str, reference: &str) -> u16 {
        self.call(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .await
            .status()
            .as_u16()
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// 15 tags pushed in order, the two oldest `v1` and `v2`: keep_last=10 with protect=["v*"]
/// keeps the newest 10 and both protected ones; the dry run names the other 3 and changes
/// nothing.
#[tokio::test]
async fn keep_last_keeps_the_newest_tags_and_the_protected_ones() {
    let files = AuthFiles::create();
    let (berth, config) = berth_with(&files, Some("{ keep_last = 10, protect = [\"v*\"] }"), None);
    let names: Vec<String> = (1..=15)
        .map(|i| match i {
            1 | 2 => format!("v{i}"),
            _ => format!("t{i:02}"),
        })
        .collect();
    let mut pushed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let image = images::image(Flavor::Oci, 900 + i as u64, &[512], "amd64");
        push_ok(&berth, &image, &format!("team/app:{name}"), "alice");
        pushed.push(image);
    }
    let api = Api::new(&berth, Some("carol"), &["repository:team/app:pull"]).await;
    assert_eq!(api.tags("team/app").await.unwrap(), sorted(names.clone()));

    let dry = berth_ok(&berth, &config, &["retention", "--dry-run"]);
    let listed: Vec<&str> = dry
        .lines()
        .filter(|l| l.starts_with("would delete team/"))
        .collect();
    assert_eq!(listed.len(), 3, "{dry}");
    for (name, image) in [
        ("t03", &pushed[2]),
        ("t04", &pushed[3]),
        ("t05", &pushed[4]),
    ] {
        let line = format!(
            "would delete team/app:{name} ({}): beyond keep_last=10",
            image.manifest.digest
        );
        assert!(listed.contains(&line.as_str()), "{line} not in:\n{dry}");
    }
    assert!(dry.contains("nothing was changed"), "{dry}");
    assert_eq!(api.tags("team/app").await.unwrap(), sorted(names.clone()));

    let run = berth_ok(&berth, &config, &["retention"]);
    assert!(run.contains("deleted 3 tag(s) and 0 manifest(s)"), "{run}");
    let kept: Vec<String> = names
        .iter()
        .filter(|n| !["t03", "t04", "t05"].contains(&n.as_str()))
        .cloned()
        .collect();
    assert_eq!(kept.len(), 12);
    assert_eq!(api.tags("team/app").await.unwrap(), sorted(kept));
    // The tag is gone, its manifest (no untagged_after) is not; the kept ones pull.
    assert_eq!(api.manifest_status("team/app", "t03").await, 404);
    assert_eq!(
        api.manifest_status("team/app", &pushed[2].manifest.digest)
            .await,
        200
    );
    for name in ["v1", "t06", "t15"] {
        let pulled = common::try_pull(&berth, &format!("team/app:{name}"), Some(&creds("bob")));
        assert!(pulled.is_ok(), "{name}: {pulled:?}");
    }
    // Applying it again removes nothing more.
    let again = berth_ok(&berth, &config, &["retention"]);
    assert!(
        again.contains("deleted 0 tag(s) and 0 manifest(s)"),
        "{again}"
    );
}

/// A signature-like artifact that refers to `subject`.
fn referrer_of(subject: &Blob, empty: &Blob) -> Blob {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.digest, "size": 2}],
        "subject": subject.descriptor(),
    });
    Blob::new(OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap())
}

/// untagged_after removes a manifest no tag names once it is old enough, but not the
/// referrer (a signature) of a kept image, nor the image.
#[tokio::test]
async fn untagged_manifests_go_but_referrers_of_kept_images_stay() {
    let files = AuthFiles::create();
    let (berth, config) = berth_with(&files, Some("{ untagged_after = \"1s\" }"), None);
    let api = Api::new(&berth, Some("alice"), &["repository:team/app:pull,push"]).await;
    let kept = images::image(Flavor::Oci, 950, &[700], "amd64");
    let untagged = images::image(Flavor::Oci, 951, &[800], "amd64");
    api.push_image("team/app", None, &untagged).await;
    api.push_image("team/app", Some("stable"), &kept).await;
    let empty = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    api.push_blob("team/app", &empty).await;
    let signature = referrer_of(&kept.manifest, &empty);
    api.push_manifest("team/app", None, &signature).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let dry = berth_ok(&berth, &config, &["retention", "--dry-run"]);
    let listed: Vec<&str> = dry
        .lines()
        .filter(|l| l.starts_with("would delete team/"))
        .collect();
    assert_eq!(listed.len(), 1, "{dry}");
    assert!(
        listed[0].starts_with(&format!(
            "would delete team/app@{}: untagged, pushed ",
            untagged.manifest.digest
        )),
        "{dry}"
    );
    assert_eq!(
        api.manifest_status("team/app", &untagged.manifest.digest)
            .await,
        200
    );

    let run = berth_ok(&berth, &config, &["retention"]);
    assert!(run.contains("deleted 0 tag(s) and 1 manifest(s)"), "{run}");
    assert_eq!(
        api.manifest_status("team/app", &untagged.manifest.digest)
            .await,
        404
    );
    assert_eq!(
        api.manifest_status("team/app", &signature.digest).await,
        200
    );
    assert_eq!(api.manifest_status("team/app", "stable").await, 200);
    let referrers = api
        .call(
            Method::GET,
            &format!("/v2/team/app/referrers/{}", kept.manifest.digest),
        )
        .await;
    let body: serde_json::Value =
        serde_json::from_slice(&referrers.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body["manifests"][0]["digest"],
        signature.digest.as_str(),
        "{body}"
    );
    let pulled = common::try_pull(&berth, "team/app:stable", Some(&creds("bob")));
    assert!(pulled.is_ok(), "{pulled:?}");
}

/// `DELETE /berth/v1/repositories/<name>`: 401 with the delete challenge without a token, 403
/// DENIED for a developer, 202 for a maintainer; then the repository is unknown. `berth repo
/// rm` does the same over the admin socket, and `berth cache rm REPO` drops every cached tag
/// of a mirrored repository.
#[tokio::test]
async fn whole_repositories_are_deleted_by_maintainers_and_operators() {
    let upstream = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push,delete")]);
    let alpine_1 = images::image(Flavor::Oci, 960, &[600], "amd64");
    let alpine_2 = images::image(Flavor::Oci, 961, &[600], "amd64");
    upstream.push("library/alpine", "1", &alpine_1).await;
    upstream.push("library/alpine", "2", &alpine_2).await;
    let files = AuthFiles::create();
    let (berth, config) = berth_with(&files, None, Some(&upstream.url()));
    let image = images::image(Flavor::Oci, 962, &[900], "amd64");
    push_ok(&berth, &image, "team/app:1", "alice");
    push_ok(&berth, &image, "team/app:2", "alice");
    push_ok(&berth, &image, "team/other:1", "alice");
    let path = "/berth/v1/repositories/team/app";

    let anonymous = Api::new(&berth, None, &[]).await;
    let response = anonymous.call(Method::DELETE, path).await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains("scope=\"repository:team/app:delete\""),
        "{challenge}"
    );
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    let scope = ["repository:team/app:pull,push,delete"];
    let developer = Api::new(&berth, Some("alice"), &scope).await;
    let response = developer.call(Method::DELETE, path).await;
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert_eq!(developer.tags("team/app").await.unwrap(), ["1", "2"]);

    let maintainer = Api::new(&berth, Some("carol"), &scope).await;
    let response = maintainer.call(Method::DELETE, path).await;
    assert_eq!(response.status(), 202);
    let removed: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(removed["tags"], 2, "{removed}");
    assert_eq!(removed["manifests"], 1, "{removed}");
    assert_eq!(
        maintainer.tags("team/app").await,
        Err((404, "NAME_UNKNOWN".to_owned()))
    );
    assert!(common::try_pull(&berth, "team/app:1", Some(&creds("carol"))).is_err());
    let again = maintainer.call(Method::DELETE, path).await;
    assert_eq!(again.status(), 404);
    let body: serde_json::Value = serde_json::from_slice(&again.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
    // The same content in another repository is untouched.
    assert!(common::try_pull(&berth, "team/other:1", Some(&creds("bob"))).is_ok());

    // Operators, through the admin socket.
    let rm = berth_ok(&berth, &config, &["repo", "rm", "team/other"]);
    assert!(
        rm.contains("deleted repository team/other: 1 tag(s), 1 manifest(s)"),
        "{rm}"
    );
    let other = Api::new(&berth, Some("carol"), &["repository:team/other:pull"]).await;
    assert_eq!(
        other.tags("team/other").await,
        Err((404, "NAME_UNKNOWN".to_owned()))
    );
    let unknown = berth_cli(&berth, &config, &["repo", "rm", "team/other"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not known"));

    // The mirror: every cached tag of a repository, when no tag is named.
    for tag in ["1", "2"] {
        let pulled = common::try_pull(&berth, &format!("alpine:{tag}"), Some(&creds("alice")));
        assert!(pulled.is_ok(), "{pulled:?}");
    }
    berth.settle();
    let ls = berth_ok(&berth, &config, &["cache", "ls"]);
    assert_eq!(ls.matches("library/alpine:").count(), 2, "{ls}");
    let dropped = berth_ok(&berth, &config, &["cache", "rm", "alpine"]);
    assert!(
        dropped.contains("removed alpine: 2 tag record(s)"),
        "{dropped}"
    );
    let ls = berth_ok(&berth, &config, &["cache", "ls"]);
    assert!(!ls.contains("library/alpine:"), "{ls}");
    for image in [&alpine_1, &alpine_2] {
        let hex = image.manifest.digest.trim_start_matches("sha256:");
        assert!(
            !berth.blob_files().iter().any(|f| f.ends_with(hex)),
            "manifest {} still on disk",
            image.manifest.digest
        );
    }
}

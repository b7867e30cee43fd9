//! A berth with its own token service and private projects: keys and htpasswd made with
//! berth's own CLI (`keygen`, `hash-password`), users for every role.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::images::Image;

/// (user, password, role in project `team`): `root` is an admin, `dave` a member of nothing.
pub const USERS: [(&str, &str); 5] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
    ("root", "root-pw"),
    ("dave", "dave-pw"),
];

pub fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap_or("none")
}

pub fn creds(user: &str) -> String {
    format!("{user}:{}", password(user))
}

/// Keys, certificate and htpasswd in a directory that outlives the berths using it.
pub struct AuthFiles {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub cert: PathBuf,
    pub htpasswd: PathBuf,
}

fn berth_cli(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl AuthFiles {
    pub fn create() -> AuthFiles {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("keys/token.key");
        let cert = dir.path().join("keys/token.crt");
        berth_cli(
            &[
                "keygen",
                "--key",
                key.to_str().unwrap(),
                "--cert",
                cert.to_str().unwrap(),
            ],
            None,
        );
        let htpasswd = dir.path().join("htpasswd");
        let mut lines = String::from("# berth test users\n");
        for (user, password) in USERS {
            let hash = berth_cli(&["hash-password"], Some(&format!("{password}\n")));
            lines.push_str(&format!("{user}:{hash}\n"));
        }
        std::fs::write(&htpasswd, lines).unwrap();
        AuthFiles {
            dir,
            key,
            cert,
            htpasswd,
        }
    }

    /// The `[auth]` and `[[projects]]` sections: `team` (private) and `pub` (public).
    pub fn config(&self, extra_auth: &str) -> String {
        format!(
            "[auth]\nservice = \"berth-test\"\nissuer = \"berth-test-issuer\"\nsigning_key = \"{}\"\ncertificate = \"{}\"\nhtpasswd = \"{}\"\nadmins = [\"root\"]\n{extra_auth}\n[[projects]]\nname = \"team\"\nmembers = {{ alice = \"developer\", bob = \"guest\", carol = \"maintainer\" }}\n[[projects]]\nname = \"pub\"\npublic = true\nmembers = {{ alice = \"developer\" }}\n",
            self.key.display(),
            self.cert.display(),
            self.htpasswd.display()
        )
    }
}

/// Writes `image` as an OCI image layout (tag `latest`), for skopeo and podman to push from.
pub fn write_oci_layout(image: &Image, dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for blob in image
        .all_blobs()
        .into_iter()
        .chain(std::iter::once(&image.manifest))
    {
        std::fs::write(blobs.join(&blob.digest[7..]), &blob.data).unwrap();
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": image.manifest.media_type,
            "digest": image.manifest.digest,
            "size": image.manifest.data.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Loads `image` into `podman` from an OCI layout, pushes it to `target` (`host/repo:tag`)
/// as `pusher`, removes every local image, and pulls `target` back as `puller`: the layers
/// (diff IDs) podman then lists. `berth`'s log is shown on failure.
pub fn podman_round_trip(
    podman: &super::Podman,
    berth: &super::Berth,
    image: &Image,
    target: &str,
    pusher: &str,
    puller: &str,
) -> String {
    let run = |args: &[&str]| podman.run(berth, args);
    // podman names an image loaded from a layout after its path, which must be lowercase:
    // no random letters, a process-wide count instead.
    static LAYOUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = LAYOUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let source = tempfile::Builder::new()
        .prefix("berth")
        .rand_bytes(0)
        .suffix(&format!("-oci-{}-{n}", std::process::id()))
        .tempdir()
        .unwrap();
    let source_path = source.path().display().to_string();
    write_oci_layout(image, source.path());
    run(&["rmi", "--all", "--force"]);
    run(&["pull", "--quiet", &format!("oci:{source_path}:latest")]);
    let local = run(&["images", "--quiet"]);
    let local = local.lines().next().unwrap().to_owned();
    run(&[
        "push",
        "--quiet",
        "--tls-verify=false",
        "--creds",
        &creds(pusher),
        &local,
        &format!("docker://{target}"),
    ]);
    run(&["rmi", "--all", "--force"]);
    run(&[
        "pull",
        "--quiet",
        "--tls-verify=false",
        "--creds",
        &creds(puller),
        target,
    ]);
    run(&["image", "inspect", "--format", "{{.RootFS.Layers}}", target])
}

/// Pushes `image` (all of an index's platforms) to berth's `target` as `user` with skopeo.
pub fn skopeo_push(berth: &super::Berth, image: &Image, target: &str, user: &str) -> Output {
    skopeo_push_to(&berth.addr, image, target, user)
}

/// [`skopeo_push`] to the berth at `addr` (from a thread that holds no `Berth`).
pub fn skopeo_push_to(addr: &str, image: &Image, target: &str, user: &str) -> Output {
    let source = tempfile::tempdir().unwrap();
    write_oci_layout(image, source.path());
    let src = format!("oci:{}:latest", source.path().display());
    let dest = format!("docker://{addr}/{target}");
    super::skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(user),
        "--retry-times",
        "0",
        &src,
        &dest,
    ])
}

/// Pulls `image` from berth as `user` with skopeo, into a `dir:` layout.
pub fn skopeo_pull_as(berth: &super::Berth, image: &str, user: &str) -> tempfile::TempDir {
    let dest = tempfile::tempdir().unwrap();
    super::skopeo_ok(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds(user),
        "--retry-times",
        "0",
        &format!("docker://{}/{image}", berth.addr),
        &format!("dir:{}", dest.path().display()),
    ]);
    dest
}

/// A token from berth's token service for `scopes`, as `user` (or anonymous).
pub async fn token(base: &str, user: Option<&str>, scopes: &[&str]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{base}/token"))
        .query(&[("service", "berth-test")]);
    for scope in scopes {
        request = request.query(&[("scope", scope)]);
    }
    if let Some(user) = user {
        request = request.basic_auth(user, Some(password(user)));
    }
    request.send().await.unwrap()
}

pub async fn token_string(base: &str, user: Option<&str>, scopes: &[&str]) -> String {
    let response = token(base, user, scopes).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    body["token"].as_str().unwrap().to_owned()
}

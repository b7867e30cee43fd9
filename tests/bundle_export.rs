//! `berth export`: images read from a real berth (mirroring the Distribution upstream, and a
//! private project) into OCI image layouts, read back by skopeo and by a tar reader; platforms,
//! referrers, resuming after a kill, and refusals that leave no file.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::images::{self, sha256, Blob, Flavor, Image, OCI_INDEX, OCI_MANIFEST};
use common::private::{skopeo_push, AuthFiles};
use common::upstream::{UpstreamRegistry, SEEDER};
use common::{assert_dir_matches, config_for, seeded, skopeo_ok, Berth};

const MIB: usize = 1024 * 1024;

/// `berth export ARGS… --from BERTH`, with `stdin` given; its output.
fn export(berth: &Berth, config: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .arg("export")
        .args(args)
        .args(["--from", &berth.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn export_ok(berth: &Berth, config: Option<&Path>, args: &[&str], stdin: Option<&str>) -> String {
    let output = export(berth, config, args, stdin);
    assert!(
        output.status.success(),
        "berth export {args:?} failed:\n{}\nberth log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        berth.log()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every file of a tar: name → content digest (directories as empty names' digests).
fn tar_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        assert!(files.insert(name.clone(), data).is_none(), "{name} twice");
    }
    files
}

/// The layout's files as a map, from a tar or a directory.
fn layout_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    if path.is_file() {
        return tar_files(path)
            .into_iter()
            .filter(|(name, _)| !name.ends_with('/'))
            .collect();
    }
    let mut files = BTreeMap::new();
    for name in ["oci-layout", "index.json"] {
        files.insert(name.to_owned(), std::fs::read(path.join(name)).unwrap());
    }
    for entry in std::fs::read_dir(path.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(
            format!("blobs/sha256/{name}"),
            std::fs::read(entry.path()).unwrap(),
        );
    }
    files
}

/// The blobs of a layout, each checked against its name.
fn blobs_of(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, &Vec<u8>> {
    files
        .iter()
        .filter_map(|(name, data)| {
            let hex = name
                .strip_prefix("blobs/sha256/")
                .filter(|h| !h.is_empty())?;
            assert_eq!(sha256(data), format!("sha256:{hex}"), "{name} corrupt");
            Some((format!("sha256:{hex}"), data))
        })
        .collect()
}

fn index_of(files: &BTreeMap<String, Vec<u8>>) -> serde_json::Value {
    serde_json::from_slice(&files["index.json"]).unwrap()
}

/// The names of index.json's entries (`None` for an unnamed one), with their digests.
fn entries(index: &serde_json::Value) -> Vec<(Option<String>, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .map(str::to_owned);
            assert_eq!(
                name.as_deref(),
                m["annotations"]["io.containerd.image.name"].as_str()
            );
            (name, m["digest"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Asserts that every manifest and blob of `image` is in the layout, byte for byte.
fn assert_holds(blobs: &BTreeMap<String, &Vec<u8>>, image: &Image) {
    assert_eq!(blobs[&image.manifest.digest], &image.manifest.data);
    for blob in image.all_blobs() {
        let data = blobs
            .get(&blob.digest)
            .unwrap_or_else(|| panic!("{} missing", blob.digest));
        assert_eq!(*data, &blob.data, "{} differs from upstream's", blob.digest);
    }
}

#[tokio::test]
async fn mirror_images_export_to_an_archive_skopeo_reads_byte_for_byte() {
    let seeded = seeded().await;
    let berth = Berth::start(&config_for(&seeded.upstream.url(), "1h", ""));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.tar");
    let by_digest = format!("library/oci@{}", seeded.oci.manifest.digest);
    let summary = export_ok(
        &berth,
        None,
        &[
            "multi-oci:1",
            "docker.io/library/docker:1",
            "library/oci:1",
            &by_digest,
            "-o",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert!(summary.contains("exported 4 image(s)"), "{summary}");
    assert!(!dir.path().join("bundle.tar.partial").exists());

    let files = layout_files(&file);
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let blobs = blobs_of(&files);
    assert_holds(&blobs, &seeded.oci_index);
    assert_holds(&blobs, &seeded.docker);
    assert_holds(&blobs, &seeded.oci);
    let index = index_of(&files);
    assert_eq!(index["mediaType"], OCI_INDEX);
    assert_eq!(
        entries(&index),
        vec![
            (
                Some("docker.io/library/multi-oci:1".to_owned()),
                seeded.oci_index.manifest.digest.clone()
            ),
            (
                Some("docker.io/library/docker:1".to_owned()),
                seeded.docker.manifest.digest.clone()
            ),
            (
                Some("docker.io/library/oci:1".to_owned()),
                seeded.oci.manifest.digest.clone()
            ),
            (
                Some(format!("docker.io/{by_digest}")),
                seeded.oci.manifest.digest.clone()
            ),
        ]
    );
    // The Docker manifest keeps its own type in index.json (its bytes are unchanged).
    assert_eq!(
        index["manifests"][1]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // Nothing but the three images (one named twice): no stray files.
    let expected = seeded.oci_index.all_blobs().len()
        + 1
        + seeded.docker.all_blobs().len()
        + 1
        + seeded.oci.all_blobs().len()
        + 1;
    assert_eq!(blobs.len(), expected);

    // skopeo reads it by name, and copies it out byte for byte. (skopeo 1.9 looks up only
    // OCI-typed entries by name, so the Docker-typed image is checked above, not here.)
    let archive = |name: &str| format!("oci-archive:{}:{name}", file.display());
    let raw = skopeo_ok(&["inspect", "--raw", &archive("docker.io/library/oci:1")]);
    assert_eq!(sha256(raw.as_bytes()), seeded.oci.manifest.digest);
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().display());
    skopeo_ok(&["copy", &archive("docker.io/library/oci:1"), &dest]);
    assert_dir_matches(out.path(), &seeded.oci);
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().display());
    skopeo_ok(&[
        "copy",
        "--all",
        &archive("docker.io/library/multi-oci:1"),
        &dest,
    ]);
    assert_dir_matches(out.path(), &seeded.oci_index);
}

#[tokio::test]
async fn platform_leaves_the_others_out_and_the_directory_form_reads_as_oci() {
    let seeded = seeded().await;
    let berth = Berth::start(&config_for(&seeded.upstream.url(), "1h", ""));
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    export_ok(
        &berth,
        None,
        &[
            "library/multi-oci:1",
            "--platform",
            "linux/arm64",
            "-o",
            layout.to_str().unwrap(),
        ],
        None,
    );
    assert!(layout.is_dir());
    let files = layout_files(&layout);
    let blobs = blobs_of(&files);
    let list = &seeded.oci_index;
    let (amd64, arm64) = (&list.children[0], &list.children[1]);
    // The list itself byte-identical, arm64 whole, nothing of amd64.
    assert_eq!(blobs[&list.manifest.digest], &list.manifest.data);
    assert_holds(&blobs, arm64);
    assert!(!blobs.contains_key(&amd64.manifest.digest));
    for blob in &amd64.blobs {
        assert!(!blobs.contains_key(&blob.digest), "amd64's {}", blob.digest);
    }
    assert_eq!(blobs.len(), 1 + 1 + arm64.blobs.len());
    assert!(!files.keys().any(|name| name.ends_with(".partial")));

    let name = format!("oci:{}:docker.io/library/multi-oci:1", layout.display());
    let raw = skopeo_ok(&["inspect", "--raw", &name]);
    assert_eq!(sha256(raw.as_bytes()), list.manifest.digest);
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().display());
    skopeo_ok(&["copy", "--override-arch", "arm64", &name, &dest]);
    assert_dir_matches(out.path(), arm64);

    // A platform the image does not have is refused before anything is written.
    let other = dir.path().join("other.tar");
    let output = export(
        &berth,
        None,
        &[
            "library/multi-docker:1",
            "--platform",
            "linux/s390x",
            "-o",
            other.to_str().unwrap(),
        ],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("linux/s390x") && stderr.contains("linux/arm64"),
        "{stderr}"
    );
    assert!(!other.exists() && !dir.path().join("other.tar.partial").exists());
}

#[tokio::test]
async fn a_private_project_image_exports_with_credentials_only() {
    let seeded = seeded().await;
    let auth = AuthFiles::create();
    let config = config_for(&seeded.upstream.url(), "1h", &auth.config(""));
    let berth = Berth::start(&config);
    let config_file = auth.dir.path().join("berth.toml");
    std::fs::write(&config_file, &config).unwrap();
    let image = images::image(Flavor::Oci, 61, &[MIB, 4096], "amd64");
    let pushed = skopeo_push(&berth, &image, "team/app:1", "alice");
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("team.tar");
    let args = ["team/app:1", "-o", file.to_str().unwrap()];
    let refused = export(&berth, Some(&config_file), &args, None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("team/app") && stderr.contains("--user"),
        "{stderr}"
    );
    assert!(!file.exists() && !dir.path().join("team.tar.partial").exists());

    let mut with_user = args.to_vec();
    with_user.extend(["--user", "bob", "--password-stdin"]);
    export_ok(&berth, Some(&config_file), &with_user, Some("bob-pw\n"));
    let files = layout_files(&file);
    assert_holds(&blobs_of(&files), &image);
    let name = format!("{}/team/app:1", berth.addr);
    assert_eq!(
        entries(&index_of(&files)),
        vec![(Some(name.clone()), image.manifest.digest.clone())]
    );
    let out = tempfile::tempdir().unwrap();
    let source = format!("oci-archive:{}:{name}", file.display());
    skopeo_ok(&["copy", &source, &format!("dir:{}", out.path().display())]);
    assert_dir_matches(out.path(), &image);
}

/// An artifact of type `application/vnd.example.signature` whose subject is `subject`.
fn signature(subject: &Image) -> Image {
    let empty = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    let payload = Blob::new("application/vnd.example.payload", b"signed".to_vec());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": empty.descriptor(),
        "layers": [payload.descriptor()],
        "subject": subject.manifest.descriptor(),
    });
    Image {
        manifest: Blob::new(OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap()),
        blobs: vec![empty, payload],
        children: Vec::new(),
    }
}

#[tokio::test]
async fn an_images_referrer_is_exported_unnamed_beside_it() {
    let upstream = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push")]);
    let subject = images::image(Flavor::Oci, 71, &[8192], "amd64");
    let sig = signature(&subject);
    upstream.push("library/signed", "1", &subject).await;
    upstream
        .push("library/signed", &sig.manifest.digest, &sig)
        .await;
    // Distribution 2.8 has no referrers API: the referrers tag schema lists the signature.
    let hex = subject.manifest.digest.trim_start_matches("sha256:");
    let tag_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": sig.manifest.digest,
            "size": sig.manifest.data.len(),
            "artifactType": "application/vnd.example.signature",
        }],
    });
    let tag_index = Image {
        manifest: Blob::new(OCI_INDEX, serde_json::to_vec(&tag_index).unwrap()),
        blobs: Vec::new(),
        children: Vec::new(),
    };
    upstream
        .push("library/signed", &format!("sha256-{hex}"), &tag_index)
        .await;
    let berth = Berth::start(&config_for(&upstream.url(), "1h", ""));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signed.tar");
    let summary = export_ok(
        &berth,
        None,
        &["signed:1", "-o", file.to_str().unwrap()],
        None,
    );
    assert!(summary.contains("1 referrer(s)"), "{summary}");
    let files = layout_files(&file);
    let blobs = blobs_of(&files);
    assert_holds(&blobs, &subject);
    assert_holds(&blobs, &sig);
    let index = index_of(&files);
    assert_eq!(
        entries(&index),
        vec![
            (
                Some("docker.io/library/signed:1".to_owned()),
                subject.manifest.digest.clone()
            ),
            (None, sig.manifest.digest.clone()),
        ]
    );
    assert_eq!(
        index["manifests"][1]["artifactType"],
        "application/vnd.example.signature"
    );
    // Still one image for skopeo by name.
    let source = format!("oci-archive:{}:docker.io/library/signed:1", file.display());
    let raw = skopeo_ok(&["inspect", "--raw", &source]);
    assert_eq!(sha256(raw.as_bytes()), subject.manifest.digest);
}

/// Starts an export in the background.
fn spawn_export(berth: &Berth, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("export")
        .args(args)
        .args(["--from", &berth.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Kills an export once `partial` has grown past `bytes`; panics if it finished first.
fn kill_when_past(mut child: std::process::Child, partial: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let size = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if size > bytes {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the export ended ({status}) before it could be interrupted");
        }
        assert!(Instant::now() < deadline, "the export did not get going");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn partial_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

#[tokio::test]
async fn a_killed_export_resumes_to_what_an_uninterrupted_one_writes() {
    let seeded = seeded().await;
    let big = images::image(Flavor::Oci, 81, &[32 * MIB, 32 * MIB, 32 * MIB], "amd64");
    seeded.upstream.push("library/big", "1", &big).await;
    let berth = Berth::start(&config_for(&seeded.upstream.url(), "1h", ""));
    let dir = tempfile::tempdir().unwrap();

    // The uninterrupted export first (which also warms the cache).
    let whole = dir.path().join("whole.tar");
    export_ok(
        &berth,
        None,
        &["big:1", "-o", whole.to_str().unwrap()],
        None,
    );
    let expected = tar_files(&whole);
    assert_holds(&blobs_of(&expected), &big);

    for form in ["resumed.tar", "resumed"] {
        let target = dir.path().join(form);
        let args = ["big:1", "-o", target.to_str().unwrap()];
        let growing = if form.ends_with(".tar") {
            partial_of(&target)
        } else {
            // The directory form writes each blob beside its final name: the second layer.
            let layer = &big.blobs[2].digest;
            target.join(format!(
                "blobs/sha256/{}.partial",
                layer.trim_start_matches("sha256:")
            ))
        };
        // Killed in the middle of the second layer (the tar: 40 MiB in; the directory: 8 MiB
        // into that layer's file).
        let threshold = if form.ends_with(".tar") {
            40 * MIB
        } else {
            8 * MIB
        };
        kill_when_past(spawn_export(&berth, &args), &growing, threshold as u64);
        // Unfinished: no index.json in the directory, no FILE beside FILE.partial.
        assert!(!target.join("index.json").exists());
        if form.ends_with(".tar") {
            assert!(!target.exists() && partial_of(&target).exists());
        }

        let summary = export_ok(&berth, None, &args, None);
        let kept: usize = summary
            .split("blobs already there: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{summary}"));
        assert!(kept >= 2, "the rerun fetched everything again: {summary}");
        assert!(!partial_of(&target).exists());
        if form.ends_with(".tar") {
            assert_eq!(tar_files(&target), expected, "the resumed tar differs");
        } else {
            let files = layout_files(&target);
            let expected: BTreeMap<_, _> = expected
                .iter()
                .filter(|(name, _)| !name.ends_with('/'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(files, expected, "the resumed directory differs");
        }
    }
}

#[tokio::test]
async fn a_wrong_name_says_so_and_writes_nothing() {
    let seeded = seeded().await;
    let berth = Berth::start(&config_for(&seeded.upstream.url(), "1h", ""));
    let dir = tempfile::tempdir().unwrap();
    for (image, said) in [
        ("library/no-such-image:1", "library/no-such-image"),
        ("oci:no-such-tag", "no-such-tag"),
        ("Bad Name", "not an image name"),
    ] {
        let file = dir.path().join("out.tar");
        // A good image first: nothing of it is written either.
        let output = export(
            &berth,
            None,
            &["oci:1", image, "-o", file.to_str().unwrap()],
            None,
        );
        assert!(!output.status.success(), "{image}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(said), "{image}: {stderr}");
        assert!(!file.exists() && !partial_of(&file).exists(), "{image}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[tokio::test]
async fn a_blob_that_fails_its_digest_stops_the_export_naming_it() {
    let seeded = seeded().await;
    let image = images::image(Flavor::Oci, 91, &[2 * MIB, MIB], "amd64");
    seeded.upstream.push("library/flipped", "1", &image).await;
    let berth = Berth::start(&config_for(&seeded.upstream.url(), "1h", ""));
    let dir = tempfile::tempdir().unwrap();
    let warm = dir.path().join("warm");
    export_ok(
        &berth,
        None,
        &["flipped:1", "-o", warm.to_str().unwrap()],
        None,
    );

    // One byte of the cached layer flipped on berth's disk: berth serves what it has.
    let layer = &image.blobs[1].digest;
    let hex = layer.trim_start_matches("sha256:");
    let cached = berth
        .blob_files()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == hex))
        .expect("the layer is cached");
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[MIB] ^= 0xff;
    std::fs::write(&cached, bytes).unwrap();

    let file = dir.path().join("flipped.tar");
    let output = export(
        &berth,
        None,
        &["flipped:1", "-o", file.to_str().unwrap()],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(layer.as_str()), "{stderr}");
    assert!(!file.exists());
    // What is in the partial file is only what verified: not the flipped layer.
    let partial = tar_files(&partial_of(&file));
    assert!(!partial.contains_key(&format!("blobs/sha256/{hex}")));
    blobs_of(&partial);
}

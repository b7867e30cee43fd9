//! `berth import`: bundles (OCI image layouts, as `berth export` or skopeo write them)
//! loaded into a berth that never reaches its upstream, pulled back byte for byte by real
//! clients; broken bundles refused whole; interrupted imports resumed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::images::{self, Flavor, Image};
use common::private::{creds, AuthFiles};
use common::upstream::{UpstreamRegistry, SEEDER};
use common::{assert_dir_matches, config_for, skopeo_ok, skopeo_pull, try_pull, Berth, Podman};

const MIB: usize = 1024 * 1024;

/// Copies `repo:tag` from the upstream into the layout `dir` as `docker.io/<repo>:<tag>`,
/// every platform and every digest as upstream has it.
fn export(upstream: &UpstreamRegistry, repo: &str, tag: &str, dir: &Path) {
    let source = format!(
        "docker://{}/{repo}:{tag}",
        upstream.url().trim_start_matches("http://")
    );
    let target = format!("oci:{}:docker.io/{repo}:{tag}", dir.display());
    let seeder = format!("{}:{}", SEEDER.0, SEEDER.1);
    skopeo_ok(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &seeder,
        &source,
        &target,
    ]);
}

/// The layout `dir` as a tar file.
fn tar_of(dir: &Path, file: &Path) {
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(file)
        // The small files first, as exporters write them: a cut then falls among the blobs.
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(status.success());
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// `berth import` with `berth`'s configuration and data directory.
fn import(berth: &Berth, bundle: &Path, into: Option<&str>) -> Output {
    import_in(&berth.data_dir, bundle, into)
}

fn import_in(data_dir: &Path, bundle: &Path, into: Option<&str>) -> Output {
    let mut command = berth_cli(data_dir);
    command.arg("import").arg(bundle);
    if let Some(project) = into {
        command.args(["--into", project]);
    }
    command.output().unwrap()
}

/// The berth CLI on the configuration `Berth` wrote next to its data directory.
fn berth_cli(data_dir: &Path) -> Command {
    let config = data_dir.with_extension(format!("{}.toml", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir);
    command
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "berth import failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn cli_text(data_dir: &Path, args: &[&str]) -> String {
    succeeded(&berth_cli(data_dir).args(args).output().unwrap())
}

/// What import leaves staged under the data directory.
fn staged_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for session in std::fs::read_dir(data_dir.join("import"))
        .into_iter()
        .flatten()
    {
        for file in std::fs::read_dir(session.unwrap().path()).unwrap() {
            files.push(file.unwrap().path());
        }
    }
    files
}

struct Upstream {
    registry: UpstreamRegistry,
    app: Image,
    solo: Image,
}

/// An upstream with a two-platform OCI index `library/app:1` and a single-platform image
/// `library/solo:1`.
async fn upstream(seed: u64, layers: &[usize]) -> Upstream {
    let registry = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push,delete")]);
    let app = images::multi_arch(Flavor::Oci, seed, layers);
    let solo = images::image(Flavor::Oci, seed + 1, layers, "amd64");
    registry.push("library/app", "1", &app).await;
    registry.push("library/solo", "1", &solo).await;
    Upstream {
        registry,
        app,
        solo,
    }
}

/// A bundle of both images, with the arm64 platform of `app` left out on purpose.
fn bundle(up: &Upstream, dir: &Path) {
    export(&up.registry, "library/app", "1", dir);
    export(&up.registry, "library/solo", "1", dir);
    let arm64 = &up.app.children[1];
    for blob in arm64.all_blobs().into_iter().chain([&arm64.manifest]) {
        std::fs::remove_file(blob_path(dir, &blob.digest)).unwrap();
    }
}

fn offline_config(up: &Upstream, extra: &str) -> String {
    format!(
        "[mirror]\noffline = true\n{}",
        config_for(&up.registry.url(), "5m", extra)
    )
}

/// The air gap: `berth export` (amd64 only) from a berth connected to the upstream, imported
/// (as a tar, through the admin socket) into a berth that is offline and whose upstream is
/// gone; dockerd, containerd and podman pull both images through the mirror, with upstream's
/// digests.
#[tokio::test]
async fn an_exported_bundle_serves_an_offline_mirror_to_every_client() {
    let mut up = upstream(610, &[MIB, 300_000]).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("bundle.tar");
    let connected = Berth::start(&config_for(&up.registry.url(), "5m", ""));
    let exported = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "export",
            "app:1",
            "solo:1",
            "--platform",
            "linux/amd64",
            "-o",
        ])
        .arg(&file)
        .args(["--from", &connected.url])
        .output()
        .unwrap();
    assert!(
        exported.status.success(),
        "berth export: {}",
        String::from_utf8_lossy(&exported.stderr)
    );
    drop(connected);
    up.registry.stop();

    let berth = Berth::start(&offline_config(&up, ""));
    let output = import(&berth, &file, None);
    let text = succeeded(&output);
    assert!(
        text.contains(&format!(
            "imported docker.io/library/app:1 as docker.io/library/app:1 ({})",
            up.app.manifest.digest
        )),
        "{text}"
    );
    assert!(
        text.contains("1 platform manifests the bundle left out"),
        "{text}"
    );
    let stats = cli_text(&berth.data_dir, &["cache", "stats"]);
    assert!(stats.contains("pinned images: 2\n"), "{stats}");
    assert!(
        stats.contains(&format!(
            "imported:docker.io/library/solo:1 -> {}",
            up.solo.manifest.digest
        )),
        "{stats}"
    );
    assert!(staged_files(&berth.data_dir).is_empty());

    // skopeo: byte for byte.
    let dest = tempfile::tempdir().unwrap();
    skopeo_pull(&berth, "solo:1", dest.path(), false);
    assert_dir_matches(dest.path(), &up.solo);
    let dest = tempfile::tempdir().unwrap();
    skopeo_pull(&berth, "app:1", dest.path(), false);
    assert_dir_matches(dest.path(), &up.app.children[0]);

    // dockerd, with berth as its mirror.
    let dockerd = common::dockerd::Dockerd::start(&berth.addr);
    for (name, image) in [("solo:1", &up.solo), ("app:1", &up.app)] {
        dockerd.docker(&["pull", "--quiet", name]);
        let digests = dockerd.docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            name,
        ]);
        assert!(
            digests.contains(&image.manifest.digest),
            "{name}: {digests}"
        );
    }

    // containerd, through a hosts.toml mirror entry.
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
    for (reference, image) in [
        ("docker.io/library/solo:1", &up.solo),
        ("docker.io/library/app:1", &up.app),
    ] {
        containerd.ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            hosts_dir,
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
            .unwrap_or_else(|| panic!("{reference} not in:\n{listed}"));
        assert!(line.contains(&image.manifest.digest), "{line}");
    }

    // podman, naming berth.
    let podman = Podman::new();
    for (name, image) in [("library/solo:1", &up.solo), ("library/app:1", &up.app)] {
        let reference = format!("{}/{name}", berth.addr);
        podman.run(
            &berth,
            &["pull", "--quiet", "--tls-verify=false", &reference],
        );
        let digest = podman.run(
            &berth,
            &["image", "inspect", "--format", "{{.Digest}}", &reference],
        );
        assert_eq!(digest, image.manifest.digest, "{name}");
    }
    assert_eq!(berth.metric("berth_upstream_blob_gets_total").await, 0);

    // Dropped on demand, an imported image is no longer pinned.
    cli_text(&berth.data_dir, &["cache", "rm", "solo:1"]);
    let stats = cli_text(&berth.data_dir, &["cache", "stats"]);
    assert!(stats.contains("pinned images: 1\n"), "{stats}");
}

/// Into a private project, on a stopped berth (its data directory, as a directory layout):
/// then served from the project with credentials only.
#[tokio::test]
async fn a_bundle_goes_into_a_project_of_a_stopped_berth() {
    let mut up = upstream(620, &[MIB]).await;
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    bundle(&up, &layout);
    up.registry.stop();
    let auth = AuthFiles::create();
    let config = offline_config(&up, "") + &auth.config("");
    let mut berth = Berth::start(&config);
    berth.stop();

    let text = succeeded(&import(&berth, &layout, Some("team")));
    assert!(
        text.contains(&format!(
            "imported docker.io/library/solo:1 as team/library/solo:1 ({})",
            up.solo.manifest.digest
        )),
        "{text}"
    );
    berth.relaunch();
    assert!(try_pull(&berth, "team/library/solo:1", None).is_err());
    let dest = try_pull(&berth, "team/library/solo:1", Some(&creds("alice"))).unwrap();
    assert_dir_matches(dest.path(), &up.solo);
    let dest = try_pull(&berth, "team/library/app:1", Some(&creds("alice"))).unwrap();
    assert_dir_matches(dest.path(), &up.app.children[0]);
    // Nothing went to the mirror.
    let listed = cli_text(&berth.data_dir, &["cache", "ls"]);
    assert_eq!(listed, "no cached images\n");
}

/// One flipped byte in one layer, or a tar cut short: refused whole, naming the blob, with
/// nothing imported and nothing left staged, on a running berth and on a stopped one.
#[tokio::test]
async fn a_corrupt_or_truncated_bundle_imports_nothing() {
    let mut up = upstream(630, &[MIB, MIB]).await;
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    bundle(&up, &layout);
    let good = work.path().join("good.tar");
    tar_of(&layout, &good);
    up.registry.stop();
    let mut berth = Berth::start(&offline_config(&up, ""));
    let stats_before = cli_text(&berth.data_dir, &["cache", "stats"]);

    // An image of an upstream this berth does not have: refused before anything is copied.
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    std::fs::write(
        layout.join("index.json"),
        index.replace("docker.io/library/solo:1", "ghcr.io/org/solo:1"),
    )
    .unwrap();
    let output = import(&berth, &layout, None);
    std::fs::write(layout.join("index.json"), index).unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"ghcr.io\" is not configured") && stderr.contains("nothing was imported"),
        "{stderr}"
    );

    // The last layer of solo: the others are staged by the time it is read.
    let layer = &up.solo.blobs.last().unwrap().digest;
    let path = blob_path(&layout, layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[MIB / 2] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let output = import(&berth, &layout, None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(layer.as_str()) && stderr.contains("corrupt"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert_eq!(cli_text(&berth.data_dir, &["cache", "stats"]), stats_before);
    assert_eq!(
        cli_text(&berth.data_dir, &["cache", "ls"]),
        "no cached images\n"
    );
    assert!(
        staged_files(&berth.data_dir).is_empty(),
        "{:?}",
        staged_files(&berth.data_dir)
    );
    assert!(try_pull(&berth, "solo:1", None).is_err());

    // A tar cut short, on the stopped berth.
    berth.stop();
    let tar = std::fs::read(&good).unwrap();
    let cut = work.path().join("cut.tar");
    std::fs::write(&cut, &tar[..tar.len() * 2 / 3]).unwrap();
    let output = import(&berth, &cut, None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("truncated") || stderr.contains("missing"),
        "{stderr}"
    );
    assert!(stderr.contains("blob sha256:"), "{stderr}");
    assert_eq!(cli_text(&berth.data_dir, &["cache", "stats"]), stats_before);
    assert!(staged_files(&berth.data_dir).is_empty());
}

/// An import killed halfway leaves its verified blobs staged; the next run skips them and
/// completes.
#[tokio::test]
async fn an_interrupted_import_resumes() {
    let mut up = upstream(640, &[16 * MIB, 16 * MIB, 16 * MIB, 16 * MIB]).await;
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    bundle(&up, &layout);
    up.registry.stop();
    let berth = Berth::start(&offline_config(&up, ""));

    let mut command = berth_cli(&berth.data_dir);
    let mut child = command.arg("import").arg(&layout).spawn().unwrap();
    let begin = std::time::Instant::now();
    loop {
        let staged = staged_files(&berth.data_dir);
        if staged.iter().any(|f| f.extension().is_none()) {
            break;
        }
        assert!(begin.elapsed().as_secs() < 60, "nothing was staged");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the import finished before it was interrupted"
    );
    assert_eq!(
        cli_text(&berth.data_dir, &["cache", "ls"]),
        "no cached images\n"
    );

    let output = import(&berth, &layout, None);
    let text = succeeded(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let held = stderr
        .lines()
        .find(|l| l.contains("held already"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(!held.contains("; 0 B held already"), "{held}");
    assert!(text.contains("imported docker.io/library/solo:1"), "{text}");
    let dest = tempfile::tempdir().unwrap();
    skopeo_pull(&berth, "solo:1", dest.path(), false);
    assert_dir_matches(dest.path(), &up.solo);
    assert!(staged_files(&berth.data_dir).is_empty());
}

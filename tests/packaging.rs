//! The packages, built by `packaging/build.sh` from the debug binary and used as an operator
//! would: the .deb installed with dpkg, its unit's command started as the `berth` user with
//! the key `berth keygen` made as the docs say; the OCI image loaded into podman and run as its
//! non-root user on a volume. Each pulls through the test upstream and takes a push into a
//! project; the image pushes itself. Both need root (dpkg, rootful podman), as in CI.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::images::{self, Flavor};
use common::packages::{
    auth_config, base_config, build, htpasswd_line, owner, pull_through, push_and_pull_back, run,
    run_ok, Podman, ALICE,
};
use common::upstream::{free_port, reap_with_parent, wait_for_port};
use common::{seeded, skopeo_ok};

const MIB: usize = 1024 * 1024;

/// The installed package; dropping it stops berth and purges the package, so a failed test
/// leaves nothing behind.
struct Installed {
    berth: Option<Child>,
}

impl Installed {
    fn stop(&mut self) {
        if let Some(mut child) = self.berth.take() {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = child.wait();
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.stop();
        let _ = run("dpkg", &["--purge", "berth"]);
    }
}

/// Starts the installed unit's `ExecStart` the way systemd would: as its `User=` and `Group=`,
/// with no capabilities, no new privileges, its `UMask=`, in `/`, with a clean environment.
fn start_unit_command(unit: &str, log: &Path) -> (Child, String) {
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("the unit sets no {key}"))
    };
    let exec_start = setting("ExecStart");
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask \"$0\" && exec \"$@\"", setting("UMask")])
        .arg("setpriv")
        .arg(format!("--reuid={}", setting("User")))
        .arg(format!("--regid={}", setting("Group")))
        .args(["--init-groups", "--no-new-privs", "--bounding-set=-all"])
        .args(["--inh-caps=-all", "--"])
        .args(exec_start.split_whitespace())
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    let mut child = command.spawn().unwrap();
    reap_with_parent(child.id());
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("berth listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            panic!(
                "berth did not start from {exec_start:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    (child, url)
}

/// `systemd-analyze verify` accepts the installed unit, and its offline security review rates
/// the hardening "OK" or better (exposure under 2.0 of 10).
fn analyze_unit(unit_path: &str) {
    if run("systemd-analyze", &["--version"]).status.success() {
        let verify = run("systemd-analyze", &["verify", unit_path]);
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let security = run_ok(
            "systemd-analyze",
            &["security", "--offline=true", "--no-pager", unit_path],
        );
        let exposure: f64 = security
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for berth.service: "))
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
        assert!(exposure < 2.0, "exposure {exposure}:\n{security}");
    } else {
        eprintln!("systemd-analyze is missing: the unit is not verified");
    }
}

#[tokio::test]
async fn the_deb_installs_starts_with_auth_serves_and_purges() {
    let installed_before = run("dpkg-query", &["-W", "-f=${Status}", "berth"]);
    assert!(
        !String::from_utf8_lossy(&installed_before.stdout).contains("installed"),
        "a berth package is installed here; this test installs and purges its own: remove it first"
    );
    let seeded = seeded().await;
    let out = tempfile::tempdir().unwrap();
    let deb = build("deb", out.path());

    let mut installed = Installed { berth: None };
    run_ok("dpkg", &["-i", deb.to_str().unwrap()]);

    // What the package put where.
    assert!(run_ok("/usr/bin/berth", &["--version"]).starts_with("berth "));
    let passwd = run_ok("getent", &["passwd", "berth"]);
    let fields: Vec<&str> = passwd.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "berth is not a system user: {passwd}");
    assert_eq!(fields[5], "/var/lib/berth");
    assert!(fields[6].ends_with("nologin"), "{passwd}");
    run_ok("getent", &["group", "berth"]);
    assert_eq!(
        owner("/var/lib/berth"),
        ("berth".into(), "berth".into(), 0o750)
    );
    assert_eq!(
        owner("/etc/berth/keys"),
        ("berth".into(), "berth".into(), 0o750)
    );
    assert_eq!(
        owner("/etc/berth/berth.toml"),
        ("root".into(), "berth".into(), 0o640)
    );
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", "berth"]);
    assert!(conffiles.contains("/etc/berth/berth.toml"), "{conffiles}");
    // The shipped configuration is valid and uses the state directory.
    let effective = run_ok(
        "/usr/bin/berth",
        &["--config", "/etc/berth/berth.toml", "check-config"],
    );
    assert!(
        effective.contains("data_dir = \"/var/lib/berth\""),
        "{effective}"
    );
    let unit_path = "/lib/systemd/system/berth.service";
    let unit = std::fs::read_to_string(unit_path).unwrap();
    let enabled = "/etc/systemd/system/multi-user.target.wants/berth.service";
    assert!(Path::new(enabled).exists(), "the unit is not enabled");
    analyze_unit(unit_path);

    // The signing key, made by the berth user as docs/deploy.md says.
    run_ok(
        "runuser",
        &[
            "-u",
            "berth",
            "--",
            "/usr/bin/berth",
            "keygen",
            "--key",
            "/etc/berth/keys/token.key",
            "--cert",
            "/etc/berth/keys/token.crt",
        ],
    );
    assert_eq!(
        owner("/etc/berth/keys/token.key"),
        ("berth".into(), "berth".into(), 0o600)
    );
    // Users: root writes, berth reads.
    let htpasswd = "/etc/berth/htpasswd";
    run_ok(
        "install",
        &[
            "-m",
            "0640",
            "-o",
            "root",
            "-g",
            "berth",
            "/dev/null",
            htpasswd,
        ],
    );
    let line = htpasswd_line(
        Command::new("/usr/bin/berth").arg("hash-password"),
        ALICE.0,
        ALICE.1,
    );
    std::fs::write(htpasswd, line).unwrap();
    assert_eq!(owner(htpasswd), ("root".into(), "berth".into(), 0o640));
    let port = free_port();
    let config = base_config(port, &seeded.upstream.url())
        + &auth_config("/etc/berth/keys", "/etc/berth/htpasswd");
    std::fs::write("/etc/berth/berth.toml", config).unwrap();
    assert_eq!(
        owner("/etc/berth/berth.toml"),
        ("root".into(), "berth".into(), 0o640)
    );

    let log = out.path().join("berth.log");
    let (child, url) = start_unit_command(&unit, &log);
    installed.berth = Some(child);
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    let addr = format!("127.0.0.1:{port}");
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    pull_through(&addr, "library/oci:1", &seeded.oci, &show_log);
    let pushed = images::image(Flavor::Oci, 90, &[2 * MIB, MIB], "amd64");
    push_and_pull_back(&addr, "team/app:1", &pushed, &show_log);
    // Everything berth wrote is the berth user's.
    let blobs = run_ok("find", &["/var/lib/berth", "-not", "-user", "berth"]);
    assert!(blobs.is_empty(), "not berth's: {blobs}");

    installed.stop();
    run_ok("dpkg", &["--purge", "berth"]);
    assert!(!run("getent", &["passwd", "berth"]).status.success());
    assert!(!run("getent", &["group", "berth"]).status.success());
    for gone in [
        "/var/lib/berth",
        "/etc/berth",
        unit_path,
        enabled,
        "/usr/bin/berth",
    ] {
        assert!(
            Path::new(gone).symlink_metadata().is_err(),
            "{gone} is left after purge"
        );
    }
}

#[tokio::test]
async fn the_image_runs_as_non_root_serves_and_pushes_itself() {
    let seeded = seeded().await;
    let out = tempfile::tempdir().unwrap();
    let archive = build("image", out.path());
    let mut podman = Podman::new();
    let loaded = podman.ok(&["load", "--quiet", "--input", archive.to_str().unwrap()]);
    let image = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("podman load said {loaded:?}"))
        .to_owned();
    let inspect = |format: &str| podman.ok(&["image", "inspect", "--format", format, &image]);
    assert_eq!(inspect("{{.Config.User}}"), "10001:10001");
    assert_eq!(
        inspect("{{json .Config.Volumes}}"),
        r#"{"/var/lib/berth":{}}"#
    );
    assert_eq!(
        inspect("{{json .Config.ExposedPorts}}"),
        r#"{"5000/tcp":{}}"#
    );

    // The keys, made in the data volume by the image's own user (as docs/deploy.md says).
    let volume = format!("berth-test-{}", std::process::id());
    let data = format!("{volume}:/var/lib/berth");
    podman.ok(&["volume", "create", &volume]);
    let mut keygen = vec!["run", "--rm", "--volume", &data];
    keygen.extend(Podman::RUN);
    keygen.extend([
        image.as_str(),
        "keygen",
        "--key",
        "/var/lib/berth/keys/token.key",
        "--cert",
        "/var/lib/berth/keys/token.crt",
    ]);
    podman.ok(&keygen);
    let etc = tempfile::tempdir().unwrap();
    let mut hash = podman.command();
    hash.args(["run", "--rm", "--interactive"])
        .args(Podman::RUN)
        .args([&image, "hash-password"]);
    let htpasswd = htpasswd_line(&mut hash, ALICE.0, ALICE.1);
    let port = free_port();
    let config = base_config(port, &seeded.upstream.url())
        + &auth_config("/var/lib/berth/keys", "/etc/berth/htpasswd");
    for (name, text) in [("berth.toml", config), ("htpasswd", htpasswd)] {
        let path = etc.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let config_mount = format!(
        "{}/berth.toml:/etc/berth/berth.toml:ro",
        etc.path().display()
    );
    let htpasswd_mount = format!("{}/htpasswd:/etc/berth/htpasswd:ro", etc.path().display());

    let name = volume.clone();
    let mut serve = vec!["run", "--detach", "--name", &name, "--volume", &data];
    serve.extend(["--volume", &config_mount, "--volume", &htpasswd_mount]);
    // As Kubernetes' readOnlyRootFilesystem: berth writes only to its volume.
    serve.extend(["--read-only", "--read-only-tmpfs=false"]);
    serve.extend(Podman::RUN);
    serve.push(&image);
    podman.ok(&serve);
    podman.container = Some(name.clone());
    wait_for_port(port, Duration::from_secs(20));
    let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", &name]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uids.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "10001", "10001", "10001", "10001"]
    );

    let addr = format!("127.0.0.1:{port}");
    let show_log = || podman.log();
    pull_through(&addr, "library/docker:1", &seeded.docker, &show_log);

    // The image pushes itself into a project, and what comes back runs.
    let creds = format!("{}:{}", ALICE.0, ALICE.1);
    let target = format!("{addr}/team/berth:test");
    skopeo_ok(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{target}"),
    ]);
    let digest = |reference: &str, tls: &[&str]| {
        let mut args = vec!["inspect", "--format", "{{.Digest}}"];
        args.extend(tls);
        args.push(reference);
        skopeo_ok(&args).trim().to_owned()
    };
    assert_eq!(
        digest(
            &format!("docker://{target}"),
            &["--tls-verify=false", "--creds", &creds]
        ),
        digest(&format!("oci-archive:{}", archive.display()), &[])
    );
    // A second podman, with nothing local, pulls it back from berth and runs it.
    let elsewhere = Podman::new();
    elsewhere.ok(&[
        "pull",
        "--quiet",
        "--tls-verify=false",
        "--creds",
        &creds,
        &target,
    ]);
    let mut version = vec!["run", "--rm"];
    version.extend(Podman::RUN);
    version.extend([target.as_str(), "--version"]);
    assert!(elsewhere.ok(&version).starts_with("berth "));
}

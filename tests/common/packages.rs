//! The packages of `packaging/build.sh`, built from the debug binary, and what the package
//! tests do with them: configs as docs/deploy.md writes them, pulls and pushes with skopeo,
//! podman with a private store for running the image.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::images::Image;
use super::private::write_oci_layout;
use super::{assert_dir_matches, skopeo, skopeo_ok};

/// The one user of the package tests' `[auth]`, a developer in project `team`.
pub const ALICE: (&str, &str) = ("alice", "alice-pw");

/// Runs `packaging/build.sh KIND` on the debug binary; the path it printed last.
pub fn build(kind: &str, out: &Path) -> PathBuf {
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/build.sh"))
        .arg(kind)
        .env("BERTH_BINARY", env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_OUT", out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "build.sh {kind}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default());
    assert!(path.is_file(), "build.sh {kind} printed {stdout:?}");
    assert!(
        path.starts_with(out),
        "{} is not in BERTH_OUT",
        path.display()
    );
    path
}

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `berth hash-password` of `password` with `berth` (a command line), as an htpasswd line.
pub fn htpasswd_line(berth: &mut Command, user: &str, password: &str) -> String {
    let mut child = berth
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{password}").unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "hash-password failed");
    format!(
        "{user}:{}\n",
        String::from_utf8_lossy(&output.stdout).trim()
    )
}

/// The `[auth]` part of a config (as docs/deploy.md writes it) with project `team`.
pub fn auth_config(key_dir: &str, htpasswd: &str) -> String {
    format!(
        "[auth]\nservice = \"registry.example.com\"\nsigning_key = \"{key_dir}/token.key\"\ncertificate = \"{key_dir}/token.crt\"\nhtpasswd = \"{htpasswd}\"\nadmins = [\"root\"]\n\n[[projects]]\nname = \"team\"\nmembers = {{ alice = \"developer\" }}\n"
    )
}

/// The rest of the config: `listen`, the data directory, the test upstream as docker.io.
pub fn base_config(port: u16, upstream: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\ndata_dir = \"/var/lib/berth\"\n\n[[upstreams]]\nname = \"docker.io\"\nurl = \"{upstream}\"\n\n"
    )
}

/// Pulls `image` (seeded upstream as `name`) through berth at `addr` and checks every byte.
pub fn pull_through(addr: &str, name: &str, image: &Image, log: &dyn Fn() -> String) {
    let dest = tempfile::tempdir().unwrap();
    let output = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        "--retry-times",
        "0",
        &format!("docker://{addr}/{name}"),
        &format!("dir:{}", dest.path().display()),
    ]);
    assert!(
        output.status.success(),
        "pull {name}: {}\nberth log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        log()
    );
    assert_dir_matches(dest.path(), image);
}

/// Pushes `image` into berth's `target` as alice and pulls it back, byte for byte.
pub fn push_and_pull_back(addr: &str, target: &str, image: &Image, log: &dyn Fn() -> String) {
    let source = tempfile::tempdir().unwrap();
    write_oci_layout(image, source.path());
    let creds = format!("{}:{}", ALICE.0, ALICE.1);
    let output = skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        "--retry-times",
        "0",
        &format!("oci:{}:latest", source.path().display()),
        &format!("docker://{addr}/{target}"),
    ]);
    assert!(
        output.status.success(),
        "push {target}: {}\nberth log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        log()
    );
    let dest = tempfile::tempdir().unwrap();
    skopeo_ok(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{addr}/{target}"),
        &format!("dir:{}", dest.path().display()),
    ]);
    assert_dir_matches(dest.path(), image);
}

pub fn owner(path: &str) -> (String, String, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |db: &str, id: u32| {
        run_ok("getent", &[db, &id.to_string()])
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    (
        name("passwd", meta.uid()),
        name("group", meta.gid()),
        meta.permissions().mode() & 0o7777,
    )
}

/// podman with a private store, and a container of it removed when dropped.
pub struct Podman {
    store: tempfile::TempDir,
    pub container: Option<String>,
}

impl Podman {
    pub fn new() -> Podman {
        Podman {
            store: tempfile::tempdir().unwrap(),
            container: None,
        }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.store.path().join("root"))
            .arg("--runroot")
            .arg(self.store.path().join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"]);
        // crun refuses hosts with hybrid cgroups (like this test's VM); runc runs there too.
        if run("runc", &["--version"]).status.success() {
            command.args(["--runtime", "runc"]);
        }
        command
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.command().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// `podman run` arguments every container here takes: podman's default limits are raised
    /// ones, which root without CAP_SYS_RESOURCE (a sandboxed CI) may not set.
    pub const RUN: [&'static str; 6] = [
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        "--network",
        "host",
    ];

    pub fn log(&self) -> String {
        match &self.container {
            Some(name) => {
                let output = self.command().args(["logs", name]).output().unwrap();
                String::from_utf8_lossy(&output.stderr).into_owned()
            }
            None => String::new(),
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(name) = self.container.take() {
            let _ = self
                .command()
                .args(["rm", "--force", "--time", "0", &name])
                .output();
        }
    }
}

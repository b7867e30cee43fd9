//! Shared test fixtures: the upstream (a real `docker-registry` behind a token issuer), berth
//! itself as a real process, and the skopeo client.
#![allow(dead_code)]

pub mod balancer;
pub mod ca;
pub mod cli;
pub mod containerd;
pub mod dockerd;
pub mod fault;
pub mod garage;
pub mod gauge;
pub mod images;
pub mod nginx;
pub mod packages;
pub mod pki;
pub mod private;
pub mod proxy;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::OnceCell;

use self::images::{Flavor, Image};
use self::upstream::{UpstreamRegistry, SEEDER};

/// The images every test may pull, seeded once per test binary.
pub struct Seeded {
    pub upstream: UpstreamRegistry,
    pub oci: Image,
    pub docker: Image,
    pub oci_index: Image,
    pub docker_list: Image,
}

static SEEDED: OnceCell<Seeded> = OnceCell::const_new();

/// An upstream account that may pull `private/*`.
pub const PRIVATE_USER: (&str, &str) = ("priv", "priv-pw");
/// An upstream account that may pull nothing berth's tests use.
pub const OTHER_USER: (&str, &str) = ("other", "other-pw");

const MIB: usize = 1024 * 1024;

/// The shared upstream with its seeded images:
/// `library/oci:1`, `library/docker:1`, `library/multi-oci:1`, `library/multi-docker:1`,
/// and `private/secret:1`, which anonymous callers may not pull.
pub async fn seeded() -> &'static Seeded {
    SEEDED
        .get_or_init(|| async {
            let upstream = UpstreamRegistry::start(vec![
                (SEEDER.0, SEEDER.1, "", "pull,push,delete"),
                (PRIVATE_USER.0, PRIVATE_USER.1, "private/", "pull"),
                (OTHER_USER.0, OTHER_USER.1, "elsewhere/", "pull"),
            ]);
            let seeded = Seeded {
                oci: images::image(Flavor::Oci, 1, &[3 * MIB, MIB], "amd64"),
                docker: images::image(Flavor::Docker, 2, &[2 * MIB, MIB / 2], "amd64"),
                oci_index: images::multi_arch(Flavor::Oci, 3, &[MIB]),
                docker_list: images::multi_arch(Flavor::Docker, 4, &[MIB]),
                upstream,
            };
            let u = &seeded.upstream;
            u.push("library/oci", "1", &seeded.oci).await;
            u.push("library/docker", "1", &seeded.docker).await;
            u.push("library/multi-oci", "1", &seeded.oci_index).await;
            u.push("library/multi-docker", "1", &seeded.docker_list)
                .await;
            u.push("private/secret", "1", &seeded.oci).await;
            seeded
        })
        .await
}

/// A berth process with its own data directory (kept across [`Berth::restart`]).
pub struct Berth {
    pub url: String,
    pub addr: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

/// The berth config for one upstream named `docker.io` at `upstream_url`, plus `extra` TOML.
pub fn config_for(upstream_url: &str, tag_ttl: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info,berth=debug\"\n[[upstreams]]\nname = \"docker.io\"\nurl = \"{upstream_url}\"\ntag_ttl = \"{tag_ttl}\"\nconnect_timeout = \"2s\"\nread_timeout = \"5s\"\n{extra}"
    )
}

impl Berth {
    pub fn start(config: &str) -> Berth {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut berth = Berth::start_in(config, &data_dir);
        berth._dir = Some(dir);
        berth
    }

    /// Starts berth on an existing data directory (which outlives this `Berth`).
    pub fn start_in(config: &str, data_dir: &Path) -> Berth {
        let config_path = data_dir.with_extension(format!("{}.toml", std::process::id()));
        std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
        std::fs::write(&config_path, config).unwrap();
        let mut berth = Berth {
            url: String::new(),
            addr: String::new(),
            data_dir: data_dir.to_owned(),
            config: config_path,
            child: None,
            _dir: None,
        };
        berth.launch();
        berth
    }

    /// Keeps the data directory (and its temp parent) alive beyond this `Berth`.
    pub fn into_data_dir(mut self) -> PathBuf {
        self.kill();
        if let Some(dir) = self._dir.take() {
            let _ = dir.keep();
        }
        self.data_dir.clone()
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        upstream::reap_with_parent(child.id());
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
            .unwrap_or_else(|_| panic!("berth did not start; log:\n{}", self.log()));
        self.addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        self.url = url;
        self.child = Some(child);
    }

    /// Stops berth the hard way (SIGKILL) and starts it again on the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Stops berth gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and returns at once (see [`Berth::wait_exit`]).
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let pid = rustix::process::Pid::from_child(child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// Waits for berth to exit (after [`Berth::terminate`]).
    pub fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.take().and_then(|mut child| child.wait().ok())
    }

    /// Starts berth again after [`Berth::stop`] or [`Berth::kill`].
    pub fn relaunch(&mut self) {
        self.launch();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Anonymous (heap) memory of the berth process, in KiB.
    pub fn rss_anon_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// Waits (30 s at most) until the counter `name` reaches `at_least`.
    pub async fn wait_for_metric(&self, name: &str, at_least: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.metric(name).await < at_least {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} stayed below {at_least}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A counter from `/metrics`: the series `name` names exactly when it has labels
    /// (`berth_x_total{upstream="docker.io"}`), else the sum of every series of that name.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_in(&text, name).unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
    }

    /// Files under `blobs/` (whatever their state).
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let root = self.data_dir.join("blobs/sha256");
        for shard in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for entry in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                found.push(entry.path());
            }
        }
        found
    }

    /// Waits (up to 10 s) until no fill is in flight: clients get verified bytes before the
    /// fill has committed them, so a test that inspects the disk (or kills berth) must let it
    /// finish: its temp file renamed and the index flushed.
    pub fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while (self.temp_files() > 0 || self.gauge_now("berth_fills_in_flight") != Some(0))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A value from `/metrics`, read without an async runtime (`None` when unreadable).
    fn gauge_now(&self, name: &str) -> Option<u64> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
    }

    pub fn temp_files(&self) -> usize {
        std::fs::read_dir(self.data_dir.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A series of a Prometheus text exposition, or the sum of a family's series (see
/// [`Berth::metric`]); `None` when there is none.
pub fn metric_in(text: &str, name: &str) -> Option<u64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let matches = if name.contains('{') {
            series == name
        } else {
            series.split('{').next() == Some(name)
        };
        if let (true, Ok(value)) = (matches, value.parse::<f64>()) {
            found = Some(found.unwrap_or(0) + value as u64);
        }
    }
    found
}

/// Anonymous (heap) memory of process `pid`, in KiB (0 once it is gone).
pub fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The whole body of a GET; panics on a transport error.
pub async fn get_bytes(client: &reqwest::Client, url: &str) -> bytes::Bytes {
    client.get(url).send().await.unwrap().bytes().await.unwrap()
}

/// Runs skopeo with TLS verification off for the source (berth speaks plain HTTP here).
pub fn skopeo(args: &[&str]) -> Output {
    let output = Command::new("skopeo")
        .args(["--command-timeout", "120s"])
        .args(args)
        .output()
        .expect("skopeo is installed (run the README's test command)");
    output
}

/// Runs skopeo and panics with its stderr unless it succeeded; its stdout.
pub fn skopeo_ok(args: &[&str]) -> String {
    let output = skopeo(args);
    assert!(
        output.status.success(),
        "skopeo {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `skopeo inspect --raw` of `image` through berth, with `creds` (`user:password`) or none.
pub fn skopeo_inspect_raw(berth: &Berth, image: &str, creds: Option<&str>) -> Output {
    let reference = format!("docker://{}/{image}", berth.addr);
    let mut args = vec![
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--retry-times",
        "0",
    ];
    match creds {
        Some(c) => args.extend(["--creds", c]),
        None => args.push("--no-creds"),
    }
    args.push(&reference);
    skopeo(&args)
}

/// `skopeo copy` of `image` from berth into a fresh `dir:` layout, with upstream credentials
/// (`user:password`) or none; skopeo's stderr on failure.
pub fn try_pull(
    berth: &Berth,
    image: &str,
    creds: Option<&str>,
) -> Result<tempfile::TempDir, String> {
    let dest = tempfile::tempdir().unwrap();
    let source = format!("docker://{}/{image}", berth.addr);
    let target = format!("dir:{}", dest.path().display());
    let mut args = vec!["copy", "--src-tls-verify=false", "--retry-times", "0"];
    match creds {
        Some(c) => args.extend(["--src-creds", c]),
        None => args.push("--src-no-creds"),
    }
    args.extend([source.as_str(), target.as_str()]);
    let output = skopeo(&args);
    if output.status.success() {
        Ok(dest)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `skopeo copy` from berth into a `dir:` layout; panics with skopeo's stderr on failure.
pub fn skopeo_pull(berth: &Berth, image: &str, dest: &Path, all: bool) {
    let source = format!("docker://{}/{image}", berth.addr);
    let dest_arg = format!("dir:{}", dest.display());
    let mut args = vec!["copy", "--src-tls-verify=false", "--retry-times", "0"];
    if all {
        args.push("--all");
    }
    args.push(&source);
    args.push(&dest_arg);
    let output = skopeo(&args);
    assert!(
        output.status.success(),
        "skopeo copy {image} failed:\n{}\nberth log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        berth.log()
    );
}

/// Asserts that a `dir:` layout holds exactly what was seeded: the same manifest bytes (so
/// the same digest) and every blob, byte for byte.
pub fn assert_dir_matches(dest: &Path, image: &Image) {
    let manifest = std::fs::read(dest.join("manifest.json")).unwrap();
    assert_eq!(
        images::sha256(&manifest),
        image.manifest.digest,
        "manifest digest changed in transit"
    );
    for blob in image.all_blobs() {
        let hex = blob.digest.trim_start_matches("sha256:");
        let path = dest.join(hex);
        let alt = dest.join(format!("{hex}.manifest.json"));
        let data = std::fs::read(&path)
            .or_else(|_| std::fs::read(&alt))
            .unwrap_or_else(|_| panic!("{} missing from {}", blob.digest, dest.display()));
        assert_eq!(
            images::sha256(&data),
            blob.digest,
            "{} corrupted",
            blob.digest
        );
    }
}

/// podman with a private image store (vfs, no daemon); panics with berth's log on failure.
pub struct Podman {
    store: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        Podman {
            store: tempfile::tempdir().unwrap(),
        }
    }

    pub fn run(&self, berth: &Berth, args: &[&str]) -> String {
        let output = self.output(args);
        assert!(
            output.status.success(),
            "podman {args:?} failed:\n{}\nberth log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            berth.log()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Runs podman and returns what it did, failure included.
    pub fn output(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .arg("--root")
            .arg(self.store.path().join("root"))
            .arg("--runroot")
            .arg(self.store.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args)
            .output()
            .expect("podman is installed (run the README's test command)")
    }
}

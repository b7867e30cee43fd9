//! A private dockerd (own data root, exec root and socket; no iptables, no bridge, vfs) with
//! berth as its `registry-mirrors` entry, driven with the docker CLI.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::upstream::reap_with_parent;

pub struct Dockerd {
    socket: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start(mirror: &str) -> Dockerd {
        Dockerd::start_with(serde_json::json!({
            "registry-mirrors": [format!("http://{mirror}")],
            "insecure-registries": [mirror],
        }))
    }

    /// With berth as an `https://` mirror and no insecure-registries entry: the CA must be in
    /// `/etc/docker/certs.d/HOST:PORT/ca.crt`, where dockerd looks for it.
    pub fn start_tls(mirror: &str) -> Dockerd {
        Dockerd::start_with(serde_json::json!({
            "registry-mirrors": [format!("https://{mirror}")],
        }))
    }

    fn start_with(registries: serde_json::Value) -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let mut config = serde_json::json!({
            "iptables": false,
            "ip-forward": false,
            "ip-masq": false,
            "bridge": "none",
            "storage-driver": "vfs",
        });
        if let (Some(config), Some(registries)) = (config.as_object_mut(), registries.as_object()) {
            config.extend(registries.clone());
        }
        std::fs::write(dir.path().join("daemon.json"), config.to_string()).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(dir.path().join("daemon.json"))
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dockerd.log")).unwrap())
            .spawn()
            .expect("dockerd is installed (run the README's test command)");
        reap_with_parent(child.id());
        let dockerd = Dockerd {
            socket,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.try_docker(&["version"]).0 {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start:\n{}",
                dockerd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        dockerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn try_docker(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .expect("the docker CLI is installed");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs the docker CLI against this daemon; panics with both logs on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_docker(args);
        assert!(
            ok,
            "docker {args:?} failed:\n{stdout}{stderr}\ndockerd log:\n{}",
            self.log()
        );
        stdout
    }
}

impl Drop for Dockerd {
    /// SIGTERM first: dockerd then stops the containerd it started itself.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

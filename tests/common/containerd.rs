//! A private containerd daemon (its own root, state and socket) driven with `ctr`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::upstream::reap_with_parent;

pub struct Containerd {
    socket: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{socket}\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable = true\n",
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            socket = socket.display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("containerd.log")).unwrap())
            .spawn()
            .expect("containerd is installed (run the README's test command)");
        reap_with_parent(child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd {
            socket,
            child,
            _dir: dir,
        }
    }

    /// Runs `ctr` against this daemon in the `berth-test` namespace; panics on failure.
    pub fn ctr(&self, args: &[&str]) -> String {
        let output = self.ctr_output(args);
        assert!(
            output.status.success(),
            "ctr {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `ctr` against this daemon and returns what it did, failure included.
    pub fn ctr_output(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "berth-test"])
            .args(args)
            .output()
            .expect("ctr is installed")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

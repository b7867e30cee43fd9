//! nginx in two roles: Docker Hub's blob CDN (the upstream registry redirects blob GETs to it,
//! on another origin, and it refuses any request that carries an `Authorization` header, as a
//! signed-URL CDN does), and a TLS-terminating proxy in front of berth.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::upstream::{free_port, reap_with_parent, wait_for_port};

/// One nginx process serving one `server { … }` block.
pub struct Nginx {
    pub port: u16,
    access_log: std::path::PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts nginx with `server` (which must `listen 127.0.0.1:<port>`) in `work`.
    pub fn start(port: u16, server: &str, work: &Path) -> Nginx {
        std::fs::create_dir_all(work).unwrap();
        let config = format!(
            "worker_processes 1;\n{user}\npid {work}/nginx.pid;\nerror_log {work}/error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log {work}/access.log;\n  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fastcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;\n  sendfile on;\n  {server}\n}}\n",
            user = if is_root() { "user root;" } else { "" },
            work = work.display(),
        );
        let conf = work.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new("nginx")
            .arg("-e")
            .arg(work.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (run the README's test command)");
        reap_with_parent(child.id());
        wait_for_port(port, Duration::from_secs(10));
        Nginx {
            port,
            access_log: work.join("access.log"),
            child,
        }
    }

    /// The CDN: serves the files under `root` on `http://localhost:<port>/`.
    pub fn cdn(root: &Path, work: &Path) -> Nginx {
        let port = free_port();
        let server = format!(
            "server {{\n    listen 127.0.0.1:{port};\n    root {};\n    location / {{\n      if ($http_authorization) {{ return 403; }}\n    }}\n  }}",
            root.display()
        );
        Nginx::start(port, &server, work)
    }

    /// The base URL the registry redirects to: `localhost`, a different origin than the
    /// registry's `127.0.0.1`.
    pub fn base_url(&self) -> String {
        format!("http://localhost:{}/", self.port)
    }

    /// Requests answered with `status`.
    pub fn answered(&self, status: u16) -> usize {
        let log = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        let needle = format!("\" {status} ");
        log.lines().filter(|l| l.contains(&needle)).count()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for Nginx {
    /// SIGTERM, so the master takes its workers down (SIGKILL would orphan them).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

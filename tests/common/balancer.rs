//! An nginx round-robin load balancer in front of several backends, as a site puts in front of
//! several berth nodes: no sticky sessions, so consecutive requests of one client (an upload's
//! POST, PATCHes and PUT) land on different nodes. Bodies stream both ways (no buffering, no
//! size limit), and the forwarding headers a proxy sets are passed on.
//!
//! Its access log records which backend answered each request, so a test can show that the
//! requests really spread over the nodes.

use std::path::PathBuf;

use super::nginx::Nginx;
use super::upstream::free_port;

pub struct Balancer {
    nginx: Nginx,
    backends: Vec<String>,
    log: PathBuf,
    _work: tempfile::TempDir,
}

impl Balancer {
    /// Starts nginx on a free port, balancing over `backends` (`host:port` each).
    pub fn start(backends: &[String]) -> Balancer {
        let work = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = work.path().join("balancer.log");
        let servers: String = backends
            .iter()
            .map(|b| format!("    server {b};\n"))
            .collect();
        // `$upstream_addr` lists every backend tried ("a, b" after a failover); the last one
        // answered. Plain round-robin: no ip_hash, no hash, no sticky cookie.
        let http_context = format!(
            r#"log_format balancer '$upstream_addr $status $request_method $request_uri';
  upstream backends {{
{servers}    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
    access_log {log} balancer;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
    }}
  }}"#,
            log = log.display(),
        );
        let nginx = Nginx::start(port, &http_context, &work.path().join("nginx"));
        Balancer {
            nginx,
            backends: backends.to_vec(),
            log,
            _work: work,
        }
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.nginx.port)
    }

    /// `127.0.0.1:<port>`, as a registry reference's host.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.nginx.port)
    }

    /// Every logged request: (the backend that answered, status, method, URI).
    pub fn requests(&self) -> Vec<(String, u16, String, String)> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let (upstreams, rest) = line.split_once(' ').and_then(|(first, rest)| {
                    // "a, b 200 GET /" after a failover: the address list has spaces.
                    let mut upstreams = first.to_owned();
                    let mut rest = rest;
                    while upstreams.ends_with(',') {
                        let (next, tail) = rest.split_once(' ')?;
                        upstreams.push(' ');
                        upstreams.push_str(next);
                        rest = tail;
                    }
                    Some((upstreams, rest))
                })?;
                let mut fields = rest.splitn(3, ' ');
                let status = fields.next()?.parse().ok()?;
                let method = fields.next()?.to_owned();
                let uri = fields.next().unwrap_or_default().to_owned();
                let answered = upstreams.rsplit(", ").next()?.to_owned();
                Some((answered, status, method, uri))
            })
            .collect()
    }

    /// How many logged requests each backend answered, in the order of the backends given.
    pub fn per_backend(&self) -> Vec<usize> {
        let requests = self.requests();
        self.backends
            .iter()
            .map(|b| requests.iter().filter(|(a, ..)| a == b).count())
            .collect()
    }

    /// Waits (20 s at most: a loaded CI box) until `n` requests are logged: nginx writes a
    /// line once the response is sent, which may be just after the client has read it.
    pub fn wait_logged(&self, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.requests().len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

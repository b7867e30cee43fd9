//! A real 3-node Garage cluster (a distributed S3 store written in Rust) on 127.0.0.1, as the
//! shared store several berth nodes use: replication factor 3, so any one node may die and
//! reads and writes go on with a quorum of 2.
//!
//! One cluster per test binary ([`garage`]); each test takes a fresh bucket in it with
//! [`Garage::new_bucket`], since the tests of one binary run in parallel. Every node has its own
//! directories and free ports; the `garage` CLI reaches a node through that node's config file.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::upstream::reap_with_parent;

/// Nodes in the cluster: replication 3 needs 3.
pub const NODES: usize = 3;
pub const REGION: &str = "garage";
/// The key every bucket of the cluster grants read, write and owner to.
const KEY_NAME: &str = "berth-tests";
/// A node that is not up after this long has failed (a cold start takes about a second).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

static GARAGE: OnceLock<Garage> = OnceLock::new();

/// The cluster of this test binary, started on first use.
pub fn garage() -> &'static Garage {
    GARAGE.get_or_init(Garage::start)
}

struct Node {
    dir: PathBuf,
    rpc_port: u16,
    s3_port: u16,
    admin_port: u16,
    /// `<full node id>@127.0.0.1:<rpc port>`, known once the node has started.
    id: String,
    /// `None` while the node is killed.
    child: Mutex<Option<Child>>,
}

impl Node {
    fn config(&self) -> PathBuf {
        self.dir.join("garage.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("garage.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("garage")
            .arg("-c")
            .arg(self.config())
            .arg("server")
            .env("RUST_LOG", "garage=info,garage_api_s3=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("garage is installed (run the README's test command: bash tests/run.sh)");
        reap_with_parent(child.id());
        *self.child.lock().unwrap() = Some(child);
    }

    fn is_running(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    /// Storage nodes this node is connected to (itself included), from the admin API's
    /// `GetClusterHealth`; `None` while it does not answer.
    fn storage_nodes_up(&self, admin_token: &str) -> Option<u64> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET /v2/GetClusterHealth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {admin_token}\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        let health: serde_json::Value = serde_json::from_str(body).ok()?;
        health["storageNodesUp"].as_u64()
    }
}

/// A running 3-node cluster with one access key and one bucket it may use.
pub struct Garage {
    nodes: Vec<Node>,
    key_id: String,
    secret: String,
    bucket: String,
    admin_token: String,
    /// How long [`Garage::start`] took, up to the first bucket being usable.
    pub started_in: Duration,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// Starts the cluster, connects the nodes, applies a layout with the three of them (1 GB
    /// each, one zone each), creates the key and the bucket `berth`, and waits until every node
    /// reports itself fully operational.
    pub fn start() -> Garage {
        let begin = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        remove_with_parent(dir.path());
        let secret = random_hex(32);
        let admin_token = random_hex(16);
        let ports = free_ports(NODES * 3);
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let node = Node {
                rpc_port: ports[3 * i],
                s3_port: ports[3 * i + 1],
                admin_port: ports[3 * i + 2],
                dir: node_dir,
                id: String::new(),
                child: Mutex::new(None),
            };
            std::fs::write(node.config(), node_config(&node, &secret, &admin_token)).unwrap();
            node.launch();
            nodes.push(node);
        }
        let mut garage = Garage {
            nodes,
            key_id: String::new(),
            secret: String::new(),
            bucket: "berth".to_owned(),
            admin_token,
            started_in: Duration::ZERO,
            _dir: dir,
        };
        for i in 0..NODES {
            let id = garage.cli_on(i, &["node", "id", "-q"]);
            garage.nodes[i].id = id.trim().to_owned();
        }
        for i in 1..NODES {
            let id = garage.nodes[i].id.clone();
            garage.cli_on(0, &["node", "connect", &id]);
        }
        for i in 0..NODES {
            let id = garage.nodes[i].id.clone();
            let short = id.split('@').next().unwrap_or(&id).to_owned();
            let zone = format!("z{i}");
            garage.cli_on(0, &["layout", "assign", "-z", &zone, "-c", "1G", &short]);
        }
        garage.cli_on(0, &["layout", "apply", "--version", "1"]);
        garage.wait_healthy();
        let request = serde_json::json!({ "name": KEY_NAME }).to_string();
        let key = garage.cli_on(0, &["json-api", "CreateKey", &request]);
        let key: serde_json::Value = serde_json::from_str(&key)
            .unwrap_or_else(|e| panic!("garage CreateKey answered {key:?}: {e}"));
        garage.key_id = key["accessKeyId"].as_str().unwrap().to_owned();
        garage.secret = key["secretAccessKey"].as_str().unwrap().to_owned();
        garage.new_bucket("berth");
        garage.started_in = begin.elapsed();
        garage
    }

    /// The S3 API URL of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..NODES).map(|i| self.endpoint(i)).collect()
    }

    /// The `host:port` of node `i`'s S3 API (for a load balancer's upstream list).
    pub fn s3_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// The bucket made at start; tests that write should rather take their own.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key_id(&self) -> &str {
        &self.key_id
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// Creates bucket `name` (a valid S3 bucket name: lowercase, digits, `-`; unique in the test
    /// binary, or this retries for a minute and panics) and grants the cluster's key read,
    /// write and owner on it. Returns `name`.
    pub fn new_bucket(&self, name: &str) -> String {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", KEY_NAME,
        ]);
        name.to_owned()
    }

    /// The `[storage.s3]` section of a berth config that uses `bucket` through node `i`.
    pub fn berth_config(&self, i: usize, bucket: &str) -> String {
        format!(
            "[storage.s3]\nendpoint = \"{}\"\nbucket = \"{bucket}\"\nregion = \"{REGION}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            self.endpoint(i),
            self.key_id,
            self.secret
        )
    }

    /// Kills node `i` (SIGKILL: a crash, not a shutdown). The others keep a quorum.
    pub fn kill(&self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its directories and ports, and waits until every node sees the
    /// whole cluster again.
    pub fn restart(&self, i: usize) {
        self.kill(i);
        self.nodes[i].launch();
        // Left alone, the others try the node again only after a backoff of about 30 s.
        for j in (0..NODES).filter(|&j| j != i && self.nodes[j].is_running()) {
            self.cli_on(j, &["node", "connect", &self.nodes[i].id]);
        }
        self.wait_healthy();
    }

    /// Node `i`'s log (stdout and stderr).
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log()
    }

    /// Waits until every running node is connected to every running node (with one node
    /// killed the others are degraded but serve: quorum is 2 of 3).
    fn wait_healthy(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let running = self.nodes.iter().filter(|n| n.is_running()).count() as u64;
        for (i, node) in self.nodes.iter().enumerate() {
            while node.is_running() && node.storage_nodes_up(&self.admin_token) != Some(running) {
                if Instant::now() > deadline {
                    panic!(
                        "garage node {i} does not see the {running} running nodes after {READY_TIMEOUT:?}; its log:\n{}",
                        node.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Runs the CLI against the first running node.
    fn cli(&self, args: &[&str]) -> String {
        let i = (0..NODES)
            .find(|&i| self.nodes[i].is_running())
            .expect("a running garage node");
        self.cli_on(i, args)
    }

    /// Runs `garage -c <node i's config> args`, retrying for a while: right after start the
    /// node may not listen yet, and right after a layout change it may not have it yet.
    fn cli_on(&self, i: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let output = self.run_cli(i, args);
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "garage {args:?} on node {i} kept failing:\n{}{}\nnode log:\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                    self.nodes[i].log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn run_cli(&self, i: usize, args: &[&str]) -> Output {
        Command::new("garage")
            .arg("-c")
            .arg(self.nodes[i].config())
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .output()
            .expect("garage is installed (run the README's test command: bash tests/run.sh)")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.kill(i);
        }
    }
}

fn node_config(node: &Node, secret: &str, admin_token: &str) -> String {
    format!(
        r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{admin_token}"
"#,
        dir = node.dir.display(),
        rpc = node.rpc_port,
        s3 = node.s3_port,
        admin = node.admin_port,
    )
}

/// Removes `dir` once the test process is gone: the cluster lives in a static, which is never
/// dropped, and its replicas of every object written would pile up in the temp directory.
/// Waits a little so the nodes' watchdogs have killed them first.
fn remove_with_parent(dir: &std::path::Path) {
    let parent = std::process::id();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; sleep 2; rm -rf '{}'",
            dir.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// `n` distinct free ports: all bound at once, so none is handed out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new().fill(&mut buf).unwrap();
    hex::encode(buf)
}

//! A real CNCF Distribution registry (`docker-registry`) as the upstream, configured with
//! `auth: token` like Docker Hub, and the small token issuer it trusts.
//!
//! The issuer grants anonymous pull on `library/*`, and everything to the `seeder` user that
//! pushes the test images. Tokens are ES256 JWTs whose `kid` is the libtrust key ID of the
//! certificate's key, which is how Distribution finds the key in its `rootcertbundle`.

use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::images::{Blob, Image};
use super::nginx::Nginx;
use super::pki::ServeTls;

pub const SERVICE: &str = "test-registry";
pub const ISSUER: &str = "test-issuer";
pub const SEEDER: (&str, &str) = ("seeder", "seed-password");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
}

/// Kills `pid` when the test process `parent` is gone: tests keep shared servers in statics,
/// which are never dropped, so their children need a watchdog.
pub fn reap_with_parent(pid: u32) {
    let parent = std::process::id();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {parent} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill {pid} 2>/dev/null"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut encoded = String::new();
    for &byte in &hash[..30] {
        bits = (bits << 8) | byte as u32;
        nbits += 8;
        while nbits >= 5 {
            nbits -= 5;
            encoded.push(ALPHABET[((bits >> nbits) & 31) as usize] as char);
        }
    }
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

/// The issuer's signing key and certificate.
pub struct Pki {
    pub key_pem: String,
    pub cert_pem: String,
    pub kid: String,
}

impl Pki {
    pub fn generate() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["token-issuer".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Pki {
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            kid: libtrust_key_id(&key.public_key_der()),
        }
    }
}

/// Who may do what on the upstream: (user, password, repository prefix, actions).
pub type Grant = (&'static str, &'static str, &'static str, &'static str);

pub struct TokenIssuer {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    /// Every scope asked for, in order.
    scopes: Arc<Mutex<Vec<String>>>,
    open: Arc<Mutex<Option<String>>>,
    failing: Arc<Mutex<Option<(String, u16)>>>,
}

struct IssuerState {
    encoding: jsonwebtoken::EncodingKey,
    kid: String,
    grants: Vec<Grant>,
    requests: Arc<AtomicUsize>,
    scopes: Arc<Mutex<Vec<String>>>,
    /// A repository prefix anonymous callers may pull besides `library/`.
    open: Arc<Mutex<Option<String>>>,
    /// A repository whose anonymous token requests fail, and the status they get (an issuer
    /// having trouble).
    failing: Arc<Mutex<Option<(String, u16)>>>,
}

impl TokenIssuer {
    /// Starts the issuer on its own thread. Anonymous callers get pull on `library/*`.
    pub fn start(pki: &Pki, grants: Vec<Grant>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(Mutex::new(None));
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(Mutex::new(None));
        let state = web::Data::new(IssuerState {
            scopes: Arc::clone(&scopes),
            open: Arc::clone(&open),
            encoding: jsonwebtoken::EncodingKey::from_ec_pem(pki.key_pem.as_bytes()).unwrap(),
            kid: pki.kid.clone(),
            grants,
            requests: Arc::clone(&requests),
            failing: Arc::clone(&failing),
        });
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .route("/token", web::get().to(issue))
                })
                .workers(1)
                .listen(listener)
                .unwrap()
                .run()
                .await
            })
        });
        wait_for_port(port, Duration::from_secs(5));
        TokenIssuer {
            port,
            requests,
            scopes,
            open,
            failing,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Makes anonymous token requests for `repo` fail with 503 (`None`: none fail). Requests
    /// with credentials are answered as usual.
    /// Lets anonymous callers pull repositories under `prefix` too (`None`: `library/` only),
    /// as when an upstream's owner makes a repository public.
    pub fn open_anonymous(&self, prefix: Option<&str>) {
        *self.open.lock().unwrap() = prefix.map(str::to_owned);
    }

    /// Token requests whose scope names `repo`.
    pub fn requests_for(&self, repo: &str) -> usize {
        let needle = format!("repository:{repo}:");
        self.scopes
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.starts_with(&needle))
            .count()
    }

    pub fn fail_anonymous(&self, repo: Option<&str>) {
        self.fail_anonymous_with(repo, 503);
    }

    /// Like [`TokenIssuer::fail_anonymous`], with another status (401: an issuer that refuses
    /// for a while).
    pub fn fail_anonymous_with(&self, repo: Option<&str>, status: u16) {
        *self.failing.lock().unwrap() = repo.map(|r| (r.to_owned(), status));
    }
}

fn basic_user(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

async fn issue(req: HttpRequest, state: web::Data<IssuerState>) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    state.scopes.lock().unwrap().extend(
        query
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone()),
    );
    let user = basic_user(&req);
    if user.is_none() {
        if let Some((repo, status)) = state.failing.lock().unwrap().clone() {
            let needle = format!("repository:{repo}:");
            if query
                .iter()
                .any(|(k, v)| k == "scope" && v.starts_with(&needle))
            {
                return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .finish();
            }
        }
    }
    let subject = match &user {
        None => String::new(),
        Some((name, password)) => {
            let known = state
                .grants
                .iter()
                .any(|(u, p, _, _)| u == name && p == password);
            if !known {
                return HttpResponse::Unauthorized()
                    .json(serde_json::json!({"details": "incorrect username or password"}));
            }
            name.clone()
        }
    };
    let mut access = Vec::new();
    for (_, scope) in query.iter().filter(|(k, _)| k == "scope") {
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let allowed: Vec<&str> = actions
            .split(',')
            .filter(|action| {
                let open = state.open.lock().unwrap().clone();
                let anonymous = *action == "pull"
                    && (name.starts_with("library/")
                        || open.is_some_and(|prefix| name.starts_with(&prefix)));
                let granted = state.grants.iter().any(|(u, _, prefix, acts)| {
                    *u == subject
                        && name.starts_with(prefix)
                        && acts.split(',').any(|a| a == *action)
                });
                anonymous || granted
            })
            .collect();
        access.push(serde_json::json!({"type": kind, "name": name, "actions": allowed}));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": subject, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", state.requests.load(Ordering::SeqCst)),
        "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(state.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &state.encoding).unwrap();
    HttpResponse::Ok()
        .json(serde_json::json!({"token": token, "access_token": token, "expires_in": 300}))
}

/// A running `docker-registry` with token auth, and the file its access log goes to.
pub struct UpstreamRegistry {
    pub port: u16,
    pub log: PathBuf,
    pub issuer: TokenIssuer,
    /// Where blob GETs are redirected, like Docker Hub's CDN.
    pub cdn: Nginx,
    tls: Option<ServeTls>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// How the upstream serves: over TLS, and whether blob GETs are redirected to the CDN.
#[derive(Default)]
pub struct Options {
    pub tls: Option<ServeTls>,
    /// Serve blobs itself instead of redirecting to the CDN.
    pub direct_blobs: bool,
}

impl UpstreamRegistry {
    pub fn start(grants: Vec<Grant>) -> Self {
        Self::start_with(grants, Options::default())
    }

    pub fn start_with(grants: Vec<Grant>, options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate();
        let issuer = TokenIssuer::start(&pki, grants);
        std::fs::write(dir.path().join("cert.pem"), &pki.cert_pem).unwrap();
        let port = free_port();
        let root = dir.path().join("data");
        std::fs::create_dir_all(&root).unwrap();
        let cdn = Nginx::cdn(&root, &dir.path().join("cdn"));
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n{redirect}http:\n  addr: 127.0.0.1:{port}\n{tls}auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {cert}\n",
            root = root.display(),
            redirect = if options.direct_blobs {
                String::new()
            } else {
                format!(
                    "middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: {}\n",
                    cdn.base_url()
                )
            },
            tls = options.tls.as_ref().map(ServeTls::registry_yaml).unwrap_or_default(),
            realm = issuer.realm(),
            cert = dir.path().join("cert.pem").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = dir.path().join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("registry.err")).unwrap())
            .spawn()
            .expect("docker-registry is installed (run the README's test command)");
        reap_with_parent(child.id());
        wait_for_port(port, Duration::from_secs(10));
        UpstreamRegistry {
            port,
            log,
            issuer,
            cdn,
            tls: options.tls,
            child: Some(child),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Access-log lines for `method` requests whose path contains `needle`.
    pub fn requests(&self, method: &str, needle: &str) -> usize {
        let Ok(file) = std::fs::File::open(&self.log) else {
            return 0;
        };
        let prefix = format!("\"{method} /v2/");
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(&prefix) && l.contains(needle))
            .count()
    }

    /// Blob GETs that upstream answered for these repositories.
    pub fn blob_gets(&self, repos: &[&str]) -> usize {
        repos
            .iter()
            .map(|repo| self.requests("GET", &format!("/v2/{repo}/blobs/sha256:")))
            .sum()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pushes `image` (children first) as `repo:tag`, with the seeder's credentials.
    pub async fn push(&self, repo: &str, tag: &str, image: &Image) {
        let client = self
            .tls
            .as_ref()
            .map(ServeTls::http_client)
            .unwrap_or_default();
        let token = self.token(&client, repo).await;
        for child in &image.children {
            self.push_image_parts(&client, &token, repo, child).await;
            self.put_manifest(
                &client,
                &token,
                repo,
                &child.manifest.digest,
                &child.manifest,
            )
            .await;
        }
        self.push_image_parts(&client, &token, repo, image).await;
        self.put_manifest(&client, &token, repo, tag, &image.manifest)
            .await;
    }

    async fn token(&self, client: &reqwest::Client, repo: &str) -> String {
        let body = client
            .get(self.issuer.realm())
            .query(&[
                ("service", SERVICE),
                ("scope", &format!("repository:{repo}:pull,push")),
            ])
            .basic_auth(SEEDER.0, Some(SEEDER.1))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let response: serde_json::Value = serde_json::from_slice(&body).unwrap();
        response["token"].as_str().unwrap().to_owned()
    }

    async fn push_image_parts(
        &self,
        client: &reqwest::Client,
        token: &str,
        repo: &str,
        image: &Image,
    ) {
        for blob in &image.blobs {
            self.push_blob(client, token, repo, blob).await;
        }
    }

    async fn push_blob(&self, client: &reqwest::Client, token: &str, repo: &str, blob: &Blob) {
        let start = client
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            start.status(),
            202,
            "upload start: {:?}",
            start.text().await
        );
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let mut url = reqwest::Url::parse(&self.url())
            .unwrap()
            .join(&location)
            .unwrap();
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let done = client
            .put(url)
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201, "blob put: {:?}", done.text().await);
    }

    async fn put_manifest(
        &self,
        client: &reqwest::Client,
        token: &str,
        repo: &str,
        reference: &str,
        manifest: &Blob,
    ) {
        let response = client
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.url()))
            .bearer_auth(token)
            .header("content-type", &manifest.media_type)
            .body(manifest.data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "manifest put: {:?}",
            response.text().await
        );
    }
}

impl Drop for UpstreamRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

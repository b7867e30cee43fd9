//! A misbehaving upstream, for the faults a real registry will not produce on demand: it can
//! flip a byte, cut a body short, answer slowly, hang, or answer 429/503, and it counts
//! requests.
//! Serves anonymous pulls only; content is whatever the test puts in.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;

use super::images::sha256;

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Normal,
    /// Serve the blob with one byte changed.
    FlipByte,
    /// Declare the full length, send this many bytes, then cut the connection.
    Truncate(usize),
    /// Send the blob in 64 KiB chunks with this pause between them; pause before manifests.
    Slow(Duration),
    /// Send only the first this many bytes, and declare just that length.
    ShortBody(usize),
    /// Send the blob and then this many bytes more, declaring the padded length.
    LongBody(usize),
    /// Answer every request with this status (and `Retry-After: 7` for 429).
    Status(u16),
    /// Accept every request and never answer it (a hung upstream).
    Hang,
}

#[derive(Default)]
struct Content {
    /// reference (tag or digest) → (media type, body), for any repository.
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
}

pub struct FaultyUpstream {
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    content: Arc<Mutex<Content>>,
    pub blob_gets: Arc<AtomicUsize>,
    pub manifest_gets: Arc<AtomicUsize>,
    pub manifest_heads: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct State {
    mode: Arc<Mutex<Mode>>,
    content: Arc<Mutex<Content>>,
    blob_gets: Arc<AtomicUsize>,
    manifest_gets: Arc<AtomicUsize>,
    manifest_heads: Arc<AtomicUsize>,
}

impl FaultyUpstream {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = State {
            mode: Arc::new(Mutex::new(Mode::Normal)),
            content: Arc::default(),
            blob_gets: Arc::default(),
            manifest_gets: Arc::default(),
            manifest_heads: Arc::default(),
        };
        let upstream = FaultyUpstream {
            port,
            mode: Arc::clone(&state.mode),
            content: Arc::clone(&state.content),
            blob_gets: Arc::clone(&state.blob_gets),
            manifest_gets: Arc::clone(&state.manifest_gets),
            manifest_heads: Arc::clone(&state.manifest_heads),
        };
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(state.clone()))
                        .default_service(web::to(handle))
                })
                .workers(2)
                .listen(listener)
                .unwrap()
                .run()
                .await
            })
        });
        super::upstream::wait_for_port(port, Duration::from_secs(5));
        upstream
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Adds a manifest under `tag` and under its digest; returns the digest.
    pub fn put_manifest(&self, tag: &str, media_type: &str, body: &[u8]) -> String {
        let digest = sha256(body);
        let mut content = self.content.lock().unwrap();
        for reference in [tag, digest.as_str()] {
            content
                .manifests
                .insert(reference.to_owned(), (media_type.to_owned(), body.to_vec()));
        }
        digest
    }

    pub fn put_blob(&self, data: &[u8]) -> String {
        let digest = sha256(data);
        self.content
            .lock()
            .unwrap()
            .blobs
            .insert(digest.clone(), data.to_vec());
        digest
    }

    pub fn count(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// Distribution 3's pagination: sorted tags after `last`, at most `n`, and a `Link` onward.
fn tags_page(req: &HttpRequest, repo: &str, state: &State) -> HttpResponse {
    let query: HashMap<String, String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let mut tags: Vec<String> = state
        .content
        .lock()
        .unwrap()
        .manifests
        .keys()
        .filter(|r| !r.contains(':'))
        .cloned()
        .collect();
    tags.sort();
    if let Some(last) = query.get("last") {
        tags.retain(|t| t > last);
    }
    let mut response = HttpResponse::Ok();
    if let Some(n) = query.get("n").and_then(|n| n.parse::<usize>().ok()) {
        if tags.len() > n {
            tags.truncate(n);
            response.insert_header((
                "Link",
                format!(
                    "</v2/{repo}/tags/list?last={}&n={n}>; rel=\"next\"",
                    tags[n - 1]
                ),
            ));
        }
    }
    response.json(serde_json::json!({"name": repo, "tags": tags}))
}

fn not_found(code: &str) -> HttpResponse {
    HttpResponse::NotFound()
        .json(serde_json::json!({"errors":[{"code": code, "message": "not here"}]}))
}

async fn handle(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let path = req.path().to_owned();
    let head = req.method() == actix_web::http::Method::HEAD;
    let mode = state.mode.lock().unwrap().clone();
    if mode == Mode::Hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if path == "/v2/" || path == "/v2" {
        return HttpResponse::Ok().json(serde_json::json!({}));
    }
    if let Some(repo) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.strip_suffix("/tags/list"))
    {
        return tags_page(&req, repo, &state);
    }
    let (is_manifest, reference) =
        match (path.rsplit_once("/manifests/"), path.rsplit_once("/blobs/")) {
            (Some((_, r)), _) => (true, r.to_owned()),
            (None, Some((_, d))) => (false, d.to_owned()),
            _ => return not_found("NAME_UNKNOWN"),
        };
    match (is_manifest, head) {
        (true, true) => state.manifest_heads.fetch_add(1, Ordering::SeqCst),
        (true, false) => state.manifest_gets.fetch_add(1, Ordering::SeqCst),
        (false, _) => state.blob_gets.fetch_add(1, Ordering::SeqCst),
    };
    if let Mode::Status(code) = mode {
        let mut response =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap());
        if code == 429 {
            response.insert_header(("Retry-After", "7"));
        }
        return response.json(
            serde_json::json!({"errors":[{"code":"TOOMANYREQUESTS","message":"injected failure"}]}),
        );
    }
    if is_manifest {
        if let Mode::Slow(pause) = mode {
            tokio::time::sleep(pause).await;
        }
        let found = state
            .content
            .lock()
            .unwrap()
            .manifests
            .get(&reference)
            .cloned();
        return match found {
            Some((media_type, body)) => HttpResponse::Ok()
                .insert_header(("Content-Type", media_type))
                .insert_header(("Docker-Content-Digest", sha256(&body)))
                .body(body),
            None => not_found("MANIFEST_UNKNOWN"),
        };
    }
    let Some(data) = state.content.lock().unwrap().blobs.get(&reference).cloned() else {
        return not_found("BLOB_UNKNOWN");
    };
    let size = data.len() as u64;
    let chunks: Vec<Bytes> = data.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    match mode {
        Mode::FlipByte => {
            let mut data = data;
            let middle = data.len() / 2;
            data[middle] ^= 0xff;
            HttpResponse::Ok().body(data)
        }
        Mode::Truncate(keep) => {
            let mut sent = Vec::new();
            let mut remaining = keep;
            for chunk in chunks {
                let take = remaining.min(chunk.len());
                sent.push(Ok::<_, std::io::Error>(chunk.slice(..take)));
                remaining -= take;
                if remaining == 0 {
                    break;
                }
            }
            sent.push(Err(std::io::Error::other("injected cut")));
            HttpResponse::Ok().body(SizedStream::new(size, futures_util::stream::iter(sent)))
        }
        Mode::Slow(pause) => {
            let stream =
                futures_util::stream::unfold(chunks.into_iter(), move |mut rest| async move {
                    let chunk = rest.next()?;
                    tokio::time::sleep(pause).await;
                    Some((Ok::<_, std::io::Error>(chunk), rest))
                });
            HttpResponse::Ok().body(SizedStream::new(size, stream))
        }
        Mode::ShortBody(len) => HttpResponse::Ok().body(data[..len.min(data.len())].to_vec()),
        Mode::LongBody(extra) => {
            let mut data = data;
            data.extend(std::iter::repeat_n(0x5a, extra));
            HttpResponse::Ok().body(data)
        }
        Mode::Normal | Mode::Status(_) | Mode::Hang => HttpResponse::Ok().body(data),
    }
}

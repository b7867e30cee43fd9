//! A fault-injecting proxy in front of a real upstream registry: it passes every request on
//! and, on demand, changes what comes back the way misbehaving or unusual registries do:
//! refusals disguised as 404 (upstreams that hide private repositories), a missing
//! `Docker-Content-Digest`, a flipped byte, a body cut short, or a fixed status. It counts what
//! it forwarded. (Blobs the upstream redirects to its CDN are fetched from there directly.)

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Pass everything on unchanged.
    Pass,
    /// A 401/403 to a request that carried credentials (a token) becomes a 404, as upstreams
    /// that hide private repositories answer. The first, credential-less 401 with its challenge
    /// passes, so clients still learn where to get tokens.
    HideRefusals,
    /// Drop `Docker-Content-Digest` from every answer.
    StripDigest,
    /// Answer every request with this status.
    Status(u16),
    /// Change one byte in the middle of every successful body.
    FlipByte,
    /// Declare the whole length of every successful body, send this many bytes, then cut the
    /// connection.
    Truncate(usize),
}

pub struct FaultProxy {
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    forwarded: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct State {
    target: String,
    /// Pass the client's `Host` on (a signed S3 request must reach its store with it).
    keep_host: bool,
    client: reqwest::Client,
    mode: Arc<Mutex<Mode>>,
    forwarded: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `target` (`http://127.0.0.1:PORT`).
    pub fn start(target: &str) -> Self {
        Self::launch(target, false)
    }

    /// A proxy that passes the client's `Host` header on, as an S3 request signed for the
    /// proxy's address needs (its store checks the signature against it).
    pub fn start_keeping_host(target: &str) -> Self {
        Self::launch(target, true)
    }

    fn launch(target: &str, keep_host: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = State {
            target: target.trim_end_matches('/').to_owned(),
            keep_host,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            mode: Arc::new(Mutex::new(Mode::Pass)),
            forwarded: Arc::default(),
        };
        let proxy = FaultProxy {
            port,
            mode: Arc::clone(&state.mode),
            forwarded: Arc::clone(&state.forwarded),
        };
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(state.clone()))
                        .default_service(web::to(forward))
                })
                .workers(2)
                .listen(listener)
                .unwrap()
                .run()
                .await
            })
        });
        super::upstream::wait_for_port(port, Duration::from_secs(5));
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Requests passed on to the upstream so far.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

async fn forward(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let mode = state.mode.lock().unwrap().clone();
    if let Mode::Status(status) = mode {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .finish();
    }
    state.forwarded.fetch_add(1, Ordering::SeqCst);
    let url = format!("{}{}", state.target, req.uri());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut request = state.client.request(method, url).body(body.to_vec());
    for (name, value) in req.headers() {
        if name != "host" || state.keep_host {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let had_credentials = req.headers().contains_key("authorization");
    let upstream = match request.send().await {
        Ok(response) => response,
        Err(_) => return HttpResponse::BadGateway().finish(),
    };
    let status = upstream.status().as_u16();
    if mode == Mode::HideRefusals && had_credentials && (status == 401 || status == 403) {
        return HttpResponse::NotFound().json(serde_json::json!({
            "errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]
        }));
    }
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    for (name, value) in upstream.headers() {
        let skip = matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) || (mode == Mode::StripDigest && name == "docker-content-digest");
        if !skip {
            response.append_header((name.as_str(), value.as_bytes()));
        }
    }
    let head = req.method() == actix_web::http::Method::HEAD;
    let length = upstream
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut bytes = upstream.bytes().await.unwrap_or_default().to_vec();
    let success = (200..300).contains(&status) && !bytes.is_empty();
    if head {
        // A HEAD's length is the resource's, not the (empty) body's.
        let nothing = futures_util::stream::empty::<Result<bytes::Bytes, actix_web::Error>>();
        return response.body(SizedStream::new(length.unwrap_or(0), nothing));
    }
    match mode {
        Mode::FlipByte if success => {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
        }
        Mode::Truncate(sent) if success => {
            let declared = bytes.len() as u64;
            bytes.truncate(sent.min(bytes.len().saturating_sub(1)));
            let cut: Vec<Result<bytes::Bytes, actix_web::Error>> = vec![
                Ok(bytes::Bytes::from(bytes)),
                Err(actix_web::error::ErrorInternalServerError("cut off")),
            ];
            return response.body(SizedStream::new(declared, futures_util::stream::iter(cut)));
        }
        _ => {}
    }
    response.body(bytes)
}

//! A proxy that measures concurrency: it passes every request on to an upstream and counts the
//! requests in flight through it, keeping the highest count seen. Large bodies are sent back in
//! slow chunks, so requests a client does not serialize are sure to overlap here.
//!
//! A request counts from its arrival until the last byte of its answer is handed over (or the
//! client hangs up): before the client can see the answer complete, so a client that waits for
//! one answer before sending the next request is never counted twice.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;

/// Bodies at least this long are streamed in chunks of this size, one per [`CHUNK_DELAY`].
const CHUNK: usize = 64 * 1024;
const CHUNK_DELAY: Duration = Duration::from_millis(15);

pub struct GaugeProxy {
    pub port: u16,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    total: AtomicUsize,
}

/// One request in flight; counted out when dropped.
struct InFlight(Arc<Counts>);

impl InFlight {
    fn enter(counts: &Arc<Counts>) -> Self {
        counts.total.fetch_add(1, Ordering::SeqCst);
        let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counts.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(counts))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct State {
    target: String,
    client: reqwest::Client,
    counts: Arc<Counts>,
}

impl GaugeProxy {
    /// Starts a proxy forwarding to `target` (`http://127.0.0.1:PORT`).
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let state = State {
            target: target.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            counts: Arc::clone(&counts),
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
        GaugeProxy { port, counts }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.counts.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests passed on so far.
    pub fn total(&self) -> usize {
        self.counts.total.load(Ordering::SeqCst)
    }
}

async fn forward(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let in_flight = InFlight::enter(&state.counts);
    let url = format!("{}{}", state.target, req.uri());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut request = state.client.request(method, url).body(body.to_vec());
    for (name, value) in req.headers() {
        if name != "host" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let Ok(upstream) = request.send().await else {
        return HttpResponse::BadGateway().finish();
    };
    let status = actix_web::http::StatusCode::from_u16(upstream.status().as_u16()).unwrap();
    let mut response = HttpResponse::build(status);
    for (name, value) in upstream.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            response.append_header((name.as_str(), value.as_bytes()));
        }
    }
    let length = upstream
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let body = upstream.bytes().await.unwrap_or_default();
    if req.method() == actix_web::http::Method::HEAD {
        drop(in_flight);
        let nothing = futures_util::stream::empty::<Result<Bytes, actix_web::Error>>();
        return response.body(SizedStream::new(length, nothing));
    }
    if body.len() < CHUNK {
        // Sent whole with the headers: done before the client can read it.
        drop(in_flight);
        return response.body(body);
    }
    let total = body.len() as u64;
    let chunks = futures_util::stream::unfold(
        (body, Some(in_flight)),
        |(mut rest, mut in_flight)| async move {
            if rest.is_empty() {
                return None;
            }
            tokio::time::sleep(CHUNK_DELAY).await;
            let chunk = rest.split_to(CHUNK.min(rest.len()));
            if rest.is_empty() {
                // The last bytes are handed over: the request is done before they arrive.
                in_flight.take();
            }
            Some((Ok::<_, actix_web::Error>(chunk), (rest, in_flight)))
        },
    );
    response.body(SizedStream::new(total, Box::pin(chunks)))
}

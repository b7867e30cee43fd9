//! In-process tests of the mirror: the real app (routes, middleware, registry, storage in a
//! temporary directory) over in-memory upstreams ([`FakeRegistry`]) and a [`ManualClock`],
//! driven through `actix_web::test`: no sockets, no spawned binary, no sleeping for TTLs.

mod blobs;
mod breaker;
mod guard;
mod referrers;
mod referrers_kept;
mod tags;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use bytes::Bytes;

use super::{app, assemble_registry, token_service, AppState};
use crate::clock::ManualClock;
use crate::config::{Projects, Settings};
use crate::registry::Registry;
use crate::upstream::fake::FakeRegistry;
use crate::upstream::{Upstream, Upstreams};

pub struct TestApp {
    state: AppState,
    pub registry: Arc<Registry>,
    /// The fake behind each configured upstream, by name.
    fakes: HashMap<String, FakeRegistry>,
    pub clock: ManualClock,
    _data_dir: tempfile::TempDir,
}

/// An answer, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, or how reading it failed (a fill that did not verify aborts it).
    pub body: Result<Bytes, String>,
}

impl Reply {
    pub fn body(&self) -> &[u8] {
        match &self.body {
            Ok(body) => body,
            Err(e) => panic!("the body failed: {e}"),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The spec error code of an error body.
    pub fn error_code(&self) -> String {
        let json: serde_json::Value = serde_json::from_slice(self.body()).unwrap_or_default();
        json["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The app over the embedded default configuration, with data in a temporary directory and
/// prefetch off, changed by `configure`; every upstream is a [`FakeRegistry`].
pub async fn test_app(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut settings =
        Settings::load_with_env(None, Vec::<(String, String)>::new()).expect("defaults load");
    settings.storage.data_dir = data_dir.path().to_path_buf();
    settings.mirror.prefetch = false;
    configure(&mut settings);
    let clock = ManualClock::new();
    let mut fakes = HashMap::new();
    let upstreams = settings
        .upstreams
        .iter()
        .map(|s| {
            let fake = FakeRegistry::new(&s.name);
            fakes.insert(s.name.clone(), fake.clone());
            Upstream::with_api(s, settings.mirror.offline, Box::new(fake), &clock.clock())
        })
        .collect();
    let projects = Projects::new(&settings.projects);
    let registry = assemble_registry(
        &settings,
        Upstreams::from_upstreams(upstreams),
        clock.clock(),
        projects.clone(),
    )
    .expect("registry");
    let tokens = token_service(&settings, &projects, None).expect("token service");
    let state = AppState::new(&settings, &registry, tokens);
    TestApp {
        state,
        registry,
        fakes,
        clock,
        _data_dir: data_dir,
    }
}

impl TestApp {
    /// The data directory (where the open mirror keeps its signing key).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    /// The fake behind the default upstream (`docker.io`).
    pub fn hub(&self) -> &FakeRegistry {
        self.fake("docker.io")
    }

    pub fn fake(&self, upstream: &str) -> &FakeRegistry {
        &self.fakes[upstream]
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn send(
        &self,
        request: TestRequest,
    ) -> actix_web::dev::ServiceResponse<actix_web::body::BoxBody> {
        let service = test::init_service(app(&self.state)).await;
        test::call_service(&service, request.to_request())
            .await
            .map_into_boxed_body()
    }

    pub async fn call(&self, request: TestRequest) -> Reply {
        read(self.send(request).await).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(TestRequest::get().uri(path)).await
    }

    /// A GET with a bearer token.
    pub async fn get_as(&self, path: &str, token: &str) -> Reply {
        self.call(
            TestRequest::get()
                .uri(path)
                .insert_header(("Authorization", format!("Bearer {token}"))),
        )
        .await
    }

    /// Logs in with upstream credentials for pull on `repo`: berth's token carrying the
    /// passed-through grant.
    pub async fn login(&self, repo: &str, user: &str, password: &str) -> String {
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{user}:{password}"),
        );
        let reply = self
            .call(
                TestRequest::get()
                    .uri(&format!("/token?scope=repository:{repo}:pull"))
                    .insert_header(("Authorization", format!("Basic {basic}"))),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "login: {:?}", reply.body);
        let json: serde_json::Value = serde_json::from_slice(reply.body()).expect("token json");
        json["token"].as_str().expect("a token").to_owned()
    }
}

pub async fn read(response: actix_web::dev::ServiceResponse<actix_web::body::BoxBody>) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let body = actix_web::body::to_bytes(response.into_body())
        .await
        .map_err(|e| e.to_string());
    Reply {
        status,
        headers,
        body,
    }
}

/// Waits (briefly, in real time) until `done` holds: for work the app finishes in the
/// background, such as a fill's end.
pub async fn settle(mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the app did not settle within 2 s");
}

/// Runs `requests` concurrently with `release`, which runs once every request has been
/// polled as far as it goes without the upstream.
pub async fn together<T, R>(requests: Vec<T>, release: R) -> Vec<T::Output>
where
    T: Future,
    R: Future<Output = ()>,
{
    let (replies, ()) =
        futures_util::future::join(futures_util::future::join_all(requests), release).await;
    replies
}

/// Yields until the fake has seen a call of `op`, then a while longer, so that every request
/// polled alongside has gone as far as it can (requests run on this one thread).
pub async fn until_called(fake: &FakeRegistry, op: crate::upstream::fake::Op) {
    for _ in 0..10_000 {
        if fake.calls(op) > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(fake.calls(op) > 0, "no {op:?} reached the upstream");
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A counter of the registry's metrics.
pub fn metric(
    registry: &Registry,
    pick: impl Fn(&crate::metrics::Metrics) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    pick(registry.metrics()).load(std::sync::atomic::Ordering::Relaxed)
}

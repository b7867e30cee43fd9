//! The access log: one record per request (target `berth::access`), written when the last
//! byte of the answer has been handed to the connection (or the client went away), so its
//! duration and byte count are those of the whole transfer. Each request gets an id, returned
//! as `X-Request-Id` and named in the record, and is counted in `/metrics` by endpoint kind
//! and status class.
//!
//! The user is the token's subject, which the access check leaves in the request's extensions
//! ([`AuthenticatedUser`]); the client address is read through trusted proxies.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};
use bytes::Bytes;

use super::routes::{self, Route};
use super::source;
use crate::metrics::requests::EndpointKind;
use crate::metrics::Metrics;
use crate::registry::audit::Actor;

pub const REQUEST_ID: &str = "x-request-id";

/// The subject of the request's bearer token, once verified.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser(pub String);

/// Who made a request, for audit records.
pub fn actor(req: &HttpRequest) -> (Option<String>, Option<IpAddr>) {
    let user = req
        .extensions()
        .get::<AuthenticatedUser>()
        .map(|u| u.0.clone());
    (user, source::client_address(req))
}

/// Runs `f` with the [`Actor`] of `req`.
pub fn with_actor<T>(req: &HttpRequest, f: impl FnOnce(Actor<'_>) -> T) -> T {
    let (user, client) = actor(req);
    f(Actor {
        user: user.as_deref(),
        client,
    })
}

/// A request on its way: what the record will say, known at its start.
pub struct Pending {
    started: Instant,
    id: String,
    method: String,
    path: String,
    endpoint: EndpointKind,
    client: Option<IpAddr>,
    user_agent: String,
    metrics: Option<Arc<Metrics>>,
}

impl Pending {
    pub fn start(req: &ServiceRequest, metrics: Option<Arc<Metrics>>) -> Pending {
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        Pending {
            started: Instant::now(),
            id: request_id(),
            method: req.method().to_string(),
            path: req.path().to_owned(),
            endpoint: endpoint_kind(req.path()),
            client: source::client_address(req.request()),
            user_agent,
            metrics,
        }
    }

    /// The response, with its id, and a body that writes the record when it is done.
    pub fn finish<B: MessageBody + 'static>(
        self,
        response: ServiceResponse<B>,
    ) -> ServiceResponse<LoggedBody> {
        let mut response = response.map_into_boxed_body();
        if let Ok(value) = HeaderValue::from_str(&self.id) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(REQUEST_ID), value);
        }
        let user = response
            .request()
            .extensions()
            .get::<AuthenticatedUser>()
            .map(|u| u.0.clone());
        let status = response.status().as_u16();
        response.map_body(|_, body| LoggedBody {
            body,
            record: Some(Record {
                pending: self,
                status,
                user,
                bytes: 0,
            }),
        })
    }
}

impl Pending {
    /// Records a request that ended in an error no handler turned into an answer (actix
    /// answers it further out, without a body worth counting).
    pub fn failed(self, error: actix_web::Error) -> actix_web::Error {
        let status = error.as_response_error().status_code().as_u16();
        Record {
            pending: self,
            status,
            user: None,
            bytes: 0,
        }
        .write();
        error
    }
}

fn endpoint_kind(path: &str) -> EndpointKind {
    if path == "/token" {
        return EndpointKind::Token;
    }
    match routes::parse(path) {
        Some(Route::Manifest { .. }) => EndpointKind::Manifest,
        Some(Route::Blob { .. }) => EndpointKind::Blob,
        Some(Route::UploadStart { .. } | Route::Upload { .. }) => EndpointKind::Upload,
        Some(Route::Tags { .. } | Route::Catalog | Route::Referrers { .. }) => {
            EndpointKind::Listing
        }
        Some(Route::Base) | None => EndpointKind::Other,
    }
}

/// 16 random hex digits: unique enough to find one request across nodes' logs.
fn request_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // The clock then: still distinct between requests on this node.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64).to_be_bytes();
    }
    hex::encode(bytes)
}

struct Record {
    pending: Pending,
    status: u16,
    user: Option<String>,
    bytes: u64,
}

impl Record {
    fn write(self) {
        let p = self.pending;
        let elapsed = p.started.elapsed();
        if let Some(metrics) = &p.metrics {
            metrics.requests.observe(p.endpoint, self.status, elapsed);
        }
        tracing::info!(
            target: "berth::access",
            request_id = %p.id,
            method = %p.method,
            path = %p.path,
            status = self.status,
            bytes = self.bytes,
            duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            user = self.user.as_deref().unwrap_or("-"),
            client = %p.client.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            user_agent = %p.user_agent,
            "{} {} {}",
            p.method,
            p.path,
            self.status
        );
    }
}

/// A response body that counts what it hands out and writes the access record when dropped.
pub struct LoggedBody {
    body: BoxBody,
    record: Option<Record>,
}

impl MessageBody for LoggedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            if let Some(record) = &mut self.record {
                record.bytes += chunk.len() as u64;
            }
        }
        polled
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.write();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_by_kind() {
        for (path, kind) in [
            ("/v2/a/manifests/latest", EndpointKind::Manifest),
            ("/v2/a/blobs/sha256:00", EndpointKind::Blob),
            ("/v2/a/blobs/uploads/", EndpointKind::Upload),
            ("/v2/a/blobs/uploads/x", EndpointKind::Upload),
            ("/v2/a/tags/list", EndpointKind::Listing),
            ("/v2/_catalog", EndpointKind::Listing),
            ("/token", EndpointKind::Token),
            ("/v2/", EndpointKind::Other),
            ("/metrics", EndpointKind::Other),
        ] {
            assert_eq!(endpoint_kind(path), kind, "{path}");
        }
        assert_ne!(request_id(), request_id());
        assert_eq!(request_id().len(), 16);
    }
}

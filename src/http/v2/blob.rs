//! `/v2/<name>/blobs/<digest>`: `GET`/`HEAD` (with single `Range` requests) for the mirror
//! and private projects, `DELETE` for private projects.

use actix_web::http::{header, Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;

use crate::cache::evict::ServingGuard;
use crate::cache::fill::{FillError, NotVerified};
use crate::http::body;
use crate::http::range::{self, RangeRequest};
use crate::oci::ErrorCode;
use crate::oci::{Digest, RepoName};
use crate::registry::mirror::{upstream_error, BlobReply};
use crate::registry::namespace::MirrorRepo;
use crate::registry::{Registry, RegistryError};

pub async fn get(
    req: &HttpRequest,
    registry: &Registry,
    target: &MirrorRepo,
    digest: &str,
) -> Result<HttpResponse, RegistryError> {
    let digest: Digest = digest.parse()?;
    if req.method() == Method::HEAD {
        let size = registry.mirror.blob_size(target, &digest).await?;
        return Ok(head(&digest, size));
    }
    match registry.mirror.blob(target, &digest).await? {
        BlobReply::Stored(mapped, guard) => stored(req, registry, &digest, mapped, guard),
        BlobReply::Filling { fill, .. } if range_header(req).is_some() => {
            // A range can end before the last byte, the one a reader of a fill withholds until
            // the digest is checked: wait for the check, then serve from the verified file.
            let stall = target.upstream.settings().read_timeout;
            let size = fill.verified(stall).await.map_err(not_verified)?;
            match range::parse(range_header(req), size) {
                RangeRequest::Partial { start, end } => {
                    Ok(blob_headers(StatusCode::PARTIAL_CONTENT, &digest)
                        .insert_header((
                            header::CONTENT_RANGE,
                            format!("bytes {start}-{end}/{size}"),
                        ))
                        .body(body::filling(
                            fill.reader(start, Some(end + 1)),
                            Some(end - start + 1),
                            registry.metrics(),
                        )))
                }
                RangeRequest::Unsatisfiable => Err(unsatisfiable(size)),
                RangeRequest::Full => Ok(blob_headers(StatusCode::OK, &digest).body(
                    body::filling(fill.reader(0, None), Some(size), registry.metrics()),
                )),
            }
        }
        // A whole blob streams as it arrives: its reader withholds the last byte until the
        // digest is checked.
        BlobReply::Filling { fill, size } => Ok(blob_headers(StatusCode::OK, &digest).body(
            body::filling(fill.reader(0, None), size, registry.metrics()),
        )),
    }
}

/// A ranged request's wait for verification that ended without it.
fn not_verified(e: NotVerified) -> RegistryError {
    match e {
        NotVerified::Stalled(stall) => RegistryError::new(
            ErrorCode::Unavailable,
            format!("the blob's download from upstream made no progress for {stall:?}"),
        ),
        NotVerified::Failed(e) => match &*e {
            FillError::Upstream(u) => upstream_error(u.clone(), ErrorCode::BlobUnknown),
            FillError::DigestMismatch { .. } | FillError::SizeMismatch { .. } => {
                RegistryError::new(ErrorCode::Unavailable, e.to_string())
            }
            FillError::Storage(_) | FillError::Vanished => {
                RegistryError::internal("cache storage failed", e.to_string())
            }
        },
    }
}

pub async fn get_private(
    req: &HttpRequest,
    registry: &Registry,
    repo: &RepoName,
    digest: &str,
) -> Result<HttpResponse, RegistryError> {
    let digest: Digest = digest.parse()?;
    if req.method() == Method::HEAD {
        let size = registry.projects.blob_size(repo, &digest)?;
        return Ok(head(&digest, size));
    }
    let (mapped, guard) = registry.projects.blob(repo, &digest).await?;
    stored(req, registry, &digest, mapped, guard)
}

pub async fn delete_private(
    registry: &Registry,
    repo: &RepoName,
    digest: &str,
) -> Result<HttpResponse, RegistryError> {
    let digest: Digest = digest.parse()?;
    registry.projects.delete_blob(repo, &digest).await?;
    Ok(HttpResponse::Accepted().finish())
}

fn range_header(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
}

fn head(digest: &Digest, size: u64) -> HttpResponse {
    blob_headers(StatusCode::OK, digest).body(body::head_only(size))
}

/// A stored blob, whole or the requested range.
fn stored(
    req: &HttpRequest,
    registry: &Registry,
    digest: &Digest,
    mapped: Bytes,
    guard: ServingGuard,
) -> Result<HttpResponse, RegistryError> {
    let served = registry.metrics();
    let size = mapped.len() as u64;
    match range::parse(range_header(req), size) {
        RangeRequest::Full if size == 0 => Ok(blob_headers(StatusCode::OK, digest).body(mapped)),
        RangeRequest::Full => Ok(blob_headers(StatusCode::OK, digest).body(body::mapped(
            mapped,
            0,
            size - 1,
            guard,
            served,
        ))),
        RangeRequest::Partial { start, end } => {
            Ok(blob_headers(StatusCode::PARTIAL_CONTENT, digest)
                .insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")))
                .body(body::mapped(mapped, start, end, guard, served)))
        }
        RangeRequest::Unsatisfiable => Err(unsatisfiable(size)),
    }
}

fn blob_headers(status: StatusCode, digest: &Digest) -> HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header(("Docker-Content-Digest", digest.to_string()))
        .insert_header((header::ETAG, format!("\"{digest}\"")))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "max-age=31536000"));
    response
}

fn unsatisfiable(size: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::RangeInvalid,
        format!("requested range is not satisfiable for a blob of {size} bytes"),
    )
}

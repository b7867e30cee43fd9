//! `/v2/<name>/blobs/<digest>`: `GET`/`HEAD` (with single `Range` requests) and `DELETE`
//! (which the mirror refuses).

use actix_web::http::{header, Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};

use super::metrics;
use crate::cache::BlobBody;
use crate::http::access_log::with_actor;
use crate::http::body;
use crate::http::range::{self, RangeRequest};
use crate::metrics::requests::DeleteKind;
use crate::oci::Digest;
use crate::oci::ErrorCode;
use crate::registry::audit;
use crate::registry::mirror::BlobRead;
use crate::registry::repository::Repository;
use crate::registry::{Registry, RegistryError};

pub async fn get(
    req: &HttpRequest,
    registry: &Registry,
    repo: &impl Repository,
    digest: &str,
) -> Result<HttpResponse, RegistryError> {
    let digest: Digest = digest.parse()?;
    if req.method() == Method::HEAD {
        let size = repo.blob_size(&digest).await?;
        return Ok(head(&digest, size));
    }
    // A whole blob streams as it arrives; a range waits for the fill's digest check.
    let read = match range_header(req) {
        Some(_) => BlobRead::Range,
        None => BlobRead::Whole,
    };
    let blob = repo.blob(&digest, read).await?;
    respond(req, registry, &digest, blob)
}

pub async fn delete(
    req: &HttpRequest,
    repo: &impl Repository,
    digest: &str,
) -> Result<HttpResponse, RegistryError> {
    let digest: Digest = digest.parse()?;
    repo.delete_blob(&digest).await?;
    with_actor(req, |actor| {
        audit::delete(
            metrics(req),
            actor,
            DeleteKind::Blob,
            repo.name(),
            &digest.to_string(),
        )
    });
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

/// The blob, whole or the requested range. Its length is known unless it is a fill read
/// whole from an upstream that declared none (a range waits for the verified length).
fn respond(
    req: &HttpRequest,
    registry: &Registry,
    digest: &Digest,
    blob: BlobBody,
) -> Result<HttpResponse, RegistryError> {
    let served = registry.metrics();
    let Some(size) = blob.size() else {
        return Ok(blob_headers(StatusCode::OK, digest).body(body::whole(blob, served)));
    };
    match range::parse(range_header(req), size) {
        RangeRequest::Full => {
            Ok(blob_headers(StatusCode::OK, digest).body(body::whole(blob, served)))
        }
        RangeRequest::Partial { start, end } => {
            Ok(blob_headers(StatusCode::PARTIAL_CONTENT, digest)
                .insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")))
                .body(body::part(blob, start..end + 1, served)))
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

//! `/v2/<name>/blobs/uploads/…`: starting (plain, monolithic, mount), chunked `PATCH`,
//! status, finishing `PUT` and cancelling `DELETE`, for private projects.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{location, query_param};
use crate::oci::Digest;
use crate::oci::ErrorCode;
use crate::registry::private::upload::{Started, UploadState};
use crate::registry::repository::Repository;
use crate::registry::RegistryError;

/// POST: a mount (`?mount=&from=`), a monolithic upload (`?digest=`), or a new upload.
pub async fn start(
    req: &HttpRequest,
    payload: web::Payload,
    repo: &impl Repository,
) -> Result<HttpResponse, RegistryError> {
    if let (Some(mount), Some(from)) = (query_param(req, "mount"), query_param(req, "from")) {
        let digest: Digest = mount.parse()?;
        // A source that cannot be mounted from means a plain upload.
        if let Some(digest) = repo.mount(&digest, &from).await? {
            return Ok(blob_created(req, repo, &digest));
        }
    }
    let monolithic = query_param(req, "digest")
        .map(|d| d.parse::<Digest>())
        .transpose()?;
    match repo.start_upload(monolithic, payload).await? {
        Started::Complete(digest) => Ok(blob_created(req, repo, &digest)),
        Started::Open(state) => Ok(in_progress(req, repo, &state, HttpResponse::Accepted())),
    }
}

/// PATCH: a chunk, in order.
pub async fn patch(
    req: &HttpRequest,
    payload: web::Payload,
    repo: &impl Repository,
    id: &str,
) -> Result<HttpResponse, RegistryError> {
    let start = match req.headers().get(header::CONTENT_RANGE) {
        None => None,
        Some(value) => Some(parse_content_range(value.to_str().unwrap_or_default())?),
    };
    let state = repo.append(id, start, payload).await?;
    Ok(in_progress(req, repo, &state, HttpResponse::Accepted()))
}

/// GET: where the upload stands.
pub async fn status(
    req: &HttpRequest,
    repo: &impl Repository,
    id: &str,
) -> Result<HttpResponse, RegistryError> {
    let state = repo.upload_status(id).await?;
    Ok(in_progress(req, repo, &state, HttpResponse::NoContent()))
}

/// PUT `?digest=`: the last bytes (if any), then verification and commit.
pub async fn finish(
    req: &HttpRequest,
    payload: web::Payload,
    repo: &impl Repository,
    id: &str,
) -> Result<HttpResponse, RegistryError> {
    let digest: Digest = query_param(req, "digest")
        .ok_or_else(|| {
            RegistryError::new(
                ErrorCode::DigestInvalid,
                "finishing an upload needs ?digest=<the blob's digest>",
            )
        })?
        .parse()?;
    repo.finish_upload(id, &digest, payload).await?;
    Ok(blob_created(req, repo, &digest))
}

/// DELETE: cancel.
pub async fn cancel(repo: &impl Repository, id: &str) -> Result<HttpResponse, RegistryError> {
    repo.cancel_upload(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `Content-Range: <start>-<end>` (the spec's form; `bytes ` prefix tolerated): the start.
fn parse_content_range(value: &str) -> Result<u64, RegistryError> {
    let invalid = || {
        RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("Content-Range {value:?} is not <start>-<end>"),
        )
    };
    let range = value
        .trim()
        .trim_start_matches("bytes")
        .trim()
        .trim_start_matches('=');
    let (start, end) = range
        .split('/')
        .next()
        .unwrap_or_default()
        .split_once('-')
        .ok_or_else(invalid)?;
    let start: u64 = start.trim().parse().map_err(|_| invalid())?;
    let end: u64 = end.trim().parse().map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    Ok(start)
}

fn blob_created(req: &HttpRequest, repo: &impl Repository, digest: &Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            location(req, &format!("/v2/{}/blobs/{digest}", repo.name())),
        ))
        .insert_header(("Docker-Content-Digest", digest.to_string()))
        .finish()
}

fn in_progress(
    req: &HttpRequest,
    repo: &impl Repository,
    state: &UploadState,
    mut response: actix_web::HttpResponseBuilder,
) -> HttpResponse {
    // `Range` is inclusive: an empty upload is reported as 0-0, as Distribution does.
    let end = state.size.saturating_sub(1);
    response
        .insert_header((
            header::LOCATION,
            location(
                req,
                &format!("/v2/{}/blobs/uploads/{}", repo.name(), state.id),
            ),
        ))
        .insert_header((header::RANGE, format!("0-{end}")))
        .insert_header(("Docker-Upload-UUID", state.id.as_str()))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99").unwrap(), 0);
        assert_eq!(parse_content_range("100-199").unwrap(), 100);
        assert_eq!(parse_content_range("bytes 100-199/*").unwrap(), 100);
        assert!(parse_content_range("abc").is_err());
        assert!(parse_content_range("5-4").is_err());
    }
}

//! `/v2/<name>/manifests/<reference>`: `GET`/`HEAD`, `PUT` and `DELETE` (which the mirror
//! refuses).

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::StreamExt;

use super::{location, metrics};
use crate::cache::StoredManifest;
use crate::http::access_log::with_actor;
use crate::metrics::requests::DeleteKind;
use crate::oci::media::AcceptList;
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::ErrorCode;
use crate::oci::{ParseError, Reference};
use crate::registry::audit;
use crate::registry::repository::{ManifestRead, Repository};
use crate::registry::RegistryError;

pub async fn get(
    req: &HttpRequest,
    repo: &impl Repository,
    reference: &str,
) -> Result<HttpResponse, RegistryError> {
    let reference = readable_reference(reference)?;
    let accept = AcceptList::parse(
        req.headers()
            .get_all(header::ACCEPT)
            .filter_map(|v| v.to_str().ok()),
    );
    let read = match *req.method() {
        Method::HEAD => ManifestRead::Head,
        _ => ManifestRead::Get,
    };
    let reply = repo.manifest(&reference, &accept, read).await?;
    Ok(respond(&reply.manifest, reply.stale))
}

/// A reference to read. One that is not a valid tag names no manifest: 404
/// `MANIFEST_UNKNOWN`, as the OCI conformance suite (and Harbor) expect; a `PUT` of it stays
/// 400 `TAG_INVALID`. A malformed digest stays 400 `DIGEST_INVALID`.
fn readable_reference(reference: &str) -> Result<Reference, RegistryError> {
    reference.parse().map_err(|e: ParseError| match e {
        ParseError::Tag(_) => RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!("no manifest is known by {reference:?}, which is not a valid tag"),
        ),
        other => other.into(),
    })
}

fn respond(manifest: &StoredManifest, stale: bool) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, manifest.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", manifest.digest.to_string()))
        .insert_header((header::ETAG, format!("\"{}\"", manifest.digest)));
    if stale {
        response.insert_header((header::WARNING, "110 - \"Response is Stale\""));
    }
    response.body(manifest.body.clone())
}

pub async fn put(
    req: &HttpRequest,
    mut payload: web::Payload,
    repo: &impl Repository,
    reference: &str,
) -> Result<HttpResponse, RegistryError> {
    let reference: Reference = reference.parse()?;
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("the request body broke off: {e}"),
            )
        })?;
        if body.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("manifest is larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let put = repo
        .put_manifest(&reference, content_type, body.freeze())
        .await?;
    with_actor(req, |actor| {
        audit::push(
            metrics(req),
            actor,
            repo.name(),
            &reference.to_string(),
            &put.digest,
        )
    });
    let mut response = HttpResponse::Created();
    response
        .insert_header((
            header::LOCATION,
            location(
                req,
                &format!("/v2/{}/manifests/{}", repo.name(), put.digest),
            ),
        ))
        .insert_header(("Docker-Content-Digest", put.digest.to_string()));
    if let Some(subject) = put.subject {
        response.insert_header(("OCI-Subject", subject.to_string()));
    }
    Ok(response.finish())
}

pub async fn delete(
    req: &HttpRequest,
    repo: &impl Repository,
    reference: &str,
) -> Result<HttpResponse, RegistryError> {
    let reference: Reference = reference.parse()?;
    repo.delete_manifest(&reference).await?;
    let kind = match reference {
        Reference::Tag(_) => DeleteKind::Tag,
        Reference::Digest(_) => DeleteKind::Manifest,
    };
    with_actor(req, |actor| {
        audit::delete(
            metrics(req),
            actor,
            kind,
            repo.name(),
            &reference.to_string(),
        )
    });
    Ok(HttpResponse::Accepted().finish())
}

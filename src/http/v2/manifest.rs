//! `GET`/`HEAD /v2/<name>/manifests/<reference>`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::registry::media::AcceptList;
use crate::registry::name::Reference;
use crate::registry::namespace::MirrorRepo;
use crate::registry::{Registry, RegistryError};

pub async fn get(
    req: &HttpRequest,
    registry: &Registry,
    target: &MirrorRepo,
    reference: &str,
) -> Result<HttpResponse, RegistryError> {
    let reference: Reference = reference.parse()?;
    let accept = AcceptList::parse(
        req.headers()
            .get_all(header::ACCEPT)
            .filter_map(|v| v.to_str().ok()),
    );
    let reply = registry
        .mirror
        .manifest(target, &reference, &accept)
        .await?;
    let manifest = reply.manifest;
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, manifest.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", manifest.digest.to_string()))
        .insert_header((header::ETAG, format!("\"{}\"", manifest.digest)));
    if reply.stale {
        response.insert_header((header::WARNING, "110 - \"Response is Stale\""));
    }
    Ok(response.body(manifest.body.clone()))
}

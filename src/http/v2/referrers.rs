//! `GET /v2/<name>/referrers/<digest>` (OCI distribution 1.1), with `artifactType` filtering.

use actix_web::{HttpRequest, HttpResponse};

use super::query_param;
use crate::oci::media;
use crate::oci::Digest;
use crate::registry::repository::Repository;
use crate::registry::RegistryError;

pub async fn list(
    req: &HttpRequest,
    repo: &impl Repository,
    digest: &str,
) -> Result<HttpResponse, RegistryError> {
    let subject: Digest = digest.parse()?;
    let artifact_type = query_param(req, "artifactType");
    let body = repo.referrers(&subject, artifact_type.as_deref()).await?;
    let mut response = HttpResponse::Ok();
    response.content_type(media::OCI_INDEX);
    if artifact_type.is_some() {
        response.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    Ok(response.body(body))
}

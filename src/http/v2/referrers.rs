//! `GET /v2/<name>/referrers/<digest>` (OCI distribution 1.1), with `artifactType` filtering.

use actix_web::{HttpRequest, HttpResponse};

use super::query_param;
use crate::oci::media;
use crate::oci::{Digest, RepoName};
use crate::registry::{Registry, RegistryError};

pub fn list(
    req: &HttpRequest,
    registry: &Registry,
    repo: &RepoName,
    digest: &str,
) -> Result<HttpResponse, RegistryError> {
    let subject: Digest = digest.parse()?;
    let artifact_type = query_param(req, "artifactType");
    let body = registry
        .projects
        .referrers(repo, &subject, artifact_type.as_deref())?;
    let mut response = HttpResponse::Ok();
    response.content_type(media::OCI_INDEX);
    if artifact_type.is_some() {
        response.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    Ok(response.body(body))
}

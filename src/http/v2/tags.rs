//! `GET /v2/<name>/tags/list`, paginated with `n`/`last`: a private repository's own tags,
//! or upstream's answer for a mirrored one.

use actix_web::{HttpRequest, HttpResponse};

use super::{listing_response, page_request};
use crate::registry::repository::Repository;
use crate::registry::RegistryError;

pub async fn list(
    req: &HttpRequest,
    repo: &impl Repository,
) -> Result<HttpResponse, RegistryError> {
    let page = page_request(req)?;
    let listing = repo.tags(&page).await?;
    Ok(listing_response(
        &format!("/v2/{}/tags/list", repo.name()),
        listing,
    ))
}

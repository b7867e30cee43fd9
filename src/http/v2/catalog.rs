//! `GET /v2/_catalog`: the private repositories the caller may pull, paginated. The mirror's
//! upstream repositories are not listed.

use actix_web::{HttpRequest, HttpResponse};

use super::{access, listing_response, page_request};
use crate::auth::scope::{Action, ResourceType};
use crate::registry::{Registry, RegistryError};

pub async fn list(req: &HttpRequest, registry: &Registry) -> Result<HttpResponse, RegistryError> {
    let caller = access::require(req, &ResourceType::Registry, "catalog", Some(Action::All))?;
    let page = page_request(req)?;
    let listing = registry
        .projects
        .catalog(|repo| access::may_pull(req, &caller, repo), &page)
        .await?;
    Ok(listing_response("/v2/_catalog", listing))
}

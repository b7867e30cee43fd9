//! `GET /v2/_catalog`: the private repositories the caller may pull, paginated. The mirror's
//! upstream repositories are not listed.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use super::{access, next_link, page_params};
use crate::auth::scope::Action;
use crate::registry::{Registry, RegistryError};

pub fn list(req: &HttpRequest, registry: &Registry) -> Result<HttpResponse, RegistryError> {
    let caller = access::require(req, "registry", "catalog", Some(Action::All))?;
    let (n, last) = page_params(req)?;
    let page = registry.projects.catalog(
        |repo| access::may_pull(req, &caller, repo),
        n,
        last.as_deref(),
    )?;
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    if let Some(link) = next_link("/v2/_catalog", page.next) {
        response.insert_header((header::LINK, link));
    }
    Ok(response.body(page.body))
}

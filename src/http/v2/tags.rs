//! `GET /v2/<name>/tags/list`, passed through to upstream with `n`/`last` pagination.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use super::{next_link, page_params, query_param};
use crate::oci::ErrorCode;
use crate::oci::RepoName;
use crate::registry::namespace::MirrorRepo;
use crate::registry::{Registry, RegistryError};

pub async fn list(
    req: &HttpRequest,
    registry: &Registry,
    target: &MirrorRepo,
    ns: Option<&str>,
) -> Result<HttpResponse, RegistryError> {
    let mut query = Vec::new();
    if let Some(n) = query_param(req, "n") {
        if n.parse::<u32>().is_err() {
            return Err(RegistryError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n={n:?} is not a page size"),
            ));
        }
        query.push(("n".to_owned(), n));
    }
    if let Some(last) = query_param(req, "last") {
        query.push(("last".to_owned(), last));
    }
    let reply = registry.mirror.tags(target, &query, ns).await?;
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    if let Some(link) = reply.link {
        response.insert_header((header::LINK, link));
    }
    Ok(response.body(reply.body))
}

/// A private repository's tags, sorted, paginated with `n`/`last`.
pub fn list_private(
    req: &HttpRequest,
    registry: &Registry,
    repo: &RepoName,
) -> Result<HttpResponse, RegistryError> {
    let (n, last) = page_params(req)?;
    let page = registry.projects.tags(repo, n, last.as_deref())?;
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    if let Some(link) = next_link(&format!("/v2/{repo}/tags/list"), page.next) {
        response.insert_header((header::LINK, link));
    }
    Ok(response.body(page.body))
}

//! `GET /v2/<name>/tags/list`, passed through to upstream with `n`/`last` pagination.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use super::query_param;
use crate::registry::namespace::MirrorRepo;
use crate::registry::{ErrorCode, Registry, RegistryError};

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

//! `DELETE /berth/v1/repositories/<name>`: a maintainer deletes a whole repository of a
//! project (the OCI distribution spec has no such endpoint; this is berth's own). Authorized
//! like a manifest DELETE: a bearer token from berth's token service holding
//! `repository:<name>:delete`. Without one: 401 with the challenge for that scope; with a
//! valid token of someone the policy never lets delete there: 403 `DENIED`; an unknown
//! repository: 404 `NAME_UNKNOWN`. Success is 202 with what was removed (JSON); garbage
//! collection reclaims the bytes.

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::error_response;
use super::v2::access;
use crate::auth::scope::{Action, ResourceType};
use crate::oci::ErrorCode;
use crate::registry::repository::Target;
use crate::registry::{Registry, RegistryError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/berth/v1/repositories/{name:.+}").route(web::delete().to(delete)));
}

async fn delete(req: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match remove(&req, &registry).await {
        Ok(response) => response,
        Err(e) => error_response(&e, false),
    }
}

async fn remove(req: &HttpRequest, registry: &Registry) -> Result<HttpResponse, RegistryError> {
    let name = req.match_info().get("name").unwrap_or_default();
    // A bad name is NAME_INVALID and a mirrored one unsupported, whoever asks.
    if let Target::Mirror(_) = registry.target(name, None)? {
        return Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("{name} is not in a private project: only project repositories are deleted"),
        ));
    }
    let caller = authorize(req, name)?;
    let removed = registry.delete_repository(name).await?;
    tracing::info!(
        target: "berth::audit",
        event = "delete_repository",
        user = caller.subject().unwrap_or("-"),
        repository = name,
        tags = removed.tags,
        manifests = removed.manifests,
        "repository deleted"
    );
    Ok(HttpResponse::Accepted().json(removed))
}

/// The caller, when its token grants delete on `name`. A valid token of a user the policy
/// never lets delete there is refused with 403: asking for another token would not help.
fn authorize(req: &HttpRequest, name: &str) -> Result<access::Caller, RegistryError> {
    let refused = match access::require(req, &ResourceType::Repository, name, Some(Action::Delete))
    {
        Ok(caller) => return Ok(caller),
        Err(refused) => refused,
    };
    let (Some(tokens), Ok(caller)) = (
        access::token_service(req),
        access::require(req, &ResourceType::Repository, name, None),
    ) else {
        return Err(refused);
    };
    match caller.subject() {
        Some(user) if !tokens.policy().may(Some(user), name, Action::Delete) => {
            Err(RegistryError::new(
                ErrorCode::Denied,
                format!("{user} may not delete repositories in {name}'s project (maintainers may)"),
            ))
        }
        _ => Err(refused),
    }
}

//! The `/v2/` API: one dispatcher that routes by [`routes::parse`](super::routes::parse) and
//! by method, and one file per resource.

mod blob;
mod manifest;
mod tags;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::error_response;
use super::routes::{self, Route};
use crate::registry::{ErrorCode, Registry, RegistryError};

pub const API_VERSION_HEADER: &str = "Docker-Distribution-API-Version";
pub const API_VERSION: &str = "registry/2.0";

pub async fn dispatch(req: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let head = req.method() == Method::HEAD;
    let result = route(&req, &registry).await;
    let mut response = match result {
        Ok(response) => response,
        Err(err) => return error_response(&err, head),
    };
    response.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static("docker-distribution-api-version"),
        actix_web::http::header::HeaderValue::from_static(API_VERSION),
    );
    response
}

async fn route(req: &HttpRequest, registry: &Registry) -> Result<HttpResponse, RegistryError> {
    let Some(route) = routes::parse(req.path()) else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!("{} is not a registry API endpoint", req.path()),
        ));
    };
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let ns = query_param(req, "ns");
    match route {
        Route::Base if read => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body("{}")),
        Route::Manifest { name, reference } if read => {
            let target = registry.resolve(name, ns.as_deref())?;
            manifest::get(req, registry, &target, reference).await
        }
        Route::Blob { name, digest } if read => {
            let target = registry.resolve(name, ns.as_deref())?;
            blob::get(req, registry, &target, digest).await
        }
        Route::Tags { name } if read => {
            let target = registry.resolve(name, ns.as_deref())?;
            tags::list(req, registry, &target, ns.as_deref()).await
        }
        Route::Catalog if read => Err(RegistryError::new(
            ErrorCode::Unsupported,
            "this mirror does not list a catalog of upstream repositories",
        )),
        Route::Referrers { .. } if read => Err(RegistryError::new(
            ErrorCode::Unsupported,
            "the referrers API is not mirrored",
        )),
        Route::Base | Route::Catalog | Route::Tags { .. } | Route::Referrers { .. } => {
            Err(method_not_allowed(req))
        }
        Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. } => {
            // Validate the name first, so a bad name gets NAME_INVALID whatever the method.
            registry.resolve(name, ns.as_deref())?;
            Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!(
                    "{} {}: the mirror namespace is read-only; push to a private project instead",
                    req.method(),
                    req.path()
                ),
            ))
        }
    }
}

fn method_not_allowed(req: &HttpRequest) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{} is not supported on {}", req.method(), req.path()),
    )
}

/// One query parameter, percent-decoded.
pub(super) fn query_param(req: &HttpRequest, key: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

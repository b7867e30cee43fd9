//! The `/v2/` API: one dispatcher that routes by [`routes::parse`](super::routes::parse),
//! namespace (private project or mirror) and method, checks access, and hands over to one
//! file per resource.

mod access;
mod blob;
mod catalog;
mod manifest;
mod referrers;
mod tags;
mod upload;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::error_response;
use super::routes::{self, Route};
use crate::auth::scope::Action;
use crate::config::ServerSettings;
use crate::oci::ErrorCode;
use crate::oci::RepoName;
use crate::registry::{Registry, RegistryError};
use crate::upstream::Identity;

pub const API_VERSION_HEADER: &str = "Docker-Distribution-API-Version";
pub const API_VERSION: &str = "registry/2.0";

pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let head = req.method() == Method::HEAD;
    let mut response = match route(&req, payload, &registry).await {
        Ok(response) => response,
        Err(err) => return error_response(&err, head),
    };
    response.headers_mut().insert(
        HeaderName::from_static("docker-distribution-api-version"),
        HeaderValue::from_static(API_VERSION),
    );
    response
}

/// The action a request needs on a repository. Cancelling an upload is part of pushing.
fn action_for(route: &Route<'_>, method: &Method) -> Action {
    match (route, method) {
        (Route::Upload { .. } | Route::UploadStart { .. }, _) => Action::Push,
        (_, &Method::GET | &Method::HEAD) => Action::Pull,
        (_, &Method::DELETE) => Action::Delete,
        _ => Action::Push,
    }
}

async fn route(
    req: &HttpRequest,
    payload: web::Payload,
    registry: &Registry,
) -> Result<HttpResponse, RegistryError> {
    let Some(route) = routes::parse(req.path()) else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!("{} is not a registry API endpoint", req.path()),
        ));
    };
    let method = req.method().clone();
    let read = matches!(method, Method::GET | Method::HEAD);
    match route {
        Route::Base if read => {
            access::require(req, "registry", "", None)?;
            Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body("{}"))
        }
        Route::Catalog if read => catalog::list(req, registry),
        Route::Base | Route::Catalog => Err(method_not_allowed(req)),
        Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::Tags { name }
        | Route::Referrers { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. } => match registry.projects.repo_of(name) {
            Some(repo) => private(req, payload, registry, &repo?, route).await,
            None => mirror(req, registry, name, route).await,
        },
    }
}

/// A private project's repository: the whole API, access-checked.
async fn private(
    req: &HttpRequest,
    payload: web::Payload,
    registry: &Registry,
    repo: &RepoName,
    route: Route<'_>,
) -> Result<HttpResponse, RegistryError> {
    let method = req.method().clone();
    let caller = access::require(
        req,
        "repository",
        repo.as_str(),
        Some(action_for(&route, &method)),
    )?;
    match (route, method) {
        (Route::Manifest { reference, .. }, Method::GET | Method::HEAD) => {
            manifest::get_private(registry, repo, reference).await
        }
        (Route::Manifest { reference, .. }, Method::PUT) => {
            manifest::put(req, payload, registry, repo, reference).await
        }
        (Route::Manifest { reference, .. }, Method::DELETE) => {
            manifest::delete(registry, repo, reference).await
        }
        (Route::Blob { digest, .. }, Method::GET | Method::HEAD) => {
            blob::get_private(req, registry, repo, digest).await
        }
        (Route::Blob { digest, .. }, Method::DELETE) => {
            blob::delete_private(registry, repo, digest).await
        }
        (Route::Tags { .. }, Method::GET) => tags::list_private(req, registry, repo),
        (Route::Referrers { digest, .. }, Method::GET) => {
            referrers::list(req, registry, repo, digest)
        }
        (Route::UploadStart { .. }, Method::POST) => {
            let from_readable =
                |from: &RepoName| caller.allows("repository", from.as_str(), Action::Pull);
            upload::start(req, payload, registry, repo, from_readable).await
        }
        (Route::Upload { id, .. }, Method::PATCH) => {
            upload::patch(req, payload, registry, repo, id).await
        }
        (Route::Upload { id, .. }, Method::PUT) => {
            upload::finish(req, payload, registry, repo, id).await
        }
        (Route::Upload { id, .. }, Method::GET) => upload::status(req, registry, repo, id).await,
        (Route::Upload { id, .. }, Method::DELETE) => upload::cancel(registry, repo, id).await,
        _ => Err(method_not_allowed(req)),
    }
}

/// The mirror namespace: read-only.
async fn mirror(
    req: &HttpRequest,
    registry: &Registry,
    name: &str,
    route: Route<'_>,
) -> Result<HttpResponse, RegistryError> {
    let ns = query_param(req, "ns");
    // Validate the name first, so a bad name gets NAME_INVALID whatever the method.
    let target = registry.resolve(name, ns.as_deref())?;
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!(
                "{} {}: the mirror namespace is read-only; push to a private project instead",
                req.method(),
                req.path()
            ),
        ));
    }
    let caller = access::require(req, "repository", name, Some(Action::Pull))?;
    let mut target = target;
    if let Some(id) = caller.upstream_identity() {
        target.identity = Identity::Client(id.to_owned());
    }
    let result = match route {
        Route::Manifest { reference, .. } => manifest::get(req, registry, &target, reference).await,
        Route::Blob { digest, .. } => blob::get(req, registry, &target, digest).await,
        Route::Tags { .. } => tags::list(req, registry, &target, ns.as_deref()).await,
        Route::Referrers { .. } => Err(RegistryError::new(
            ErrorCode::Unsupported,
            "the referrers API is not mirrored",
        )),
        _ => Err(method_not_allowed(req)),
    };
    result.map_err(|e| access::challenge_pull(req, name, e))
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

/// A `Location` for `path`: relative, unless `server.external_url` is set. Relative
/// Locations are resolved by every client against the URL it used, so a TLS proxy in front
/// can never turn them into `http://`.
pub(super) fn location(req: &HttpRequest, path: &str) -> String {
    let external = req
        .app_data::<web::Data<ServerSettings>>()
        .and_then(|s| s.external_base());
    match external {
        Some(base) => format!("{base}{path}"),
        None => path.to_owned(),
    }
}

/// `n` and `last` of a listing request.
pub(super) fn page_params(
    req: &HttpRequest,
) -> Result<(Option<usize>, Option<String>), RegistryError> {
    let n = match query_param(req, "n") {
        None => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            RegistryError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n={n:?} is not a page size"),
            )
        })?),
    };
    Ok((n, query_param(req, "last")))
}

/// `Link: <path?last=…&n=…>; rel="next"`.
pub(super) fn next_link(path: &str, next: Option<(String, usize)>) -> Option<String> {
    let (last, n) = next?;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("last", &last)
        .append_pair("n", &n.to_string())
        .finish();
    Some(format!("<{path}?{query}>; rel=\"next\""))
}

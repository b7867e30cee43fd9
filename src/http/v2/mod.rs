//! The `/v2/` API: one dispatcher that routes by [`routes::parse`](super::routes::parse) and
//! method, resolves the repository (private project or mirror: a
//! [`Target`]), checks access, and hands over to one file per resource, each written once
//! against the [`Repository`] trait.

pub(crate) mod access;
mod blob;
mod catalog;
mod manifest;
mod referrers;
mod tags;
mod upload;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::error_response;
use super::routes::{self, Route};
use crate::auth::scope::{Action, ResourceType};
use crate::config::ServerSettings;
use crate::oci::ErrorCode;
use crate::oci::RepoName;
use crate::registry::listing::{Listing, PageRequest};
use crate::registry::repository::{MirrorRepository, ProjectRepository, Repository, Target};
use crate::registry::{Registry, RegistryError};

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
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    match route {
        Route::Base if read => {
            access::require(req, &ResourceType::Registry, "", None)?;
            Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body("{}"))
        }
        Route::Catalog if read => catalog::list(req, registry).await,
        Route::Base | Route::Catalog => Err(method_not_allowed(req)),
        Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::Tags { name }
        | Route::Referrers { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. } => repository(req, payload, registry, name, route).await,
    }
}

/// A repository's endpoints: the name resolved to a private project's repository or a
/// mirrored one, what that kind never does refused, the caller's access checked, and the
/// request served through the [`Repository`] bound to that caller.
async fn repository(
    req: &HttpRequest,
    payload: web::Payload,
    registry: &Registry,
    name: &str,
    route: Route<'_>,
) -> Result<HttpResponse, RegistryError> {
    let ns = query_param(req, "ns");
    // Resolved first, so a bad name gets NAME_INVALID whatever the method.
    let target = registry.target(name, ns.as_deref())?;
    let action = action_for(&route, req.method());
    target.admits(action)?;
    // A mount's source joins the challenge: a 401 then asks for everything the mount needs.
    let mount_source = match route {
        Route::UploadStart { .. } if query_param(req, "mount").is_some() => {
            query_param(req, "from").and_then(|from| from.parse::<RepoName>().ok())
        }
        _ => None,
    };
    let caller = access::require_also_asking(
        req,
        &ResourceType::Repository,
        name,
        Some(action),
        mount_source.as_ref(),
    )?;
    let served = match target {
        Target::Project(repo) => {
            let may_pull = |from: &RepoName| {
                caller.allows(&ResourceType::Repository, from.as_str(), Action::Pull)
            };
            let repo = ProjectRepository::new(&registry.projects, repo, may_pull);
            serve(req, payload, registry, &repo, route).await
        }
        Target::Mirror(target) => {
            let repo =
                MirrorRepository::new(&registry.mirror, target, ns, caller.upstream_grant()).await;
            serve(req, payload, registry, &repo, route).await
        }
    };
    served.map_err(|e| access::challenge_pull(req, name, e))
}

/// One repository endpoint, whichever kind of repository it is.
async fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    registry: &Registry,
    repo: &impl Repository,
    route: Route<'_>,
) -> Result<HttpResponse, RegistryError> {
    match (route, req.method().clone()) {
        (Route::Manifest { reference, .. }, Method::GET | Method::HEAD) => {
            manifest::get(req, repo, reference).await
        }
        (Route::Manifest { reference, .. }, Method::PUT) => {
            manifest::put(req, payload, repo, reference).await
        }
        (Route::Manifest { reference, .. }, Method::DELETE) => {
            manifest::delete(req, repo, reference).await
        }
        (Route::Blob { digest, .. }, Method::GET | Method::HEAD) => {
            blob::get(req, registry, repo, digest).await
        }
        (Route::Blob { digest, .. }, Method::DELETE) => blob::delete(req, repo, digest).await,
        (Route::Tags { .. }, Method::GET | Method::HEAD) => tags::list(req, repo).await,
        (Route::Referrers { digest, .. }, Method::GET | Method::HEAD) => {
            referrers::list(req, repo, digest).await
        }
        (Route::UploadStart { .. }, Method::POST) => upload::start(req, payload, repo).await,
        (Route::Upload { id, .. }, Method::PATCH) => upload::patch(req, payload, repo, id).await,
        (Route::Upload { id, .. }, Method::PUT) => upload::finish(req, payload, repo, id).await,
        (Route::Upload { id, .. }, Method::GET) => upload::status(req, repo, id).await,
        (Route::Upload { id, .. }, Method::DELETE) => upload::cancel(repo, id).await,
        _ => Err(method_not_allowed(req)),
    }
}

fn method_not_allowed(req: &HttpRequest) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{} is not supported on {}", req.method(), req.path()),
    )
}

/// The metrics audit records count in.
pub(super) fn metrics(req: &HttpRequest) -> Option<&crate::metrics::Metrics> {
    req.app_data::<web::Data<Registry>>()
        .map(|registry| &**registry.get_ref().metrics())
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
pub(super) fn page_request(req: &HttpRequest) -> Result<PageRequest, RegistryError> {
    let n = match query_param(req, "n") {
        None => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            RegistryError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n={n:?} is not a page size"),
            )
        })?),
    };
    Ok(PageRequest {
        n,
        last: query_param(req, "last"),
    })
}

/// A listing as JSON, with `Link: <path?query>; rel="next"` when there is a next page.
pub(super) fn listing_response(path: &str, listing: Listing) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    if let Some(next) = listing.next {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(next)
            .finish();
        response.insert_header((header::LINK, format!("<{path}?{query}>; rel=\"next\"")));
    }
    response.body(listing.body)
}

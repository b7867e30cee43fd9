//! The HTTP layer: the only code that knows actix. It parses requests into typed calls on the
//! [`Registry`](crate::registry::Registry) and translates the answers (and errors) back.
//!
//! `/v2/…` paths are routed by [`routes::parse`] rather than by actix patterns, because the
//! repository name itself contains slashes and the endpoint is only known from the right end
//! of the path.

pub mod access_log;
pub mod admin;
pub mod admin_import;
pub mod body;
pub mod challenge;
pub mod error;
pub mod forwarded;
mod probes;
pub mod range;
mod repositories;
pub mod routes;
pub mod source;
pub mod stall;
pub mod token;
pub mod v2;

use actix_web::web;

/// Registers every route berth serves; used by the server and by the tests alike. `/metrics`
/// answers 404 here when `server.metrics_listen` serves it instead.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").to(probes::healthz))
        .service(web::resource("/readyz").to(probes::readyz))
        .service(web::resource("/metrics").to(probes::public_metrics))
        .service(
            web::resource("/token")
                .route(web::get().to(token::get))
                .route(web::post().to(token::post)),
        )
        .service(web::resource(["/v2", "/v2/{tail:.*}"]).to(v2::dispatch))
        .configure(repositories::configure);
}

/// The routes of the health listener: `/healthz`, `/readyz` and, unless it has a listener of
/// its own, `/metrics`.
pub fn configure_health(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").to(probes::healthz))
        .service(web::resource("/readyz").to(probes::readyz))
        .service(web::resource("/metrics").to(probes::public_metrics));
}

/// The routes of `server.metrics_listen`: `/metrics` alone.
pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").to(probes::metrics));
}

//! The HTTP layer: the only code that knows actix. It parses requests into typed calls on the
//! [`Registry`](crate::registry::Registry) and translates the answers (and errors) back.
//!
//! `/v2/…` paths are routed by [`routes::parse`] rather than by actix patterns, because the
//! repository name itself contains slashes and the endpoint is only known from the right end
//! of the path.

pub mod admin;
pub mod body;
pub mod challenge;
pub mod error;
pub mod range;
pub mod routes;
pub mod source;
pub mod stall;
pub mod token;
pub mod v2;

use actix_web::{web, HttpResponse};

use crate::registry::Registry;

/// Registers every route berth serves; used by the server and by the tests alike.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").to(healthz))
        .service(web::resource("/metrics").to(metrics))
        .service(
            web::resource("/token")
                .route(web::get().to(token::get))
                .route(web::post().to(token::post)),
        )
        .service(web::resource(["/v2", "/v2/{tail:.*}"]).to(v2::dispatch));
}

/// The routes of the health listener: `/healthz` and `/metrics` only.
pub fn configure_health(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").to(healthz))
        .service(web::resource("/metrics").to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn metrics(registry: web::Data<Registry>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(registry.metrics().render())
}

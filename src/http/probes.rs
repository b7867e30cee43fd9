//! Probes and metrics: `/healthz` (the process answers), `/readyz` (it should get traffic) and
//! `/metrics` (Prometheus text format).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::config::ServerSettings;
use crate::registry::Registry;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// 200 when the node is ready, else 503; both with the checks as JSON.
pub async fn readyz(registry: web::Data<Registry>) -> HttpResponse {
    let report = registry.ready();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(report)
}

/// `/metrics` on a listener that serves it only when no `server.metrics_listen` does.
pub async fn public_metrics(req: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let elsewhere = req
        .app_data::<web::Data<ServerSettings>>()
        .is_some_and(|server| server.metrics_listen.is_some());
    if elsewhere {
        return HttpResponse::NotFound()
            .content_type("text/plain")
            .body("metrics are served on server.metrics_listen\n");
    }
    metrics(registry).await
}

pub async fn metrics(registry: web::Data<Registry>) -> HttpResponse {
    let cache = std::sync::Arc::clone(registry.cache());
    // One read of the index's running totals and a listing of uploads: off the workers.
    let stored = web::block(move || cache.stored_totals())
        .await
        .ok()
        .flatten();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(registry.metrics().render(stored))
}

//! The admin endpoint's routes, served only on the admin Unix socket (never on the TCP
//! listener): the socket's file mode is the access control.
//!
//! | method | path               | answer |
//! |--------|--------------------|--------|
//! | GET    | `/admin/stats`     | `CacheStats` (JSON) |
//! | GET    | `/admin/images`    | `[CachedImage]` |
//! | POST   | `/admin/images/rm` | body `{"image": "alpine:3.20"}` → `Dropped` |
//! | POST   | `/admin/gc`        | `Collected` |
//! | POST   | `/admin/retention` | body `{"dry_run": true}` → `RetentionReport` |
//! | POST   | `/admin/repositories/rm` | body `{"repository": "team/app"}` → `RemovedRepository` |
//!
//! and `berth import`'s routes (see [`super::admin_import`]).
//!
//! Errors are the registry's JSON error body with its status.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::error_response;
use crate::registry::{Registry, RegistryError};

/// What the admin routes share besides the registry: the gc grace period.
#[derive(Debug, Clone, Copy)]
pub struct AdminSettings {
    pub gc_grace: Duration,
}

/// The body of `POST /admin/images/rm`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub image: String,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/stats").route(web::get().to(stats)))
        .service(web::resource("/admin/images").route(web::get().to(images)))
        .service(web::resource("/admin/images/rm").route(web::post().to(remove)))
        .service(web::resource("/admin/gc").route(web::post().to(gc)))
        .service(web::resource("/admin/retention").route(web::post().to(retention)))
        .service(web::resource("/admin/repositories/rm").route(web::post().to(remove_repository)))
        .configure(super::admin_import::configure);
}

/// The body of `POST /admin/retention`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RetentionRequest {
    #[serde(default)]
    pub dry_run: bool,
}

/// The body of `POST /admin/repositories/rm`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveRepositoryRequest {
    pub repository: String,
}

async fn retention(
    registry: web::Data<Registry>,
    body: web::Json<RetentionRequest>,
) -> HttpResponse {
    answer(registry.apply_retention(body.dry_run).await)
}

async fn remove_repository(
    registry: web::Data<Registry>,
    body: web::Json<RemoveRepositoryRequest>,
) -> HttpResponse {
    answer(registry.delete_repository(&body.repository).await)
}

fn answer<T: Serialize>(result: Result<T, RegistryError>) -> HttpResponse {
    match result {
        Ok(value) => HttpResponse::Ok().json(value),
        Err(e) => error_response(&e, false),
    }
}

async fn stats(registry: web::Data<Registry>) -> HttpResponse {
    answer(registry.cache_stats().await)
}

async fn images(registry: web::Data<Registry>) -> HttpResponse {
    answer(registry.cached_images().await)
}

async fn remove(registry: web::Data<Registry>, body: web::Json<RemoveRequest>) -> HttpResponse {
    answer(registry.drop_cached(&body.image).await)
}

async fn gc(registry: web::Data<Registry>, settings: web::Data<AdminSettings>) -> HttpResponse {
    answer(registry.collect_garbage(settings.gc_grace).await)
}

//! The admin socket's import routes, which `berth import` drives (see
//! [`crate::bundle::import`]):
//!
//! | method | path                                        | answer |
//! |--------|---------------------------------------------|--------|
//! | POST   | `/admin/import/{session}/begin`             | body `ImportRequest` → `Begun` |
//! | PUT    | `/admin/import/{session}/blobs/{digest}?size=N` | the blob's bytes → `{}` |
//! | POST   | `/admin/import/{session}/commit`            | body `ImportRequest` → `Imported` |
//! | POST   | `/admin/import/{session}/abort`             | `{}` |

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::error_response;
use crate::bundle::import::commit::{self, ImportRequest};
use crate::oci::{Digest, ErrorCode};
use crate::registry::{Registry, RegistryError};

/// Bundles name their images, and may list many digests: more room than the default.
const REQUEST_LIMIT: usize = 16 << 20;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(REQUEST_LIMIT))
        .service(web::resource("/admin/import/{session}/begin").route(web::post().to(begin)))
        .service(web::resource("/admin/import/{session}/blobs/{digest}").route(web::put().to(blob)))
        .service(web::resource("/admin/import/{session}/commit").route(web::post().to(commit)))
        .service(web::resource("/admin/import/{session}/abort").route(web::post().to(abort)));
}

fn answer<T: Serialize>(result: Result<T, RegistryError>) -> HttpResponse {
    match result {
        Ok(value) => HttpResponse::Ok().json(value),
        Err(e) => error_response(&e, false),
    }
}

async fn begin(
    registry: web::Data<Registry>,
    session: web::Path<String>,
    request: web::Json<ImportRequest>,
) -> HttpResponse {
    answer(commit::begin(&registry, &session, request.into_inner()).await)
}

#[derive(Deserialize)]
struct BlobQuery {
    size: u64,
}

async fn blob(
    registry: web::Data<Registry>,
    path: web::Path<(String, String)>,
    query: web::Query<BlobQuery>,
    body: web::Payload,
) -> HttpResponse {
    let (session, digest) = path.into_inner();
    let digest: Digest = match digest.parse() {
        Ok(digest) => digest,
        Err(_) => {
            return answer::<()>(Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                format!("{digest:?} is not a digest"),
            )))
        }
    };
    let staged = commit::stage(&registry, &session, &digest, query.size, body).await;
    answer(staged.map(|()| serde_json::json!({})))
}

async fn commit(
    registry: web::Data<Registry>,
    session: web::Path<String>,
    request: web::Json<ImportRequest>,
) -> HttpResponse {
    answer(commit::commit(&registry, &session, request.into_inner()).await)
}

async fn abort(registry: web::Data<Registry>, session: web::Path<String>) -> HttpResponse {
    answer(
        commit::abort(&registry, &session)
            .await
            .map(|()| serde_json::json!({})),
    )
}

//! Registry errors as HTTP answers: the spec's JSON body, the code's status, `Retry-After`,
//! and no body at all for HEAD. Server faults are logged here, once, with their cause chain.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

use crate::registry::RegistryError;

pub fn error_response(err: &RegistryError, head: bool) -> HttpResponse {
    if err.is_server_fault() {
        tracing::error!(error = %err.chain(), "request failed");
    } else {
        tracing::debug!(error = %err, "request refused");
    }
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.insert_header((super::v2::API_VERSION_HEADER, super::v2::API_VERSION));
    if let Some(challenge) = err.challenge() {
        response.insert_header((header::WWW_AUTHENTICATE, challenge));
    }
    if let Some(retry) = err.retry_after() {
        response.insert_header((header::RETRY_AFTER, retry.as_secs().max(1).to_string()));
    }
    if head {
        return response.finish();
    }
    match serde_json::to_vec(&err.body()) {
        Ok(body) => response.content_type("application/json").body(body),
        Err(_) => response.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::ErrorCode;
    use actix_web::body::MessageBody;

    #[test]
    fn error_bodies_and_headers() {
        let err = RegistryError::new(ErrorCode::TooManyRequests, "slow down")
            .with_retry_after(Some(std::time::Duration::from_secs(30)));
        let response = error_response(&err, false);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get("retry-after").unwrap(), "30");
        let body = response.into_body().try_into_bytes().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["errors"][0]["code"], "TOOMANYREQUESTS");
        assert_eq!(json["errors"][0]["message"], "slow down");

        let head = error_response(&RegistryError::new(ErrorCode::BlobUnknown, "x"), true);
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
        assert!(head.into_body().try_into_bytes().unwrap().is_empty());
    }
}

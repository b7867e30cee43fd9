//! `/token`: the token endpoint of Docker token authentication, in both forms clients use.
//!
//! - `GET /token?service=&scope=&account=[&offline_token=true]` with Basic credentials or none
//!   (anonymous), as the Docker token spec defines it;
//! - `POST /token` with an OAuth2 form: `grant_type=password` (`username`, `password`) or
//!   `grant_type=refresh_token` (`refresh_token`), space-separated `scope`, and
//!   `access_type=offline` for a refresh token (docker stores it instead of the password).
//!
//! This file parses either form into a [`TokenRequest`] and renders the answer; who gets
//! what is decided in [`crate::registry::token`].

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::error_response;
use super::source;
use crate::auth::{scope, AuthError, Credentials, TokenResponse, TokenService};
use crate::oci::ErrorCode;
use crate::registry::token::{issue_token, Grant, TokenRequest};
use crate::registry::{Registry, RegistryError};

/// `GET /token`
pub async fn get(req: HttpRequest) -> HttpResponse {
    respond(answer(&req, parse_get(&req)).await)
}

/// `POST /token`
pub async fn post(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    respond(answer(&req, parse_post(&req, &body)).await)
}

async fn answer(
    req: &HttpRequest,
    request: Result<TokenRequest, RegistryError>,
) -> Result<TokenResponse, RegistryError> {
    let tokens = req
        .app_data::<web::Data<TokenService>>()
        .cloned()
        .ok_or_else(|| RegistryError::new(ErrorCode::NameUnknown, "no token service configured"))?;
    let registry = req.app_data::<web::Data<Registry>>().map(|r| r.get_ref());
    issue_token(tokens.into_inner(), registry, request?).await
}

fn parse_get(req: &HttpRequest) -> Result<TokenRequest, RegistryError> {
    let params = Params::parse(req.query_string().as_bytes());
    let scopes = scope::parse_all(params.all("scope"))?;
    let grant = match req.headers().get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| AuthError::MalformedCredentials("non-ASCII credentials"))?;
            Grant::Password {
                credentials: Credentials::from_basic(value)?,
                account: params.first("account").map(str::to_owned),
            }
        }
        None => Grant::Anonymous,
    };
    Ok(TokenRequest {
        service: params.first("service").map(str::to_owned),
        scopes,
        grant,
        offline: params.first("offline_token") == Some("true"),
        client: source::client_address(req),
    })
}

fn parse_post(req: &HttpRequest, body: &[u8]) -> Result<TokenRequest, RegistryError> {
    let params = Params::parse(body);
    let scopes = scope::parse_all(params.all("scope"))?;
    let grant = match params.first("grant_type") {
        Some("password") => {
            let (Some(username), Some(password)) =
                (params.first("username"), params.first("password"))
            else {
                return Err(unauthorized(
                    "grant_type=password needs username and password",
                ));
            };
            Grant::Password {
                credentials: Credentials::new(username, password),
                account: None,
            }
        }
        Some("refresh_token") => {
            let Some(refresh_token) = params.first("refresh_token") else {
                return Err(unauthorized("grant_type=refresh_token needs refresh_token"));
            };
            Grant::Refresh(refresh_token.to_owned())
        }
        Some(other) => {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("grant_type {other:?} is not supported: use password or refresh_token"),
            ))
        }
        None => {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                "grant_type is required: password or refresh_token",
            ))
        }
    };
    Ok(TokenRequest {
        service: params.first("service").map(str::to_owned),
        scopes,
        grant,
        offline: params.first("access_type") == Some("offline"),
        client: source::client_address(req),
    })
}

fn unauthorized(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::Unauthorized, message)
}

fn respond(result: Result<TokenResponse, RegistryError>) -> HttpResponse {
    match result {
        // RFC 6749 §5.1: token responses must not be cached.
        Ok(tokens) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(tokens),
        Err(err) => {
            let mut response = error_response(&err, false);
            if err.code() == ErrorCode::Unauthorized {
                // Lets curl and browsers prompt for credentials; docker reads the JSON body.
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"berth\""),
                );
            }
            response
        }
    }
}

/// Decoded `application/x-www-form-urlencoded` pairs (a query string or a POST body), where a
/// name may repeat (`scope`).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(input: &[u8]) -> Self {
        Params(url::form_urlencoded::parse(input).into_owned().collect())
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::tests::{key, EC_SEC1};
    use crate::auth::policy::tests::{projects, settings};
    use crate::auth::scope::Action::{Pull, Push};
    use crate::auth::scope::ResourceType;
    use actix_web::{test, App};
    use base64::Engine as _;
    use std::io::Write;

    fn token_service(htpasswd: &tempfile::NamedTempFile) -> web::Data<TokenService> {
        let mut auth = settings(false);
        auth.service = "registry.test".into();
        auth.htpasswd = Some(htpasswd.path().to_path_buf());
        web::Data::new(TokenService::new(&auth, &projects(), key(EC_SEC1)).unwrap())
    }

    fn htpasswd() -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "dave:{}", bcrypt::hash("dev", 4).unwrap()).unwrap();
        file
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    macro_rules! app {
        ($tokens:expr) => {
            test::init_service(
                App::new().app_data($tokens.clone()).service(
                    web::resource("/token")
                        .route(web::get().to(get))
                        .route(web::post().to(post)),
                ),
            )
            .await
        };
    }

    async fn json(response: actix_web::dev::ServiceResponse) -> serde_json::Value {
        serde_json::from_slice(&test::read_body(response).await).unwrap()
    }

    #[actix_rt::test]
    async fn get_with_basic_credentials() {
        let file = htpasswd();
        let tokens = token_service(&file);
        let app = app!(tokens);
        let req = test::TestRequest::get()
            .uri("/token?service=registry.test&account=dave&scope=repository:secret/app:pull,push&scope=repository:library/alpine:pull")
            .insert_header(("Authorization", basic("dave", "dev")))
            .to_request();
        let response = test::call_service(&app, req).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
        let body = json(response).await;
        assert_eq!(body["token"], body["access_token"]);
        assert_eq!(body["expires_in"], 300);
        assert!(body["issued_at"].is_string());
        assert!(body.get("refresh_token").is_none());
        let claims = tokens
            .verify_access(body["token"].as_str().unwrap())
            .unwrap();
        assert!(claims.allows(&ResourceType::Repository, "secret/app", Push));
        assert!(claims.allows(&ResourceType::Repository, "library/alpine", Pull));
    }

    #[actix_rt::test]
    async fn get_anonymous_and_offline() {
        let file = htpasswd();
        let tokens = token_service(&file);
        let app = app!(tokens);
        // anonymous_pull is off in this fixture: an anonymous token grants nothing.
        let req = test::TestRequest::get()
            .uri("/token?service=registry.test&scope=repository:library/alpine:pull")
            .to_request();
        let body = json(test::call_service(&app, req).await).await;
        let claims = tokens
            .verify_access(body["token"].as_str().unwrap())
            .unwrap();
        assert!(claims.access.is_empty());
        assert_eq!(claims.subject(), None);

        let req = test::TestRequest::get()
            .uri("/token?service=registry.test&offline_token=true&client_id=docker")
            .insert_header(("Authorization", basic("dave", "dev")))
            .to_request();
        let body = json(test::call_service(&app, req).await).await;
        assert!(body["refresh_token"].is_string());
    }

    #[actix_rt::test]
    async fn wrong_credentials_are_401_with_the_spec_body() {
        let file = htpasswd();
        let tokens = token_service(&file);
        let app = app!(tokens);
        for (uri, auth) in [
            ("/token?service=registry.test", basic("dave", "wrong")),
            ("/token?service=registry.test", basic("nobody", "dev")),
            (
                "/token?service=registry.test&account=eve",
                basic("dave", "dev"),
            ),
            ("/token", "Bearer abc".to_string()),
        ] {
            let req = test::TestRequest::get()
                .uri(uri)
                .insert_header(("Authorization", auth.clone()))
                .to_request();
            let response = test::call_service(&app, req).await;
            assert_eq!(response.status(), 401, "{uri} {auth}");
            assert!(response.headers().contains_key("www-authenticate"));
            let body = json(response).await;
            assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
            assert!(body["errors"][0]["message"].is_string());
        }
    }

    #[actix_rt::test]
    async fn wrong_service_and_bad_scope() {
        let file = htpasswd();
        let tokens = token_service(&file);
        let app = app!(tokens);
        let req = test::TestRequest::get()
            .uri("/token?service=elsewhere")
            .to_request();
        let response = test::call_service(&app, req).await;
        assert_eq!(response.status(), 401);
        let body = json(response).await;
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("registry.test") && message.contains("elsewhere"),
            "{message}"
        );

        let req = test::TestRequest::get()
            .uri("/token?scope=repository:alpine")
            .to_request();
        let response = test::call_service(&app, req).await;
        assert_eq!(response.status(), 400);
        assert_eq!(json(response).await["errors"][0]["code"], "NAME_INVALID");
    }

    #[actix_rt::test]
    async fn post_password_then_refresh() {
        let file = htpasswd();
        let tokens = token_service(&file);
        let app = app!(tokens);
        let req = test::TestRequest::post()
            .uri("/token")
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload(
                "grant_type=password&username=dave&password=dev&service=registry.test\
                 &client_id=docker&access_type=offline\
                 &scope=repository%3Asecret%2Fapp%3Apull+repository%3Asecret%2Fbase%3Apull%2Cpush",
            )
            .to_request();
        let response = test::call_service(&app, req).await;
        assert_eq!(response.status(), 200);
        let body = json(response).await;
        let claims = tokens
            .verify_access(body["access_token"].as_str().unwrap())
            .unwrap();
        assert!(claims.allows(&ResourceType::Repository, "secret/app", Pull));
        assert!(claims.allows(&ResourceType::Repository, "secret/base", Push));
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();

        let req = test::TestRequest::post()
            .uri("/token")
            .set_payload(format!(
                "grant_type=refresh_token&refresh_token={refresh}&service=registry.test\
                 &scope=repository:secret/other:pull"
            ))
            .to_request();
        let response = test::call_service(&app, req).await;
        assert_eq!(response.status(), 200);
        let body = json(response).await;
        let claims = tokens
            .verify_access(body["token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims.subject(), Some("dave"));
        assert!(claims.allows(&ResourceType::Repository, "secret/other", Pull));

        for (payload, status) in [
            (
                "grant_type=password&username=dave&password=nope".to_string(),
                401,
            ),
            ("grant_type=password&username=dave".to_string(), 401),
            (
                "grant_type=refresh_token&refresh_token=garbage".to_string(),
                401,
            ),
            ("grant_type=refresh_token".to_string(), 401),
            ("grant_type=authorization_code".to_string(), 405),
            ("username=dave&password=dev".to_string(), 405),
        ] {
            let req = test::TestRequest::post()
                .uri("/token")
                .set_payload(payload.clone())
                .to_request();
            let response = test::call_service(&app, req).await;
            assert_eq!(response.status(), status, "{payload}");
        }
    }

    #[actix_rt::test]
    async fn without_a_token_service_the_route_is_404() {
        let app = test::init_service(
            App::new().service(
                web::resource("/token")
                    .route(web::get().to(get))
                    .route(web::post().to(post)),
            ),
        )
        .await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/token").to_request()).await;
        assert_eq!(response.status(), 404);
        let body = json(response).await;
        assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
        assert_eq!(body["errors"][0]["message"], "no token service configured");
    }
}

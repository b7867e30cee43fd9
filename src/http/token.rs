//! `/token`: the token endpoint of Docker token authentication, in both forms clients use.
//!
//! - `GET /token?service=&scope=&account=[&offline_token=true]` with Basic credentials or none
//!   (anonymous), as the Docker token spec defines it;
//! - `POST /token` with an OAuth2 form: `grant_type=password` (`username`, `password`) or
//!   `grant_type=refresh_token` (`refresh_token`), space-separated `scope`, and
//!   `access_type=offline` for a refresh token (docker stores it instead of the password).
//!
//! Password checks run as [`crate::auth::login`] orders them: throttle, cache of verified logins,
//! then bcrypt on a bounded pool, never on the request executor. Wrong credentials are a 401
//! with the spec's JSON error body, the same for unknown users and wrong passwords; too many
//! failures from one user name or address are a 429 `TOOMANYREQUESTS` with `Retry-After`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::error_response;
use super::source;
use crate::auth::{scope, AuthError, TokenResponse, TokenService};
use crate::oci::ErrorCode;
use crate::registry::{Registry, RegistryError};

/// `GET /token`
pub async fn get(req: HttpRequest) -> HttpResponse {
    respond(get_token(&req).await)
}

/// `POST /token`
pub async fn post(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    respond(post_token(&req, &body).await)
}

async fn get_token(req: &HttpRequest) -> Result<TokenResponse, RegistryError> {
    let tokens = service(req)?;
    let params = Params::parse(req.query_string().as_bytes());
    check_service(&tokens, &params)?;
    let scopes = scope::parse_all(params.all("scope")).map_err(auth_error)?;
    let credentials = match req.headers().get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().map_err(|_| {
                auth_error(AuthError::MalformedCredentials("non-ASCII credentials"))
            })?;
            Some(TokenService::parse_basic(value).map_err(auth_error)?)
        }
        None => None,
    };
    let offline = params.first("offline_token") == Some("true");
    let subject = match credentials {
        None => None,
        Some((username, password)) => {
            match login(req, &tokens, &username, &password, &scopes).await? {
                Login::Upstream(response) => return Ok(response),
                Login::Local => {}
            }
            if params
                .first("account")
                .is_some_and(|account| account != username)
            {
                return Err(auth_error(AuthError::MalformedCredentials(
                    "account does not match the credentials",
                )));
            }
            Some(username)
        }
    };
    blocking(move || tokens.issue(subject.as_deref(), &scopes, offline)).await
}

/// How a client's credentials were accepted.
enum Login {
    /// A local user's password.
    Local,
    /// Upstream's credentials, passed through: the token is ready.
    Upstream(TokenResponse),
}

/// Checks credentials: a local user's password, or, when [`passthrough_applies`], the
/// upstream's. A failure counts towards the throttle; with local users every failure, unknown
/// user or wrong password, locally or upstream, is the same answer.
async fn login(
    req: &HttpRequest,
    tokens: &TokenService,
    username: &str,
    password: &str,
    scopes: &[scope::Scope],
) -> Result<Login, RegistryError> {
    let address = source::client_address(req);
    let local = tokens.authenticate(username, password, address).await;
    let failure = match local {
        Ok(()) => return Ok(Login::Local),
        Err(AuthError::InvalidCredentials) if passthrough_applies(tokens, username, scopes) => {
            match passthrough(req, tokens, username, password, scopes).await {
                Ok(response) => return Ok(Login::Upstream(response)),
                Err(e) if tokens.is_open() => return Err(e),
                Err(e) => {
                    tracing::info!(error = %e, "passed-through credentials refused");
                    AuthError::InvalidCredentials
                }
            }
        }
        Err(e) => e,
    };
    if matches!(failure, AuthError::InvalidCredentials) {
        tokens.login_failed(username, address);
    }
    Err(auth_error(failure))
}

/// Credentials berth does not know may be an upstream's: passed through when every scope asked
/// for is a pull of a repository of the mirror namespace. A local user's wrong password never
/// is, and neither is a push (the mirror takes none: pushing to a repository that is in no
/// project never contacts an upstream).
fn passthrough_applies(tokens: &TokenService, username: &str, scopes: &[scope::Scope]) -> bool {
    !tokens.is_local_user(username)
        && (!scopes.is_empty() || tokens.is_open())
        && scopes.iter().all(|s| {
            s.resource_type == scope::REPOSITORY
                && !s.actions.is_empty()
                && s.actions
                    .iter()
                    .all(|&action| action == scope::Action::Pull)
                && tokens.policy().is_project_repo(&s.name).is_none()
        })
}

/// Exchanges the client's credentials upstream and issues berth's token tied to that grant.
async fn passthrough(
    req: &HttpRequest,
    tokens: &TokenService,
    username: &str,
    password: &str,
    scopes: &[scope::Scope],
) -> Result<TokenResponse, RegistryError> {
    let registry = req
        .app_data::<web::Data<Registry>>()
        .ok_or_else(|| unauthorized("credentials cannot be passed through here"))?;
    if scopes.is_empty() {
        // A login: check the credentials at the default upstream; grant nothing yet.
        let target = registry.resolve("library/login-check", None)?;
        registry
            .mirror
            .verify_login(&target, username, password)
            .await?;
        return tokens.issue(Some(username), &[], false).map_err(auth_error);
    }
    let mut grant: Option<(String, String, std::time::Duration)> = None;
    let mut repos = Vec::new();
    for asked in scopes {
        let target = registry.resolve(&asked.name, None)?;
        let (id, lifetime) = registry
            .mirror
            .passthrough_login(&target, username, password)
            .await?;
        if let Some((upstream, ..)) = &grant {
            if upstream != target.upstream.name() {
                return Err(unauthorized(
                    "one token cannot carry credentials for two upstreams",
                ));
            }
        }
        let shortest = grant.as_ref().map_or(lifetime, |(.., l)| lifetime.min(*l));
        grant = Some((target.upstream.name().to_owned(), id, shortest));
        repos.push(asked.name.clone());
    }
    let Some((_, id, lifetime)) = grant else {
        return Err(unauthorized("nothing to pass credentials through for"));
    };
    tokens
        .issue_for_upstream(username, &repos, &id, lifetime)
        .map_err(auth_error)
}

async fn post_token(req: &HttpRequest, body: &[u8]) -> Result<TokenResponse, RegistryError> {
    let tokens = service(req)?;
    let params = Params::parse(body);
    check_service(&tokens, &params)?;
    let scopes = scope::parse_all(params.all("scope")).map_err(auth_error)?;
    let offline = params.first("access_type") == Some("offline");
    match params.first("grant_type") {
        Some("password") => {
            let (Some(username), Some(password)) =
                (params.first("username"), params.first("password"))
            else {
                return Err(unauthorized(
                    "grant_type=password needs username and password",
                ));
            };
            match login(req, &tokens, username, password, &scopes).await? {
                Login::Upstream(response) => Ok(response),
                Login::Local => {
                    let username = username.to_owned();
                    blocking(move || tokens.issue(Some(&username), &scopes, offline)).await
                }
            }
        }
        Some("refresh_token") => {
            let Some(refresh_token) = params.first("refresh_token") else {
                return Err(unauthorized("grant_type=refresh_token needs refresh_token"));
            };
            let refresh_token = refresh_token.to_owned();
            blocking(move || tokens.refresh(&refresh_token, &scopes)).await
        }
        Some(other) => Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("grant_type {other:?} is not supported: use password or refresh_token"),
        )),
        None => Err(RegistryError::new(
            ErrorCode::Unsupported,
            "grant_type is required: password or refresh_token",
        )),
    }
}

/// The token service, when `[auth]` configured one.
fn service(req: &HttpRequest) -> Result<web::Data<TokenService>, RegistryError> {
    req.app_data::<web::Data<TokenService>>()
        .cloned()
        .ok_or_else(|| RegistryError::new(ErrorCode::NameUnknown, "no token service configured"))
}

/// A token for another service would be useless to the client, and a sign of misconfiguration
/// worth saying so plainly.
fn check_service(tokens: &TokenService, params: &Params) -> Result<(), RegistryError> {
    match params.first("service") {
        Some(asked) if asked != tokens.service() => Err(unauthorized(format!(
            "this token service issues tokens for service {:?}, not {asked:?}",
            tokens.service()
        ))),
        _ => Ok(()),
    }
}

async fn blocking<F>(work: F) -> Result<TokenResponse, RegistryError>
where
    F: FnOnce() -> Result<TokenResponse, AuthError> + Send + 'static,
{
    web::block(work)
        .await
        .map_err(|e| RegistryError::internal("token service failure", e))?
        .map_err(auth_error)
}

fn unauthorized(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::Unauthorized, message)
}

fn auth_error(err: AuthError) -> RegistryError {
    if err.is_server_fault() {
        return RegistryError::internal("token service failure", err);
    }
    match err {
        // There is no generic 400 code in the registry's table; the scope names a resource.
        AuthError::InvalidScope { .. } => {
            RegistryError::new(ErrorCode::NameInvalid, err.to_string())
        }
        AuthError::Throttled { retry_after } => {
            RegistryError::new(ErrorCode::TooManyRequests, err.to_string())
                .with_retry_after(Some(retry_after))
        }
        AuthError::Busy => RegistryError::new(ErrorCode::TooManyRequests, err.to_string())
            .with_retry_after(Some(std::time::Duration::from_secs(1))),
        // Well-formed, but more than berth grants at once: refused, not a credentials problem
        // (a 401 would send clients into a login loop).
        AuthError::TooManyScopes { .. } => RegistryError::new(ErrorCode::Denied, err.to_string()),
        _ => unauthorized(err.to_string()),
    }
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
    use actix_web::{test, App};
    use base64::Engine as _;
    use std::io::Write;

    fn token_service(htpasswd: &tempfile::NamedTempFile) -> web::Data<TokenService> {
        let mut auth = settings(false);
        auth.service = "registry.test".into();
        auth.htpasswd = Some(htpasswd.path().to_path_buf());
        web::Data::new(TokenService::with_key(&auth, &projects(), key(EC_SEC1)).unwrap())
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
        assert!(claims.allows("repository", "secret/app", Push));
        assert!(claims.allows("repository", "library/alpine", Pull));
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
        assert!(claims.allows("repository", "secret/app", Pull));
        assert!(claims.allows("repository", "secret/base", Push));
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
        assert!(claims.allows("repository", "secret/other", Pull));

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

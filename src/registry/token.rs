//! Token requests, decided: who the client is (one of berth's users, an upstream's user whose
//! credentials are passed through, or anonymous) and what its token grants.
//!
//! The HTTP layer parses a request into a [`TokenRequest`] and renders what
//! [`issue_token`] answers; every decision is here. Password checks run as
//! [`crate::auth::login`] orders them: throttle, cache of verified logins, then bcrypt on a
//! bounded pool. Wrong credentials are the same answer for unknown users and wrong
//! passwords; too many failures from one user name or address are `TOOMANYREQUESTS`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::audit::{self, Actor};
use super::{Registry, RegistryError};
use crate::auth::claims::now_secs;
use crate::auth::scope::{Action, ResourceType, Scope};
use crate::auth::seal::{GrantToken, UpstreamGrant};
use crate::auth::{AuthError, Credentials, TokenResponse, TokenService};
use crate::metrics::requests::TokenGrant;
use crate::oci::ErrorCode;

/// A token request, parsed.
#[derive(Debug)]
pub struct TokenRequest {
    /// The `service` the client asked a token for, if it named one.
    pub service: Option<String>,
    pub scopes: Vec<Scope>,
    pub grant: Grant,
    /// Whether the client asked for a refresh token too (`offline_token=true`,
    /// `access_type=offline`); granted only to a local user.
    pub offline: bool,
    /// The client's address, for the login throttle.
    pub client: Option<IpAddr>,
}

/// How the client proves who it is.
#[derive(Debug)]
pub enum Grant {
    /// No credentials: what anonymous clients may have.
    Anonymous,
    /// A user name and password (Basic credentials, or OAuth2 `grant_type=password`), with the
    /// `account` the client says they are for (the Docker token spec's GET form).
    Password {
        credentials: Credentials,
        account: Option<String>,
    },
    /// OAuth2 `grant_type=refresh_token`.
    Refresh(String),
}

/// Answers a token request. `registry` is where passed-through credentials are checked;
/// without it (a token service alone) only local users log in. A request with credentials is a
/// login, and leaves an audit record.
pub async fn issue_token(
    tokens: Arc<TokenService>,
    registry: Option<&Registry>,
    request: TokenRequest,
) -> Result<TokenResponse, RegistryError> {
    let (grant, user) = match &request.grant {
        Grant::Anonymous => (TokenGrant::Anonymous, None),
        Grant::Password { credentials, .. } => {
            (TokenGrant::Password, Some(credentials.username.clone()))
        }
        Grant::Refresh(_) => (TokenGrant::Refresh, None),
    };
    let client = request.client;
    let answer = decide(tokens, registry, request).await;
    let actor = Actor {
        user: user.as_deref(),
        client,
    };
    let outcome = answer.as_ref().map(|_| ()).map_err(|e| e.message());
    audit::token(registry.map(|r| &**r.metrics()), actor, grant, outcome);
    answer
}

async fn decide(
    tokens: Arc<TokenService>,
    registry: Option<&Registry>,
    request: TokenRequest,
) -> Result<TokenResponse, RegistryError> {
    check_service(&tokens, request.service.as_deref())?;
    let TokenRequest {
        scopes,
        grant,
        offline,
        client,
        ..
    } = request;
    match grant {
        Grant::Anonymous => blocking(move || tokens.issue(None, &scopes, offline)).await,
        Grant::Password {
            credentials,
            account,
        } => {
            match login(&tokens, registry, &credentials, &scopes, client).await? {
                Login::Upstream(response) => return Ok(response),
                Login::Local => {}
            }
            if account.is_some_and(|account| account != credentials.username) {
                return Err(AuthError::MalformedCredentials(
                    "account does not match the credentials",
                )
                .into());
            }
            let username = credentials.username;
            blocking(move || tokens.issue(Some(&username), &scopes, offline)).await
        }
        Grant::Refresh(refresh_token) => {
            blocking(move || tokens.refresh(&refresh_token, &scopes)).await
        }
    }
}

/// A token for another service would be useless to the client, and a sign of misconfiguration
/// worth saying so plainly.
fn check_service(tokens: &TokenService, asked: Option<&str>) -> Result<(), RegistryError> {
    match asked {
        Some(asked) if asked != tokens.service() => Err(unauthorized(format!(
            "this token service issues tokens for service {:?}, not {asked:?}",
            tokens.service()
        ))),
        _ => Ok(()),
    }
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
    tokens: &TokenService,
    registry: Option<&Registry>,
    credentials: &Credentials,
    scopes: &[Scope],
    client: Option<IpAddr>,
) -> Result<Login, RegistryError> {
    let failure = match tokens.authenticate(credentials, client).await {
        Ok(()) => return Ok(Login::Local),
        Err(AuthError::InvalidCredentials)
            if passthrough_applies(tokens, &credentials.username, scopes) =>
        {
            match passthrough(tokens, registry, credentials, scopes).await {
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
        tokens.login_failed(&credentials.username, client);
    }
    Err(failure.into())
}

/// Credentials berth does not know may be an upstream's: passed through when every scope asked
/// for is a pull of a repository of the mirror namespace. A local user's wrong password never
/// is, and neither is a push (the mirror takes none: pushing to a repository that is in no
/// project never contacts an upstream). Without scopes it is a login, which only an open
/// mirror checks upstream.
fn passthrough_applies(tokens: &TokenService, username: &str, scopes: &[Scope]) -> bool {
    !tokens.is_local_user(username)
        && (!scopes.is_empty() || tokens.is_open())
        && scopes.iter().all(|s| {
            s.resource_type == ResourceType::Repository
                && !s.actions.is_empty()
                && s.actions.iter().all(|&action| action == Action::Pull)
                && tokens.policy().is_project_repo(&s.name).is_none()
        })
}

/// Exchanges the client's credentials upstream and issues berth's token tied to that grant.
async fn passthrough(
    tokens: &TokenService,
    registry: Option<&Registry>,
    credentials: &Credentials,
    scopes: &[Scope],
) -> Result<TokenResponse, RegistryError> {
    let registry =
        registry.ok_or_else(|| unauthorized("credentials cannot be passed through here"))?;
    if scopes.is_empty() {
        // A login: check the credentials at the default upstream; grant nothing yet.
        registry.verify_default_login(tokens, credentials).await?;
        return Ok(tokens.issue(Some(&credentials.username), &[], false)?);
    }
    // A token carries one upstream grant: every scope must be on the same upstream, checked
    // before any credentials are sent anywhere.
    let targets = scopes
        .iter()
        .map(|asked| registry.resolve(&asked.name, None))
        .collect::<Result<Vec<_>, _>>()?;
    if targets
        .windows(2)
        .any(|pair| pair[0].upstream.name() != pair[1].upstream.name())
    {
        return Err(unauthorized(
            "one token cannot carry credentials for two upstreams",
        ));
    }
    let upstream = targets
        .first()
        .map(|target| target.upstream.name().to_owned())
        .ok_or_else(|| unauthorized("nothing to pass credentials through for"))?;
    let id = tokens.identity_id(&upstream, credentials);
    // Upstream must accept them for every repository. Its tokens (never the credentials) are
    // sealed into berth's token, which lives no longer than the shortest-lived of them.
    let mut grant = UpstreamGrant {
        upstream,
        identity: id,
        tokens: Vec::with_capacity(targets.len()),
    };
    let mut lifetime = Duration::MAX;
    for target in &targets {
        // Two names for one repository (`alpine`, `library/alpine`) need one token.
        if grant.token_for(target.repo.as_str()).is_some() {
            continue;
        }
        let token = registry
            .mirror
            .passthrough_login(target, credentials, &grant.identity)
            .await?;
        lifetime = lifetime.min(token.lifetime);
        grant.tokens.push(GrantToken {
            repo: target.repo.to_string(),
            authorization: token.authorization.to_string(),
            expires: now_secs().saturating_add(token.lifetime.as_secs()),
        });
    }
    let repos: Vec<String> = scopes.iter().map(|s| s.name.clone()).collect();
    Ok(tokens.issue_for_upstream(&credentials.username, &repos, &grant, lifetime)?)
}

impl Registry {
    /// Checks upstream credentials where bare names go (`docker login` against the mirror).
    async fn verify_default_login(
        &self,
        tokens: &TokenService,
        credentials: &Credentials,
    ) -> Result<(), RegistryError> {
        let upstream = self.upstreams.default_upstream().ok_or_else(|| {
            RegistryError::new(
                ErrorCode::NameUnknown,
                "no default upstream (named \"docker.io\") is configured to check credentials at",
            )
        })?;
        let id = tokens.identity_id(upstream.name(), credentials);
        self.mirror.verify_login(upstream, credentials, &id).await
    }
}

/// Signing, and refreshing (which reads the htpasswd file), run on the blocking pool.
async fn blocking<F>(work: F) -> Result<TokenResponse, RegistryError>
where
    F: FnOnce() -> Result<TokenResponse, AuthError> + Send + 'static,
{
    Ok(tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RegistryError::internal("token service failure", e))??)
}

fn unauthorized(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::Unauthorized, message)
}

impl From<AuthError> for RegistryError {
    fn from(err: AuthError) -> Self {
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
                .with_retry_after(Some(Duration::from_secs(1))),
            // Well-formed, but more than berth grants at once: refused, not a credentials
            // problem (a 401 would send clients into a login loop).
            AuthError::TooManyScopes { .. } | AuthError::TokenTooLarge => {
                RegistryError::new(ErrorCode::Denied, err.to_string())
            }
            _ => unauthorized(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::tests::{key, EC_SEC1};
    use crate::auth::policy::tests::{projects, settings};
    use std::io::Write as _;

    fn service(htpasswd: &tempfile::NamedTempFile) -> Arc<TokenService> {
        let mut auth = settings(true);
        auth.htpasswd = Some(htpasswd.path().to_path_buf());
        Arc::new(TokenService::new(&auth, &projects(), key(EC_SEC1)).unwrap())
    }

    fn htpasswd() -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "dave:{}", bcrypt::hash("dev", 4).unwrap()).unwrap();
        file
    }

    fn scopes(texts: &[&str]) -> Vec<Scope> {
        crate::auth::scope::parse_all(texts.iter().copied()).unwrap()
    }

    fn password(username: &str, password: &str, scopes: Vec<Scope>) -> TokenRequest {
        TokenRequest {
            service: None,
            scopes,
            grant: Grant::Password {
                credentials: Credentials::new(username, password),
                account: None,
            },
            offline: false,
            client: None,
        }
    }

    #[test]
    fn only_unknown_users_pulling_from_the_mirror_pass_through() {
        let file = htpasswd();
        let tokens = service(&file);
        let open = TokenService::open(key(EC_SEC1)).unwrap();
        let pull = scopes(&[
            "repository:library/alpine:pull",
            "repository:ghcr.io/a/b:pull",
        ]);
        assert!(passthrough_applies(&tokens, "hub-user", &pull));
        assert!(passthrough_applies(&open, "hub-user", &pull));
        // A local user's wrong password never leaves berth.
        assert!(!passthrough_applies(&tokens, "dave", &pull));
        for refused in [
            // A push, even with a pull: the mirror takes none.
            &["repository:library/alpine:pull,push"][..],
            &[
                "repository:library/alpine:pull",
                "repository:library/b:delete",
            ],
            // A project's repository is berth's own.
            &["repository:secret/app:pull"],
            // No action berth knows, or not a repository.
            &["repository:library/alpine:frobnicate"],
            &["registry:catalog:*"],
            &["repository(plugin):library/alpine:pull"],
        ] {
            assert!(
                !passthrough_applies(&tokens, "hub-user", &scopes(refused)),
                "{refused:?}"
            );
        }
        // No scopes is a login, which only the open mirror checks upstream.
        assert!(!passthrough_applies(&tokens, "hub-user", &[]));
        assert!(passthrough_applies(&open, "hub-user", &[]));
    }

    #[tokio::test]
    async fn local_users_log_in_and_the_account_must_match() {
        let file = htpasswd();
        let tokens = service(&file);
        let asked = scopes(&["repository:secret/app:pull,push"]);
        let response = issue_token(tokens.clone(), None, password("dave", "dev", asked.clone()))
            .await
            .unwrap();
        let claims = tokens.verify_access(&response.token).unwrap();
        assert_eq!(claims.subject(), Some("dave"));
        assert_eq!(claims.access, asked);

        let mut request = password("dave", "dev", asked);
        request.grant = Grant::Password {
            credentials: Credentials::new("dave", "dev"),
            account: Some("eve".into()),
        };
        let err = issue_token(tokens.clone(), None, request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthorized);
        assert!(err.to_string().contains("account"), "{err}");
    }

    #[tokio::test]
    async fn without_a_registry_unknown_credentials_are_just_wrong() {
        let file = htpasswd();
        let tokens = service(&file);
        let pull = scopes(&["repository:library/alpine:pull"]);
        // With local users, a failed passthrough is the same answer as a wrong password...
        let err = issue_token(
            tokens.clone(),
            None,
            password("hub-user", "pw", pull.clone()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthorized);
        assert_eq!(err.message(), AuthError::InvalidCredentials.to_string());
        // ...on an open mirror, the reason is the answer: there are no local users to hide.
        let open = Arc::new(TokenService::open(key(EC_SEC1)).unwrap());
        let err = issue_token(open, None, password("hub-user", "pw", pull))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthorized);
        assert!(err.to_string().contains("passed through"), "{err}");
    }

    #[tokio::test]
    async fn a_token_for_another_service_is_refused_before_any_login() {
        let file = htpasswd();
        let tokens = service(&file);
        let mut request = password("dave", "wrong", vec![]);
        request.service = Some("elsewhere".into());
        let err = issue_token(tokens.clone(), None, request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthorized);
        assert!(err.to_string().contains("elsewhere"), "{err}");
        // The same request for this service is a login (and fails as one).
        let mut request = password("dave", "wrong", vec![]);
        request.service = Some(tokens.service().to_owned());
        let err = issue_token(tokens, None, request).await.unwrap_err();
        assert_eq!(err.message(), AuthError::InvalidCredentials.to_string());
    }

    #[test]
    fn auth_errors_carry_their_spec_codes() {
        let cases = [
            (
                AuthError::InvalidScope {
                    scope: "x".into(),
                    reason: "bad",
                },
                ErrorCode::NameInvalid,
                None,
            ),
            (
                AuthError::Throttled {
                    retry_after: Duration::from_secs(7),
                },
                ErrorCode::TooManyRequests,
                Some(Duration::from_secs(7)),
            ),
            (
                AuthError::Busy,
                ErrorCode::TooManyRequests,
                Some(Duration::from_secs(1)),
            ),
            (
                AuthError::TooManyScopes { limit: 64 },
                ErrorCode::Denied,
                None,
            ),
            (AuthError::InvalidCredentials, ErrorCode::Unauthorized, None),
            (
                AuthError::InvalidToken("expired".into()),
                ErrorCode::Unauthorized,
                None,
            ),
        ];
        for (err, code, retry_after) in cases {
            let mapped = RegistryError::from(err);
            assert_eq!((mapped.code(), mapped.retry_after()), (code, retry_after));
        }
        let fault = RegistryError::from(AuthError::Crypto("no randomness".into()));
        assert_eq!(fault.status(), 500);
    }
}

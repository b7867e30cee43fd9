//! Who may do what, at the HTTP edge: the bearer token is checked against the scope an
//! endpoint needs before any handler runs. A missing or insufficient token gets 401 with the
//! challenge that tells the client where to get a sufficient one.
//!
//! Without `[auth]` berth is an open, read-only mirror: pulls need no token, and everything
//! that writes is refused further in (the mirror namespace is read-only, and private projects
//! cannot exist without `[auth]`).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest};

use crate::auth::scope::{Action, ResourceType};
use crate::auth::seal::UpstreamGrant;
use crate::auth::token::{AccessClaims, TokenService};
use crate::config::ServerSettings;
use crate::http::access_log::AuthenticatedUser;
use crate::http::challenge::{bearer_challenge, external_base};
use crate::oci::{ErrorCode, RepoName};
use crate::registry::RegistryError;

/// The caller, as far as its token says.
pub struct Caller {
    claims: Option<Arc<AccessClaims>>,
    /// The passed-through upstream grant its token carries, opened.
    grant: Option<UpstreamGrant>,
}

impl Caller {
    pub fn subject(&self) -> Option<&str> {
        self.claims.as_ref().and_then(|c| c.subject())
    }

    /// The caller's passed-through upstream grant, if it logged in with upstream credentials
    /// (on this node or on another with the same signing key).
    pub fn upstream_grant(&self) -> Option<&UpstreamGrant> {
        self.grant.as_ref()
    }

    pub fn allows(&self, resource_type: &ResourceType, name: &str, action: Action) -> bool {
        self.claims
            .as_ref()
            .is_some_and(|c| c.allows(resource_type, name, action))
    }
}

pub fn token_service(req: &HttpRequest) -> Option<&TokenService> {
    req.app_data::<web::Data<TokenService>>()
        .map(|d| d.get_ref())
}

fn server_settings(req: &HttpRequest) -> Option<&ServerSettings> {
    req.app_data::<web::Data<ServerSettings>>()
        .map(|d| d.get_ref())
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(
    req: &HttpRequest,
    tokens: &TokenService,
    scope: Option<&str>,
    insufficient: bool,
    message: String,
) -> RegistryError {
    let base = match server_settings(req) {
        Some(server) => external_base(req, server),
        None => String::new(),
    };
    RegistryError::new(ErrorCode::Unauthorized, message).with_challenge(bearer_challenge(
        &base,
        tokens.service(),
        scope,
        insufficient,
    ))
}

/// Checks that the request's token grants `action` on `resource_type:name`. `None` for
/// `action` asks only for a valid token (the `/v2/` base).
pub fn require(
    req: &HttpRequest,
    resource_type: &ResourceType,
    name: &str,
    action: Option<Action>,
) -> Result<Caller, RegistryError> {
    require_also_asking(req, resource_type, name, action, None)
}

/// As [`require`]; a 401's challenge also asks for pull on `mount_source`, the repository a
/// cross-repository mount (`POST …/uploads/?mount=D&from=R`) reads, as Distribution's does:
/// a client fetches one token for the scopes of the challenge, and without pull on the
/// source the mount would become a plain upload.
pub fn require_also_asking(
    req: &HttpRequest,
    resource_type: &ResourceType,
    name: &str,
    action: Option<Action>,
    mount_source: Option<&RepoName>,
) -> Result<Caller, RegistryError> {
    let Some(tokens) = token_service(req) else {
        return Ok(Caller {
            claims: None,
            grant: None,
        });
    };
    let scope = action.map(|a| match mount_source {
        Some(source) if source.as_str() != name => {
            format!(
                "{resource_type}:{name}:{a} {}:{source}:{}",
                ResourceType::Repository,
                Action::Pull
            )
        }
        _ => format!("{resource_type}:{name}:{a}"),
    });
    // An open mirror takes anonymous requests; a token only adds passed-through credentials.
    // The `/v2/` base still challenges, which is how clients learn where to log in.
    if tokens.is_open() && action.is_some() && bearer(req).is_none() {
        return Ok(Caller {
            claims: None,
            grant: None,
        });
    }
    let Some(token) = bearer(req) else {
        return Err(unauthorized(
            req,
            tokens,
            scope.as_deref(),
            false,
            "authentication required: get a token from the realm in WWW-Authenticate".into(),
        ));
    };
    let refused = |e: crate::auth::AuthError| {
        unauthorized(
            req,
            tokens,
            scope.as_deref(),
            false,
            format!("the bearer token was refused: {e}"),
        )
    };
    let claims = tokens.verify_access(token).map_err(refused)?;
    let grant = tokens.upstream_grant(&claims).map_err(refused)?;
    if let Some(subject) = claims.subject() {
        // For the access log and audit records.
        req.extensions_mut()
            .insert(AuthenticatedUser(subject.to_owned()));
    }
    let caller = Caller {
        claims: Some(claims),
        grant,
    };
    if let Some(action) = action {
        if !caller.allows(resource_type, name, action) {
            return Err(unauthorized(
                req,
                tokens,
                scope.as_deref(),
                true,
                format!("the token does not grant {action} on {name}"),
            ));
        }
    }
    Ok(caller)
}

/// Gives a 401 that lacks one the challenge for pulling `name`, so the client can log in
/// (with upstream credentials, on the mirror) and retry.
pub fn challenge_pull(req: &HttpRequest, name: &str, err: RegistryError) -> RegistryError {
    if err.code() != ErrorCode::Unauthorized || err.challenge().is_some() {
        return err;
    }
    let Some(tokens) = token_service(req) else {
        return err;
    };
    let base = match server_settings(req) {
        Some(server) => external_base(req, server),
        None => String::new(),
    };
    let scope = format!("repository:{name}:{}", Action::Pull);
    err.with_challenge(bearer_challenge(
        &base,
        tokens.service(),
        Some(&scope),
        false,
    ))
}

/// What a caller without any token may still do (anonymous pull), for listings that are
/// filtered rather than refused.
pub fn may_pull(req: &HttpRequest, caller: &Caller, repo: &str) -> bool {
    match token_service(req) {
        None => true,
        Some(tokens) => tokens.policy().may(caller.subject(), repo, Action::Pull),
    }
}

//! berth's own token service: Docker token authentication (and its OAuth2 form) so that docker,
//! containerd and podman can log in, and so that pushes to private projects can be authorized.
//!
//! The pieces are separate because they change for different reasons:
//! - [`keys`]: what signs and verifies tokens (PEM loading, libtrust `kid`, algorithm pinning);
//! - [`scope`]: the `type:name:actions` grammar clients ask in;
//! - [`users`]: who can log in (an htpasswd file that may change under us);
//! - [`login`]: checking a password without letting guessing hurt anyone: [`throttle`] paces
//!   failures, [`hashing`] bounds the bcrypt work, [`verified`] spares repeated logins it;
//! - [`policy`]: who may do what to which repository (projects, roles, the read-only mirror);
//! - [`claims`], [`issue`], [`verify`], [`refresh`]: what a token says, signing it, accepting
//!   it, and what ties a refresh token to its user's password;
//! - [`credentials`]: a client's user name and password, parsed once from Basic or a form;
//! - [`seal`]: a passed-through upstream grant, sealed into the token so that every node
//!   with the signing key can act on it;
//! - [`token`]: the service gluing them together, used by `registry::token` and by request
//!   checks. It is handed its key: key files are read (or made) by startup.
//!
//! Nothing here knows actix, the registry or the upstreams; `registry::token` decides what a
//! token request gets and turns an [`AuthError`] into a registry error.

pub mod claims;
pub mod credentials;
pub mod hashing;
pub mod issue;
pub mod keys;
pub mod login;
pub mod policy;
pub mod refresh;
pub mod scope;
pub mod seal;
pub mod throttle;
pub mod token;
pub mod users;
pub mod verified;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

pub use self::claims::{AccessClaims, TokenResponse};
pub use self::credentials::Credentials;
pub use self::keys::{SigningKey, Verifier};
pub use self::policy::Policy;
pub use self::scope::Scope;
pub use self::token::TokenService;
pub use self::users::Htpasswd;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A key or certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key or certificate file was read but is not something berth can sign with.
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
    /// Unknown user, wrong password, or a user who is no longer in the htpasswd file.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// An `Authorization` header (or form) that is not well-formed Basic credentials.
    #[error("malformed credentials: {0}")]
    MalformedCredentials(&'static str),
    /// A token that must not be accepted; the reason is for logs and the client alike (it
    /// reveals nothing the client does not already have).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A `scope` parameter that does not follow `type:name:actions`.
    #[error("invalid scope {scope:?}: {reason}")]
    InvalidScope { scope: String, reason: &'static str },
    /// Too many failed logins for this user name or from this address lately: refused
    /// without checking, until `retry_after` has passed.
    #[error("too many failed logins; try again later")]
    Throttled { retry_after: Duration },
    /// Every password-hashing slot is taken and the queue is full.
    #[error("too many logins at once; try again shortly")]
    Busy,
    /// A token request asking for more resources than one token may carry.
    #[error("a token may carry at most {limit} scopes; ask for fewer at a time")]
    TooManyScopes { limit: usize },
    /// A token that would be longer than berth accepts (passed-through credentials for many
    /// repositories carry an upstream token each).
    #[error("the token would be too large; ask for fewer repositories at a time")]
    TokenTooLarge,
    /// Signing failed or the system's random source failed: a server fault.
    #[error("token signing failed: {0}")]
    Crypto(String),
}

impl AuthError {
    /// Whether the fault is the server's (answered 500 and logged) rather than the client's.
    pub fn is_server_fault(&self) -> bool {
        matches!(
            self,
            AuthError::Io { .. } | AuthError::Key { .. } | AuthError::Crypto(_)
        )
    }
}

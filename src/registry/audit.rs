//! Audit records: who pushed, deleted or logged in, from where, with what outcome. Each is one
//! event with target `berth::audit` (so a log shipper can route them apart from the rest), and
//! each moves its counter in `/metrics`.
//!
//! The HTTP layer names the actor (the authenticated subject and the client address, through
//! trusted proxies); the records are written here, once the domain has decided.

use std::net::IpAddr;

use crate::metrics::requests::{DeleteKind, LoginResult, TokenGrant};
use crate::metrics::Metrics;
use crate::oci::Digest;

/// Who did it.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The authenticated subject; `None` for an anonymous caller.
    pub user: Option<&'a str>,
    pub client: Option<IpAddr>,
}

impl Actor<'_> {
    fn user(&self) -> &str {
        self.user.unwrap_or("-")
    }

    fn client(&self) -> String {
        self.client
            .map_or_else(|| "-".to_owned(), |a| a.to_string())
    }
}

/// A manifest was pushed: `reference` (a tag or a digest) of `repository` now names `digest`.
pub fn push(
    metrics: Option<&Metrics>,
    actor: Actor<'_>,
    repository: &str,
    reference: &str,
    digest: &Digest,
) {
    if let Some(metrics) = metrics {
        metrics.requests.pushed();
    }
    tracing::info!(
        target: "berth::audit",
        action = "push",
        repository,
        reference,
        %digest,
        user = actor.user(),
        client = %actor.client(),
        "manifest pushed"
    );
}

/// A manifest, tag or blob was deleted.
pub fn delete(
    metrics: Option<&Metrics>,
    actor: Actor<'_>,
    kind: DeleteKind,
    repository: &str,
    reference: &str,
) {
    if let Some(metrics) = metrics {
        metrics.requests.deleted(kind);
    }
    let kind = match kind {
        DeleteKind::Manifest => "manifest",
        DeleteKind::Tag => "tag",
        DeleteKind::Blob => "blob",
    };
    tracing::info!(
        target: "berth::audit",
        action = "delete",
        kind,
        repository,
        reference,
        user = actor.user(),
        client = %actor.client(),
        "{kind} deleted"
    );
}

/// A token request was answered. Those with credentials (a password, a refresh token) are
/// logins, recorded with their outcome and, on failure, the reason given to the client.
pub fn token(
    metrics: Option<&Metrics>,
    actor: Actor<'_>,
    grant: TokenGrant,
    outcome: Result<(), &str>,
) {
    if let Some(metrics) = metrics {
        metrics.requests.token_request(grant);
    }
    let grant = match grant {
        TokenGrant::Anonymous => return,
        TokenGrant::Password => "password",
        TokenGrant::Refresh => "refresh_token",
    };
    let result = match outcome {
        Ok(()) => LoginResult::Success,
        Err(_) => LoginResult::Failure,
    };
    if let Some(metrics) = metrics {
        metrics.requests.login(result);
    }
    match outcome {
        Ok(()) => tracing::info!(
            target: "berth::audit",
            action = "login",
            result = "success",
            grant,
            user = actor.user(),
            client = %actor.client(),
            "login succeeded"
        ),
        Err(reason) => tracing::warn!(
            target: "berth::audit",
            action = "login",
            result = "failure",
            reason,
            grant,
            user = actor.user(),
            client = %actor.client(),
            "login failed"
        ),
    }
}

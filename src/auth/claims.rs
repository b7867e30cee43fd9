//! What berth's tokens say: the access token's claims as the Docker token spec defines them,
//! and the token endpoint's answer.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::scope::{Action, ResourceType, Scope};

/// The claims of an access token, as the Docker token spec defines them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The authenticated user; empty for anonymous tokens (as Distribution's token servers do).
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    /// What was granted. Required, so a token without it (a refresh token) does not parse.
    pub access: Vec<Scope>,
    /// For a client whose own upstream credentials were passed through: its upstream grant,
    /// sealed (see [`super::seal`]), so that any node with the signing key can act on it.
    /// Never the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upg: Option<String>,
}

impl AccessClaims {
    /// The user the token was issued to; `None` for an anonymous token.
    pub fn subject(&self) -> Option<&str> {
        Some(self.sub.as_str()).filter(|s| !s.is_empty())
    }

    /// The bytes the claims own on the heap, for the verified-token cache's budget.
    pub fn heap_bytes(&self) -> usize {
        let scopes: usize = self
            .access
            .iter()
            .map(|s| {
                64 + s.resource_type.heap_bytes()
                    + s.name.len()
                    + s.actions.len() * std::mem::size_of::<Action>()
            })
            .sum();
        std::mem::size_of::<Self>()
            + self.iss.len()
            + self.sub.len()
            + self.aud.len()
            + self.jti.len()
            + self.upg.as_ref().map_or(0, String::len)
            + scopes
    }

    /// Whether the token grants `action` on the resource (`*` grants every action).
    pub fn allows(&self, resource_type: &ResourceType, name: &str, action: Action) -> bool {
        self.access.iter().any(|granted| {
            granted.resource_type == *resource_type
                && granted.name == name
                && granted.has_action(action)
        })
    }
}

/// The token endpoint's JSON answer. `token` and `access_token` are the same: the first is
/// the Docker spec's, the second OAuth2's, and clients read either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    /// RFC 3339.
    pub issued_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// Seconds since the Unix epoch, as JWTs count time.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

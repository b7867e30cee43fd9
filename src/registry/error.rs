//! The one error type that leaves the registry: a spec error code (`oci::ErrorCode`), a message
//! for humans, and optional detail, plus what the HTTP layer needs to answer well
//! (`Retry-After`, the source to log for server faults). The HTTP layer serializes
//! `{"errors":[{code,message,detail}]}`.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::oci::ErrorCode;
use crate::oci::ParseError;
use crate::storage::shared::SharedError;
use crate::storage::StorageError;

/// An error answered to a registry client.
#[derive(Debug)]
pub struct RegistryError {
    code: ErrorCode,
    message: String,
    detail: Option<serde_json::Value>,
    retry_after: Option<Duration>,
    /// `WWW-Authenticate` for a 401: how to get a sufficient token.
    challenge: Option<String>,
    /// The underlying fault, logged for 5xx answers and never sent to the client.
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
            challenge: None,
            source: None,
        }
    }

    /// A server-side fault: the client sees only `message`, the log sees `source`.
    pub fn internal(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        RegistryError::new(ErrorCode::Unknown, message).with_source(source)
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_challenge(mut self, challenge: String) -> Self {
        self.challenge = Some(challenge);
        self
    }

    pub fn challenge(&self) -> Option<&str> {
        self.challenge.as_deref()
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    pub fn is_server_fault(&self) -> bool {
        self.status() >= 500
    }

    /// The spec's JSON error body.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            errors: [ErrorEntry {
                code: self.code,
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        }
    }

    /// The message and every underlying cause, for logs.
    pub fn chain(&self) -> String {
        let mut text = format!("{}: {}", self.code.as_str(), self.message);
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(err) = next {
            text.push_str(": ");
            text.push_str(&err.to_string());
            next = err.source();
        }
        text
    }
}

/// Coalesced requests share one answer; each waiter gets a copy (the cause as text).
impl Clone for RegistryError {
    fn clone(&self) -> Self {
        RegistryError {
            code: self.code,
            message: self.message.clone(),
            detail: self.detail.clone(),
            retry_after: self.retry_after,
            challenge: self.challenge.clone(),
            source: self.source.as_ref().map(|s| s.to_string().into()),
        }
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// A name, tag, digest or manifest the client sent does not follow the spec.
impl From<ParseError> for RegistryError {
    fn from(err: ParseError) -> Self {
        RegistryError::new(err.code(), err.to_string())
    }
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    errors: [ErrorEntry<'a>; 1],
}

#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

/// A storage fault: the client learns only that storage failed; the cause is logged.
/// The shared store out of reach is `UNAVAILABLE` (503): the client may retry, and nothing
/// is lost.
pub fn storage_error(e: impl Into<StorageError>) -> RegistryError {
    match e.into() {
        StorageError::Shared(SharedError::Unavailable(cause)) => {
            tracing::warn!(error = %cause, "shared store unavailable");
            RegistryError::new(
                ErrorCode::Unavailable,
                "the shared store cannot be reached; try again shortly",
            )
        }
        other => RegistryError::internal("cache storage failed", other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_follows_the_spec_shape() {
        let err = RegistryError::new(ErrorCode::ManifestUnknown, "manifest unknown")
            .with_detail(serde_json::json!({"tag": "x"}));
        let json = serde_json::to_value(err.body()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"tag":"x"}}]})
        );
        assert_eq!(err.status(), 404);
    }

    #[test]
    fn internal_errors_keep_the_source_out_of_the_body() {
        let io = std::io::Error::other("disk on fire");
        let err = RegistryError::internal("storage failure", io);
        let body = serde_json::to_string(&err.body()).unwrap();
        assert!(!body.contains("disk on fire"));
        assert!(err.chain().contains("disk on fire"));
        assert_eq!(err.status(), 500);
    }
}

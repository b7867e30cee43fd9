//! The spec's error codes, and the error of parsing a name, tag, digest, reference or manifest.
//!
//! Codes map 1:1 to the OCI distribution spec's error table (and Distribution's additions), each
//! with its HTTP status; `registry::RegistryError` carries one to the client.

use serde::Serialize;

use super::manifest::InvalidManifest;
use super::media::MAX_MANIFEST_BYTES;
use super::name::MAX_NAME_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    PaginationNumberInvalid,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    #[serde(rename = "TOOMANYREQUESTS")]
    TooManyRequests,
    RangeInvalid,
    Unavailable,
    Unknown,
}

impl ErrorCode {
    /// The HTTP status the spec (or Distribution, for codes the spec leaves open) pairs with it.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => 404,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::PaginationNumberInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::TagInvalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::Unsupported => 405,
            ErrorCode::RangeInvalid => 416,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Unknown => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

/// A name, tag, digest, reference or manifest that does not follow the spec. The message is
/// what the client is told; [`ParseError::code`] is the spec code it is told with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("repository name is empty")]
    EmptyName,
    #[error("repository name is longer than {} characters", MAX_NAME_LEN)]
    NameTooLong,
    /// The first offending component, truncated for the message.
    #[error(
        "invalid repository name component {0:?}: components are lowercase letters and digits, \
         joined by '.', '_', '__' or '-'"
    )]
    NameComponent(String),
    /// A name's first component looks like a registry host but is not a valid one.
    #[error(
        "invalid registry host {0:?}: expected host[:port], labels of letters, digits and '-'"
    )]
    Host(String),
    /// The tag, truncated for the message.
    #[error(
        "invalid tag {0:?}: tags are up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
    )]
    Tag(String),
    /// The digest (truncated for the message) and what is wrong with it.
    #[error("invalid digest {input:?}: {why}")]
    Digest { input: String, why: &'static str },
    #[error("manifest is {0} bytes; the limit is {MAX_MANIFEST_BYTES}")]
    ManifestTooLarge(usize),
    #[error(transparent)]
    Manifest(#[from] InvalidManifest),
}

impl ParseError {
    /// The spec code a client is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ParseError::EmptyName
            | ParseError::NameTooLong
            | ParseError::NameComponent(_)
            | ParseError::Host(_) => ErrorCode::NameInvalid,
            ParseError::Tag(_) => ErrorCode::TagInvalid,
            ParseError::Digest { .. } => ErrorCode::DigestInvalid,
            ParseError::ManifestTooLarge(_) => ErrorCode::SizeInvalid,
            ParseError::Manifest(_) => ErrorCode::ManifestInvalid,
        }
    }
}

/// Keeps hostile input from bloating error messages and logs.
pub(super) fn truncate_for_message(s: &str) -> String {
    const LIMIT: usize = 80;
    if s.len() <= LIMIT {
        return s.to_owned();
    }
    let mut end = LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in [
            ErrorCode::TooManyRequests,
            ErrorCode::NameInvalid,
            ErrorCode::Unknown,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
    }

    #[test]
    fn long_input_is_truncated_in_messages() {
        let err = ParseError::Tag(truncate_for_message(&"é".repeat(100)));
        let message = err.to_string();
        assert!(
            message.contains(&format!("{}…", "é".repeat(40))),
            "{message}"
        );
        assert_eq!(err.code(), ErrorCode::TagInvalid);
    }
}

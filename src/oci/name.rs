//! Typed names from the OCI distribution spec: repository names, tags and references.
//!
//! Each type can only be built through `FromStr`, which follows the spec grammar, so every value
//! that reaches the cache or the disk has already been validated.

use std::fmt;
use std::str::FromStr;

use super::digest::Digest;
use super::error::{truncate_for_message, ParseError};

/// Longest repository name the spec lets a registry insist on accepting.
pub const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A repository name: `component(/component)*`, each `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Components of the name, left to right.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// `prefix/self`, validated again (the joined name may be too long).
    pub fn prefixed(&self, prefix: &str) -> Result<RepoName, ParseError> {
        format!("{prefix}/{}", self.0).parse()
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or any number of `-`.
fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !is_lower_alnum(first) || !is_lower_alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_lower_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__`, or `-+`; it must be followed by an alphanumeric.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !bytes.get(i).is_some_and(|&b| is_lower_alnum(b)) {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseError::EmptyName);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(ParseError::NameTooLong);
        }
        if let Some(bad) = s.split('/').find(|c| !is_valid_component(c)) {
            return Err(ParseError::NameComponent(truncate_for_message(bad)));
        }
        Ok(RepoName(s.to_owned()))
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Tag {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_TAG_LEN
            && word(&bytes[0])
            && bytes[1..]
                .iter()
                .all(|b| word(b) || *b == b'.' || *b == b'-');
        if valid {
            Ok(Tag(s.to_owned()))
        } else {
            Err(ParseError::Tag(truncate_for_message(s)))
        }
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

impl FromStr for Reference {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse().map(Reference::Digest)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::ErrorCode;

    #[test]
    fn repo_names_follow_the_grammar() {
        for ok in [
            "a",
            "library/nginx",
            "a/b/c",
            "foo.bar/baz_qux",
            "a__b",
            "a---b",
            "0",
            "my-org/my.app_v2",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "A",
            "Library/nginx",
            "a//b",
            "/a",
            "a/",
            "a/../b",
            "..",
            "a/./b",
            "-a",
            "a-",
            "a___b",
            "a._b",
            "a b",
            "ä",
            "a:b",
            "a%2fb",
        ] {
            let err = bad.parse::<RepoName>().unwrap_err();
            assert_eq!(err.code(), ErrorCode::NameInvalid, "{bad}");
        }
    }

    #[test]
    fn repo_name_length_limit() {
        let ok = "a".repeat(MAX_NAME_LEN);
        assert!(ok.parse::<RepoName>().is_ok());
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            long.parse::<RepoName>().unwrap_err().code(),
            ErrorCode::NameInvalid
        );
    }

    #[test]
    fn references_and_tags() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        assert!(matches!("v1.2.3-rc_1".parse(), Ok(Reference::Tag(_))));
        assert!(matches!("_x".parse(), Ok(Reference::Tag(_))));
        assert!(".x".parse::<Reference>().is_err());
        assert!("-x".parse::<Reference>().is_err());
        assert!("a".repeat(129).parse::<Reference>().is_err());
        assert!("a".repeat(128).parse::<Reference>().is_ok());
        let err = "sha256:xyz".parse::<Reference>().unwrap_err();
        assert_eq!(err.code(), ErrorCode::DigestInvalid);
    }

    #[test]
    fn messages_stay_as_clients_know_them() {
        let message = |s: &str| s.parse::<RepoName>().unwrap_err().to_string();
        assert_eq!(message(""), "repository name is empty");
        assert_eq!(
            message(&"a".repeat(MAX_NAME_LEN + 1)),
            "repository name is longer than 255 characters"
        );
        assert_eq!(
            message("a/B"),
            "invalid repository name component \"B\": components are lowercase letters and \
             digits, joined by '.', '_', '__' or '-'"
        );
        assert_eq!(
            ".x".parse::<Tag>().unwrap_err().to_string(),
            "invalid tag \".x\": tags are up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        );
        assert_eq!(
            "sha256:xyz".parse::<Reference>().unwrap_err().to_string(),
            "invalid digest \"sha256:xyz\": sha256 needs 64 lowercase hex characters"
        );
        assert_eq!(
            "md5".parse::<Digest>().unwrap_err().to_string(),
            "invalid digest \"md5\": expected <algorithm>:<hex>"
        );
    }
}

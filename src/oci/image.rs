//! Image references as people write them: `[host/]repository[:tag|@digest]` (`alpine:3.20`,
//! `ghcr.io/org/tool@sha256:…`, `localhost:5000/team/app`).
//!
//! The first component is a registry host when it looks like one (contains `.` or `:`, or is
//! `localhost`) and more components follow; that is the rule docker and containerd use, and the
//! one berth's namespace resolution applies to client names. Which configured upstream a host
//! selects is the registry's business, not this parser's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{truncate_for_message, ParseError};
use super::name::{Reference, RepoName, Tag};

/// A parsed image reference; it prints back exactly as written (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    text: String,
    host: Option<String>,
    repository: RepoName,
    reference: Reference,
}

impl ImageReference {
    /// As written, trimmed: what identifies it in configuration and records.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The registry host the name starts with, if it starts with one.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The repository, without the host.
    pub fn repository(&self) -> &RepoName {
        &self.repository
    }

    /// The name as a client writes it: `[host/]repository`.
    pub fn name(&self) -> String {
        match &self.host {
            Some(host) => format!("{host}/{}", self.repository),
            None => self.repository.to_string(),
        }
    }

    /// The tag (`latest` when none is written) or the digest.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }
}

/// Whether a name's first component names a registry host rather than a repository.
pub fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// `host[:port]`: dot-separated labels of letters, digits and inner hyphens.
pub fn is_valid_host(component: &str) -> bool {
    let (host, port) = match component.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (component, None),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    host.split('.').all(label_ok)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl FromStr for ImageReference {
    type Err = ParseError;

    /// `name`, `name:tag` or `name@sha256:…`; a name's first component may be a registry host
    /// with a port, so the tag is what follows a `:` after the last `/`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (name, reference) = match text.split_once('@') {
            Some((name, digest)) => {
                // `name:tag@digest` names the digest; the tag is only a label.
                let name = strip_tag(name).0;
                (name, Reference::Digest(digest.parse()?))
            }
            None => match strip_tag(text) {
                (name, Some(tag)) => (name, Reference::Tag(tag.parse()?)),
                (name, None) => (name, Reference::Tag(Tag::from_str("latest")?)),
            },
        };
        let (host, repository) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => {
                if !is_valid_host(first) {
                    return Err(ParseError::Host(truncate_for_message(first)));
                }
                (Some(first.to_owned()), rest)
            }
            _ => (None, name),
        };
        Ok(ImageReference {
            text: text.to_owned(),
            host,
            repository: repository.parse()?,
            reference,
        })
    }
}

/// `name[:tag]` split at a `:` in the last component (an earlier one belongs to a host's port).
fn strip_tag(name: &str) -> (&str, Option<&str>) {
    let last_component = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_component..].rfind(':') {
        Some(i) => (
            &name[..last_component + i],
            Some(&name[last_component + i + 1..]),
        ),
        None => (name, None),
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ImageReference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ImageReference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("image {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::ErrorCode;

    fn parts(text: &str) -> (Option<String>, String, String) {
        let image: ImageReference = text.parse().unwrap();
        assert_eq!(image.as_str(), text.trim());
        (
            image.host().map(str::to_owned),
            image.repository().to_string(),
            image.reference().to_string(),
        )
    }

    #[test]
    fn references_are_read_as_clients_write_them() {
        let d = format!("sha256:{}", "a".repeat(64));
        let host = |h: &str| Some(h.to_owned());
        let owned = |h: Option<String>, r: &str, t: &str| (h, r.to_owned(), t.to_owned());
        assert_eq!(parts("alpine"), owned(None, "alpine", "latest"));
        assert_eq!(parts(" alpine:3.20 "), owned(None, "alpine", "3.20"));
        assert_eq!(
            parts("localhost:5000/team/app"),
            owned(host("localhost:5000"), "team/app", "latest")
        );
        assert_eq!(
            parts("localhost:5000/team/app:v1"),
            owned(host("localhost:5000"), "team/app", "v1")
        );
        assert_eq!(
            parts("localhost/app"),
            owned(host("localhost"), "app", "latest")
        );
        assert_eq!(
            parts(&format!("ghcr.io/o/t@{d}")),
            owned(host("ghcr.io"), "o/t", &d)
        );
        assert_eq!(
            parts(&format!("ghcr.io/o/t:1@{d}")),
            owned(host("ghcr.io"), "o/t", &d)
        );
        // A first component that is no host is part of the repository.
        assert_eq!(parts("team/app:1"), owned(None, "team/app", "1"));
        let image: ImageReference = "ghcr.io/o/t:1".parse().unwrap();
        assert_eq!(image.name(), "ghcr.io/o/t");
        assert_eq!(image.to_string(), "ghcr.io/o/t:1");
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        for (bad, code) in [
            ("", ErrorCode::NameInvalid),
            (":1", ErrorCode::NameInvalid),
            ("Alpine", ErrorCode::NameInvalid),
            ("ghcr.io/", ErrorCode::NameInvalid),
            ("bad_host.io:x/app", ErrorCode::NameInvalid),
            ("alpine:", ErrorCode::TagInvalid),
            ("alpine:bad tag", ErrorCode::TagInvalid),
            ("alpine@sha256:zz", ErrorCode::DigestInvalid),
        ] {
            let err = bad.parse::<ImageReference>().unwrap_err();
            assert_eq!(err.code(), code, "{bad:?}: {err}");
        }
    }

    #[test]
    fn hosts() {
        for host in [
            "docker.io",
            "localhost",
            "localhost:5000",
            "r-1.example:443",
        ] {
            assert!(looks_like_host(host) && is_valid_host(host), "{host}");
        }
        assert!(!looks_like_host("library"));
        for bad in ["-a.io", "a..io", "a.io:", "a.io:123456", "a_b.io"] {
            assert!(!is_valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn serde_round_trip_keeps_the_text() {
        let image: ImageReference =
            serde_json::from_value(serde_json::json!("ghcr.io/o/t:1")).unwrap();
        assert_eq!(
            serde_json::to_value(&image).unwrap(),
            serde_json::json!("ghcr.io/o/t:1")
        );
        let err = serde_json::from_value::<ImageReference>(serde_json::json!("alpine:bad tag"))
            .unwrap_err();
        assert!(
            err.to_string().contains("image \"alpine:bad tag\""),
            "{err}"
        );
    }
}

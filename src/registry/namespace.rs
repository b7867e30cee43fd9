//! Which registry a client's repository name belongs to.
//!
//! Resolution order: containerd's `?ns=HOST` → a first path component that looks like a host
//! (contains `.` or `:`, or is `localhost`) → the default upstream (`docker.io`, where
//! single-component names get `library/`). Only configured upstreams are ever contacted: an
//! unknown host is an error, never an open proxy.

use std::sync::Arc;

use super::error::RegistryError;
use crate::oci::image::{is_valid_host, looks_like_host};
use crate::oci::ErrorCode;
use crate::oci::RepoName;
use crate::upstream::{Identity, Upstream, Upstreams};

/// A repository on a particular upstream.
#[derive(Clone)]
pub struct MirrorRepo {
    pub upstream: Arc<Upstream>,
    /// The name as the upstream knows it (`library/nginx`).
    pub repo: RepoName,
    /// The name as the client wrote it (`nginx`, `ghcr.io/org/tool`), for links back.
    pub client_name: String,
    /// Who berth speaks as upstream for this request: the client's passed-through grant, or
    /// the upstream's default (site credentials, else anonymous).
    pub identity: Identity,
}

pub fn resolve(
    upstreams: &Upstreams,
    client_name: &str,
    ns: Option<&str>,
) -> Result<MirrorRepo, RegistryError> {
    let not_configured = |host: &str| {
        RegistryError::new(
            ErrorCode::NameUnknown,
            format!("upstream registry {host:?} is not configured on this mirror"),
        )
    };
    let (upstream, path) = match (ns, client_name.split_once('/')) {
        (Some(ns), _) => (
            upstreams.by_name(ns).ok_or_else(|| not_configured(ns))?,
            client_name,
        ),
        (None, Some((first, rest))) if looks_like_host(first) => {
            if !is_valid_host(first) {
                return Err(RegistryError::new(
                    ErrorCode::NameInvalid,
                    format!("{first:?} is neither a repository name component nor a registry host"),
                ));
            }
            (
                upstreams.by_name(first).ok_or_else(|| not_configured(first))?,
                rest,
            )
        }
        (None, _) => (
            upstreams.default_upstream().ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::NameUnknown,
                    "no default upstream (named \"docker.io\") is configured; prefix the name with a configured upstream",
                )
            })?,
            client_name,
        ),
    };
    let mut repo: RepoName = path.parse()?;
    if upstream.uses_library_prefix() && !repo.as_str().contains('/') {
        repo = repo.prefixed("library")?;
    }
    Ok(MirrorRepo {
        identity: upstream.default_identity(),
        upstream: Arc::clone(upstream),
        repo,
        client_name: client_name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamSettings;
    use std::time::Duration;

    fn upstreams() -> Upstreams {
        let make = |name: &str| UpstreamSettings {
            name: name.into(),
            url: format!("https://{name}").parse().unwrap(),
            tag_ttl: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            max_stale: Duration::from_secs(1),
            offline: false,
            not_found_ttl: Duration::from_secs(1),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_certificate: None,
            client_key: None,
            insecure: false,
            max_concurrent_requests: 0,
            tls: Default::default(),
        };
        Upstreams::new(
            &[make("docker.io"), make("ghcr.io"), make("localhost:5001")],
            false,
            &crate::clock::Clock::system(),
        )
        .unwrap()
    }

    fn resolved(name: &str, ns: Option<&str>) -> (String, String) {
        let r = resolve(&upstreams(), name, ns).unwrap();
        (r.upstream.name().to_owned(), r.repo.to_string())
    }

    #[test]
    fn resolution_order() {
        assert_eq!(
            resolved("nginx", None),
            ("docker.io".into(), "library/nginx".into())
        );
        assert_eq!(
            resolved("bitnami/redis", None),
            ("docker.io".into(), "bitnami/redis".into())
        );
        assert_eq!(
            resolved("docker.io/nginx", None),
            ("docker.io".into(), "library/nginx".into())
        );
        assert_eq!(
            resolved("ghcr.io/org/tool", None),
            ("ghcr.io".into(), "org/tool".into())
        );
        assert_eq!(
            resolved("org/tool", Some("ghcr.io")),
            ("ghcr.io".into(), "org/tool".into())
        );
        assert_eq!(
            resolved("library/nginx", Some("docker.io")),
            ("docker.io".into(), "library/nginx".into())
        );
        assert_eq!(
            resolved("localhost:5001/x", None),
            ("localhost:5001".into(), "x".into())
        );
    }

    #[test]
    fn unknown_hosts_and_bad_names() {
        let err =
            |name: &str, ns: Option<&str>| resolve(&upstreams(), name, ns).err().unwrap().code();
        assert_eq!(err("quay.io/org/x", None), ErrorCode::NameUnknown);
        assert_eq!(err("x", Some("evil.example")), ErrorCode::NameUnknown);
        assert_eq!(err("Nginx", None), ErrorCode::NameInvalid);
        assert_eq!(err("ghcr.io/", None), ErrorCode::NameInvalid);
        assert_eq!(err("a/../b", None), ErrorCode::NameInvalid);
        assert_eq!(err("./x", None), ErrorCode::NameInvalid);
        assert_eq!(err("../x", None), ErrorCode::NameInvalid);
        assert_eq!(err("a.:1/x", None), ErrorCode::NameInvalid);
        assert_eq!(err("host:port/x", None), ErrorCode::NameInvalid);
        // `library/` plus a maximal name is too long.
        assert_eq!(err(&"a".repeat(250), None), ErrorCode::NameInvalid);
    }
}

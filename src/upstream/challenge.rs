//! `WWW-Authenticate` challenges (RFC 7235), as registries send them:
//! `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="…"`.
//!
//! One header may carry several challenges (`Basic realm="x", Bearer realm="y"`), and commas
//! separate both challenges and parameters; `http-auth`'s parser untangles that (and quoted
//! strings with escapes). This module only adds what berth needs on top: the scheme as an enum
//! and parameters looked up by lowercased name.

use std::collections::HashMap;

use http_auth::parser::ChallengeParser;

/// One authentication challenge: a scheme and its parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: Scheme,
    pub params: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Basic,
    Other(String),
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses every challenge in a header value. A syntax error ends the parse; the challenges
/// complete before it are kept, a half-read one is not.
pub fn parse(header: &str) -> Vec<Challenge> {
    ChallengeParser::new(header)
        .map_while(Result::ok)
        .map(|challenge| Challenge {
            scheme: match challenge.scheme.to_ascii_lowercase().as_str() {
                "bearer" => Scheme::Bearer,
                "basic" => Scheme::Basic,
                other => Scheme::Other(other.to_owned()),
            },
            params: challenge
                .params
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_unescaped()))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, Scheme::Bearer);
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn several_challenges_and_odd_spacing() {
        let c = parse(
            r#"Basic realm="Registry Realm" , Bearer Realm = "https://x/token", error="insufficient_scope",scope="a:b:pull,push""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, Scheme::Basic);
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[1].scheme, Scheme::Bearer);
        assert_eq!(c[1].param("realm"), Some("https://x/token"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert_eq!(c[1].param("scope"), Some("a:b:pull,push"));
    }

    #[test]
    fn escapes_tokens_and_garbage() {
        let c = parse(r#"bearer realm="a\"b",service=svc"#);
        assert_eq!(c[0].param("realm"), Some("a\"b"));
        assert_eq!(c[0].param("service"), Some("svc"));
        assert!(parse("").is_empty());
        assert!(parse("=broken").is_empty());
        // An unterminated quote keeps the challenges complete before it, not the half-read one.
        let c = parse(r#"Basic realm="r", Bearer service="x",realm="unterminated"#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, Scheme::Basic);
        assert_eq!(c[0].param("realm"), Some("r"));
        assert!(parse(r#"Bearer service="x",realm="unterminated"#).is_empty());
        assert_eq!(
            parse("Negotiate")[0].scheme,
            Scheme::Other("negotiate".into())
        );
    }

    #[test]
    fn challenges_from_real_registries() {
        // ghcr.io, anonymous.
        let c = parse(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("realm"), Some("https://ghcr.io/token"));
        assert_eq!(c[0].param("service"), Some("ghcr.io"));
        assert_eq!(c[0].param("scope"), Some("repository:user/image:pull"));
        // quay.io names several actions (a quoted comma) and no scope on /v2/.
        let c = parse(
            r#"Bearer realm="https://quay.io/v2/auth",service="quay.io",scope="repository:org/app:pull,push""#,
        );
        assert_eq!(c[0].param("realm"), Some("https://quay.io/v2/auth"));
        assert_eq!(c[0].param("scope"), Some("repository:org/app:pull,push"));
        assert_eq!(
            parse(r#"Bearer realm="https://quay.io/v2/auth",service="quay.io""#)[0].param("scope"),
            None
        );
        // Docker Hub on a push it refuses: two scopes and an error.
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push repository:library/c:pull",error="insufficient_scope""#,
        );
        assert_eq!(
            c[0].param("scope"),
            Some("repository:a/b:pull,push repository:library/c:pull")
        );
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        // Distribution with htpasswd auth.
        let c = parse(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, Scheme::Basic);
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        // Harbor-style: a quoted comma in the realm's query, then a second challenge.
        let c = parse(
            r#"Bearer realm="https://h.example/service/token?a=1,b=2",service="harbor-registry", Basic realm="harbor""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0].param("realm"),
            Some("https://h.example/service/token?a=1,b=2")
        );
        assert_eq!(c[0].param("service"), Some("harbor-registry"));
        assert_eq!(c[1].scheme, Scheme::Basic);
    }
}

//! Parser for `WWW-Authenticate` challenges (RFC 7235), as registries send them:
//! `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="…"`.
//!
//! One header may carry several challenges (`Basic realm="x", Bearer realm="y"`); parameters may
//! be quoted strings with backslash escapes or bare tokens.

use std::collections::HashMap;

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

/// Parses every challenge in a header value. Malformed trailing input ends the parse; what was
/// understood before it is kept.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut lexer = Lexer {
        rest: header.as_bytes(),
    };
    let mut challenges: Vec<Challenge> = Vec::new();
    loop {
        lexer.skip_separators();
        let Some(word) = lexer.token() else { break };
        lexer.skip_spaces();
        if lexer.peek() == Some(b'=') {
            // `name=value`: a parameter of the current challenge.
            lexer.bump();
            lexer.skip_spaces();
            let Some(value) = lexer.value() else { break };
            match challenges.last_mut() {
                Some(current) => {
                    current.params.insert(word.to_ascii_lowercase(), value);
                }
                None => break,
            }
        } else {
            let scheme = match word.to_ascii_lowercase().as_str() {
                "bearer" => Scheme::Bearer,
                "basic" => Scheme::Basic,
                other => Scheme::Other(other.to_owned()),
            };
            challenges.push(Challenge {
                scheme,
                params: HashMap::new(),
            });
        }
    }
    challenges
}

struct Lexer<'a> {
    rest: &'a [u8],
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn bump(&mut self) {
        self.rest = &self.rest[1..];
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.bump();
        }
    }

    /// An RFC 7230 token.
    fn token(&mut self) -> Option<String> {
        let len = self
            .rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(b))
            .count();
        if len == 0 {
            return None;
        }
        let word = String::from_utf8_lossy(&self.rest[..len]).into_owned();
        self.rest = &self.rest[len..];
        Some(word)
    }

    /// A quoted string (with `\` escapes) or a token.
    fn value(&mut self) -> Option<String> {
        if self.peek() != Some(b'"') {
            return self.token();
        }
        self.bump();
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.bump();
            match b {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    out.push(self.peek()?);
                    self.bump();
                }
                _ => out.push(b),
            }
        }
    }
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
        // An unterminated quote keeps what came before it.
        let c = parse(r#"Bearer service="x",realm="unterminated"#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("service"), Some("x"));
        assert_eq!(c[0].param("realm"), None);
        assert_eq!(
            parse("Negotiate")[0].scheme,
            Scheme::Other("negotiate".into())
        );
    }
}

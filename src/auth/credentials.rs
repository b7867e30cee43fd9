//! A client's user name and password, as a token request presents them: an
//! `Authorization: Basic …` header (GET) or the OAuth2 password form (POST).

use std::fmt;

use base64::Engine as _;

use super::AuthError;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

/// Never prints the password, so credentials can sit in anything that is logged.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The user name and password of an `Authorization: Basic …` header value.
    pub fn from_basic(header: &str) -> Result<Self, AuthError> {
        let malformed = AuthError::MalformedCredentials;
        let (scheme, encoded) = header
            .trim()
            .split_once(' ')
            .ok_or(malformed("expected Basic credentials"))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(malformed("only Basic credentials are accepted here"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| malformed("Basic credentials are not base64"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| malformed("Basic credentials are not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or(malformed("Basic credentials without ':'"))?;
        Ok(Credentials::new(username, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn basic_headers() {
        let parsed = Credentials::from_basic(&basic("dave", "d:e:v")).unwrap();
        assert_eq!(parsed, Credentials::new("dave", "d:e:v"));
        assert_eq!(
            Credentials::from_basic(&format!("  bAsIc  {}", &basic("", "")[6..])).unwrap(),
            Credentials::new("", "")
        );
        for malformed in [
            "Basic",
            "Basic !!!",
            "Bearer abc",
            "Basic ZGF2ZQ==",
            "Basic /w==",
        ] {
            assert!(
                matches!(
                    Credentials::from_basic(malformed),
                    Err(AuthError::MalformedCredentials(_))
                ),
                "{malformed}"
            );
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let printed = format!("{:?}", Credentials::new("dave", "hunter2"));
        assert!(
            printed.contains("dave") && !printed.contains("hunter2"),
            "{printed}"
        );
    }
}

//! What ties a refresh token to the password it was earned with.
//!
//! A refresh token is a signed JWT and berth keeps no sessions, so revocation has to be
//! something the token carries and the server can re-check: a short fingerprint of the user's
//! htpasswd line as it was when the token was issued. Changing the password (or removing the
//! user) changes the line, and every refresh token issued before stops working.
//!
//! The fingerprint is an HMAC of the bcrypt hash, keyed by berth's token public key, so that
//! nodes sharing a signing key agree on it and restarts keep it. It reveals nothing useful: the
//! hash it is taken of holds a 128-bit random salt, so a guessed password cannot be checked
//! against it.

use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

pub const REFRESH_TOKEN_USE: &str = "refresh";

/// The audience of refresh tokens: berth's token endpoint, never a registry, so no verifier of
/// access tokens (berth's or another registry's) takes one.
pub fn refresh_audience(service: &str) -> String {
    format!("{service}:refresh")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub token_use: String,
    /// The fingerprint of the user's password hash at issue. Tokens without one (issued before
    /// berth had it) are refused: their users log in again once.
    #[serde(default)]
    pub pwf: String,
}

pub struct Fingerprints(hmac::Key);

impl std::fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprints")
    }
}

impl Fingerprints {
    /// Keyed by the token public key (its SubjectPublicKeyInfo DER).
    pub fn new(public_key_der: &[u8]) -> Self {
        let mut material = b"berth refresh-token password fingerprint\0".to_vec();
        material.extend_from_slice(public_key_der);
        let key = digest::digest(&digest::SHA256, &material);
        Fingerprints(hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()))
    }

    /// 64 bits of the HMAC of `hash`, in hex.
    pub fn of(&self, hash: &str) -> String {
        hex::encode(&hmac::sign(&self.0, hash.as_bytes()).as_ref()[..8])
    }

    /// Whether `claimed` is the fingerprint of `hash` (compared in constant time).
    pub fn matches(&self, hash: &str, claimed: &str) -> bool {
        constant_time_eq(self.of(hash).as_bytes(), claimed.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_follow_the_hash_and_the_key() {
        let f = Fingerprints::new(b"key one");
        let print = f.of("$2b$10$abc");
        assert_eq!(print.len(), 16);
        assert!(f.matches("$2b$10$abc", &print));
        assert!(!f.matches("$2b$10$abd", &print));
        assert!(!f.matches("$2b$10$abc", ""));
        assert!(!f.matches("$2b$10$abc", "zz"));
        assert!(!f.matches("$2b$10$abc", &print[..14]));
        // Another node with the same key agrees; another key does not.
        assert!(Fingerprints::new(b"key one").matches("$2b$10$abc", &print));
        assert!(!Fingerprints::new(b"key two").matches("$2b$10$abc", &print));
    }
}

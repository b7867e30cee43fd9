//! Pass-through grants that travel inside berth's own token, so that any node holding the
//! signing key can act upstream for the caller with no state shared between nodes.
//!
//! What is sealed is the upstream's answer, never the client's credentials: per repository, the
//! bearer token upstream's token service issued (pull only, short-lived) and when it expires.
//! A leaked berth token, or a stolen signing key with a pile of old tokens, then yields at most
//! pull tokens that are about to expire, not an account password (which may allow far more
//! upstream). Berth's token expires no later than the shortest of them, so a sealed upstream
//! token outlives the berth token carrying it; when it is refused anyway, the client is asked to
//! log in again.
//!
//! The blob is AES-256-GCM under a key expanded (HKDF-SHA256) from the signing key's private
//! material with its own `info`, with a random 96-bit nonce, and bound (as associated data) to
//! the `jti` of the token it was sealed into. The identity ids grants are cached under are an
//! HMAC under another key expanded from the same material: equal credentials get equal ids on
//! every node, and an id reveals nothing about them.

use std::fmt;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::keys::SigningKey;
use super::AuthError;

/// HKDF `info` of the grant cipher's key.
const SEAL_INFO: &[u8] = b"berth upstream-grant seal v1";
/// HKDF `info` of the identity id HMAC key.
const IDENTITY_INFO: &[u8] = b"berth upstream identity id v1";
/// First byte of a sealed blob, and of its associated data: a later format gets another.
const VERSION: u8 = 1;
/// Longest sealed blob accepted for opening; a token is smaller still
/// ([`MAX_TOKEN_BYTES`](super::verify::MAX_TOKEN_BYTES)).
const MAX_SEALED_CHARS: usize = 64 * 1024;

/// What a node needs to act upstream for a caller who passed credentials through.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamGrant {
    /// The upstream the credentials were exchanged at.
    #[serde(rename = "u")]
    pub upstream: String,
    /// The identity id upstream tokens are cached under (see [`Sealer::identity_id`]).
    #[serde(rename = "i")]
    pub identity: String,
    /// One per repository (upstream's name for it) the token grants.
    #[serde(rename = "t")]
    pub tokens: Vec<GrantToken>,
}

/// One upstream token of a grant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantToken {
    /// The repository, as upstream names it.
    #[serde(rename = "r")]
    pub repo: String,
    /// The `Authorization` header value upstream accepts (`Bearer …`).
    #[serde(rename = "a")]
    pub authorization: String,
    /// When upstream stops accepting it, in seconds since the Unix epoch.
    #[serde(rename = "e")]
    pub expires: u64,
}

impl UpstreamGrant {
    /// The token for `repo`, if the grant carries one.
    pub fn token_for(&self, repo: &str) -> Option<&GrantToken> {
        self.tokens.iter().find(|t| t.repo == repo)
    }
}

impl fmt::Debug for UpstreamGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamGrant")
            .field("upstream", &self.upstream)
            .field("identity", &self.identity)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl fmt::Debug for GrantToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantToken")
            .field("repo", &self.repo)
            .field("authorization", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// Seals and opens grants, and names identities, with keys derived from the signing key.
pub struct Sealer {
    cipher: LessSafeKey,
    identity: hmac::Key,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(key: &SigningKey) -> Result<Self, AuthError> {
        let derivation = |_| AuthError::Crypto("key derivation failed".into());
        let material = key.material();
        let cipher: UnboundKey = material
            .expand(&[SEAL_INFO], &AES_256_GCM)
            .map_err(derivation)?
            .into();
        let identity: hmac::Key = material
            .expand(&[IDENTITY_INFO], hmac::HMAC_SHA256)
            .map_err(derivation)?
            .into();
        Ok(Sealer {
            cipher: LessSafeKey::new(cipher),
            identity,
            rng: SystemRandom::new(),
        })
    }

    /// The id of a client's credentials for `upstream`: equal on every node with this key, so
    /// that a node reuses the upstream tokens it already holds for them, and unrelated for
    /// different credentials or upstreams. 128 bits, as 32 hex characters.
    pub fn identity_id(&self, upstream: &str, username: &str, password: &str) -> String {
        let mut context = hmac::Context::with_key(&self.identity);
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for part in [upstream, username, password] {
            context.update(&(part.len() as u64).to_le_bytes());
            context.update(part.as_bytes());
        }
        hex::encode(&context.sign().as_ref()[..16])
    }

    /// `grant`, encrypted and authenticated, bound to `bound_to` (the token's `jti`), as
    /// base64url.
    pub fn seal(&self, grant: &UpstreamGrant, bound_to: &str) -> Result<String, AuthError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| AuthError::Crypto("no randomness available".into()))?;
        let mut data =
            serde_json::to_vec(grant).map_err(|e| AuthError::Crypto(format!("grant: {e}")))?;
        self.cipher
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(bound_to)),
                &mut data,
            )
            .map_err(|_| AuthError::Crypto("sealing failed".into()))?;
        let mut blob = Vec::with_capacity(1 + NONCE_LEN + data.len());
        blob.push(VERSION);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&data);
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob))
    }

    /// Opens what [`Sealer::seal`] sealed with the same key material for the same `bound_to`.
    /// Anything else (another key, another token, a changed byte) is an invalid token.
    pub fn open(&self, sealed: &str, bound_to: &str) -> Result<UpstreamGrant, AuthError> {
        let invalid = |reason: &str| {
            AuthError::InvalidToken(format!("its upstream grant cannot be opened: {reason}"))
        };
        if sealed.len() > MAX_SEALED_CHARS {
            return Err(invalid("too long"));
        }
        let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| invalid("not base64url"))?;
        let Some((&version, rest)) = blob.split_first() else {
            return Err(invalid("empty"));
        };
        if version != VERSION {
            return Err(invalid("unknown format"));
        }
        if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(invalid("truncated"));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| invalid("truncated"))?;
        let mut data = ciphertext.to_vec();
        let plain = self
            .cipher
            .open_in_place(nonce, Aad::from(associated_data(bound_to)), &mut data)
            .map_err(|_| invalid("sealed by another key, for another token, or altered"))?;
        serde_json::from_slice(plain).map_err(|_| invalid("malformed"))
    }
}

/// What a blob is bound to: its format and the token it was sealed into.
fn associated_data(bound_to: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + bound_to.len());
    aad.push(VERSION);
    aad.extend_from_slice(bound_to.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::tests::{key, EC_PKCS8, EC_SEC1, RSA_PKCS1, RSA_PKCS8};

    fn grant(user: &str) -> UpstreamGrant {
        UpstreamGrant {
            upstream: "docker.io".into(),
            identity: format!("id-of-{user}"),
            tokens: vec![GrantToken {
                repo: "private/secret".into(),
                authorization: format!("Bearer upstream-token-of-{user}"),
                expires: 1_900_000_000,
            }],
        }
    }

    fn sealer(pem: &str) -> Sealer {
        Sealer::new(&key(pem)).unwrap()
    }

    #[test]
    fn a_sealed_grant_opens_with_the_same_key_on_another_node() {
        let node1 = sealer(EC_SEC1);
        // The same key in another container, as another node may hold it.
        let node2 = sealer(EC_PKCS8);
        let sealed = node1.seal(&grant("alice"), "jti-1").unwrap();
        assert_eq!(node2.open(&sealed, "jti-1").unwrap(), grant("alice"));
        assert_eq!(node1.open(&sealed, "jti-1").unwrap(), grant("alice"));
        let sealed = sealer(RSA_PKCS1).seal(&grant("bob"), "j").unwrap();
        assert_eq!(sealer(RSA_PKCS8).open(&sealed, "j").unwrap(), grant("bob"));
    }

    #[test]
    fn the_blob_reveals_nothing_and_never_repeats() {
        let s = sealer(EC_SEC1);
        let a = s.seal(&grant("alice"), "jti").unwrap();
        let b = s.seal(&grant("alice"), "jti").unwrap();
        assert_ne!(a, b, "a random nonce per seal");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for sealed in [&a, &b] {
            let bytes = b64.decode(sealed).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for secret in [
                "upstream-token-of-alice",
                "Bearer",
                "private/secret",
                "docker.io",
            ] {
                assert!(!text.contains(secret), "{secret} shows in the blob");
                assert!(!sealed.contains(secret), "{secret} shows in the blob");
            }
        }
    }

    #[test]
    fn every_altered_byte_another_key_or_another_token_fails() {
        let s = sealer(EC_SEC1);
        let sealed = s.seal(&grant("alice"), "jti").unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let bytes = b64.decode(&sealed).unwrap();
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 0x01;
            let err = s.open(&b64.encode(&altered), "jti").unwrap_err();
            assert!(matches!(err, AuthError::InvalidToken(_)), "byte {i}: {err}");
        }
        // Cut short, or lengthened.
        for cut in [0, 1, 13, bytes.len() - 1] {
            assert!(s.open(&b64.encode(&bytes[..cut]), "jti").is_err(), "{cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(s.open(&b64.encode(&longer), "jti").is_err());
        // Moved into another token.
        assert!(s.open(&sealed, "other-jti").is_err());
        // Another signing key.
        let err = sealer(RSA_PKCS1).open(&sealed, "jti").unwrap_err();
        assert!(err.to_string().contains("cannot be opened"), "{err}");
        // Not base64url, or absurdly long: refused before any work.
        assert!(s.open("not base64!", "jti").is_err());
        assert!(s.open(&"A".repeat(MAX_SEALED_CHARS + 1), "jti").is_err());
    }

    #[test]
    fn identity_ids_are_the_same_on_every_node_and_keep_credentials_apart() {
        let s = sealer(EC_SEC1);
        let id = s.identity_id("docker.io", "alice", "pw");
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(id, sealer(EC_PKCS8).identity_id("docker.io", "alice", "pw"));
        for other in [
            s.identity_id("ghcr.io", "alice", "pw"),
            s.identity_id("docker.io", "alice", "pw2"),
            s.identity_id("docker.io", "alicep", "w"),
            s.identity_id("docker.io", "bob", "pw"),
            sealer(RSA_PKCS1).identity_id("docker.io", "alice", "pw"),
        ] {
            assert_ne!(id, other);
        }
    }

    #[test]
    fn debug_shows_no_token() {
        let shown = format!("{:?}", grant("alice"));
        assert!(!shown.contains("upstream-token-of-alice"), "{shown}");
        assert!(shown.contains("private/secret"), "{shown}");
    }
}

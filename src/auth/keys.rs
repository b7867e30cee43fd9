//! The key that signs berth's tokens, and the verifier that accepts only what that key signed.
//!
//! Why the care: a JWT verifier that trusts the token's own `alg` header can be fooled into
//! `none`, or into HMAC keyed with the (public) verification key. Here each configured key
//! carries its one algorithm (ES256 for EC P-256, RS256 for RSA), and a token is checked only
//! against the key its `kid` names, with that key's algorithm.
//!
//! The `kid` is the libtrust fingerprint Distribution expects, so that other registries
//! configured with berth's certificate (sent as `x5c`) can verify berth's tokens too.
//! Every PEM is read with `rustls-pemfile`; the DER containers (SEC1, PKCS#1, PKCS#8, X.509)
//! are read and built with RustCrypto's `pkcs8`, `sec1` and `x509-cert`, into what ring and
//! jsonwebtoken accept.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pkcs8::der::asn1::{AnyRef, BitStringRef, OctetStringRef};
use pkcs8::der::{Decode as _, Encode as _};
use pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use pkcs8::{ObjectIdentifier, PrivateKeyInfoRef};
use ring::hkdf;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::AuthError;

/// Clock skew tolerated on `exp` and `nbf`, between berth and the clients' registries.
pub const LEEWAY_SECS: u64 = 30;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// prime256v1, the one curve of ES256.
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

const NOT_P256: &str = "EC key on an unsupported curve: only P-256 (ES256) is supported";

/// The public half of a signing key: what a token must be verified with.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    algorithm: Algorithm,
    decoding: DecodingKey,
    spki: Vec<u8>,
}

impl PublicKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The SubjectPublicKeyInfo DER (what `openssl pkey -pubout -outform DER` prints).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The private key that signs tokens, with its certificate chain when one is configured.
pub struct SigningKey {
    encoding: EncodingKey,
    public: PublicKey,
    /// Secret material every node holding this key derives the same keys from (see
    /// [`SigningKey::material`]).
    material: hkdf::Prk,
    /// Base64 (standard) DER certificates, leaf first, for the `x5c` header.
    x5c: Option<Vec<String>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .field("x5c", &self.x5c.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PEM private key (EC P-256 as PKCS#8 or SEC1; RSA as PKCS#1 or PKCS#8) and,
    /// optionally, the PEM certificate (chain) of that key.
    pub fn load(key_path: &Path, certificate_path: Option<&Path>) -> Result<Self, AuthError> {
        let key_pem = read(key_path)?;
        let certificate = match certificate_path {
            Some(path) => Some((read(path)?, path)),
            None => None,
        };
        Self::from_pem(
            &key_pem,
            key_path,
            certificate
                .as_ref()
                .map(|(pem, path)| (pem.as_slice(), *path)),
        )
    }

    /// Like [`SigningKey::load`] from bytes; the paths only label errors.
    pub fn from_pem(
        key_pem: &[u8],
        key_path: &Path,
        certificate: Option<(&[u8], &Path)>,
    ) -> Result<Self, AuthError> {
        let key_error = |reason: String| AuthError::Key {
            path: key_path.to_path_buf(),
            reason,
        };
        let (encoding, public, secret) = parse_private_key(key_pem).map_err(key_error)?;
        let x5c = match certificate {
            Some((pem, path)) => {
                Some(
                    certificate_chain(pem, &public).map_err(|reason| AuthError::Key {
                        path: path.to_path_buf(),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        Ok(SigningKey {
            encoding,
            public,
            material: hkdf::Salt::new(hkdf::HKDF_SHA256, MATERIAL_SALT).extract(&secret),
            x5c,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm
    }

    /// The libtrust key ID (`ABCD:EFGH:…`, 12 groups of 4).
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn x5c(&self) -> Option<&[String]> {
        self.x5c.as_deref()
    }

    /// An HKDF pseudo-random key extracted from the private key's secret (the EC scalar, or
    /// the RSA key's PKCS#1 DER), to expand into keys for other uses with an `info` of their
    /// own. It depends on the key only, not on the file's container (SEC1 or PKCS#8), so every
    /// node configured with the same key derives the same keys, and the public key reveals
    /// nothing of them.
    pub(super) fn material(&self) -> &hkdf::Prk {
        &self.material
    }

    /// Signs `claims` as a JWT with this key's algorithm, `kid` and (when configured) `x5c`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        let mut header = Header::new(self.public.algorithm);
        header.kid = Some(self.public.kid.clone());
        header.x5c = self.x5c.clone();
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| AuthError::Crypto(e.to_string()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The reason of a key that the DER crates could not read or write.
fn malformed(what: &str) -> impl Fn(pkcs8::der::Error) -> String + '_ {
    move |e| format!("malformed {what}: {e}")
}

/// HKDF salt for [`SigningKey::material`]; constant, as the secret is already uniform enough
/// for extraction and every node must derive the same.
const MATERIAL_SALT: &[u8] = b"berth signing-key material v1";

/// A private key's parts: what signs, what verifies, and the secret keys are derived from.
type ParsedKey = (EncodingKey, PublicKey, Vec<u8>);

/// Finds the one private key in a PEM file and turns it into a signing and a public key.
fn parse_private_key(pem: &[u8]) -> Result<ParsedKey, String> {
    use rustls_pemfile::Item;

    let mut found = None;
    for item in rustls_pemfile::read_all(&mut &pem[..]) {
        let item = item.map_err(|e| format!("not a readable PEM file: {e}"))?;
        let key = match item {
            Item::Pkcs8Key(key) => KeyDer::Pkcs8(key.secret_pkcs8_der().to_vec()),
            Item::Sec1Key(key) => KeyDer::Sec1(key.secret_sec1_der().to_vec()),
            Item::Pkcs1Key(key) => KeyDer::Pkcs1(key.secret_pkcs1_der().to_vec()),
            // Certificates next to the key are allowed and ignored here.
            _ => continue,
        };
        if found.is_some() {
            return Err("more than one private key in the file".into());
        }
        found = Some(key);
    }
    match found {
        Some(KeyDer::Pkcs8(der)) => from_pkcs8(&der),
        Some(KeyDer::Sec1(der)) => ec_from_pkcs8(&sec1_to_pkcs8(&der)?),
        Some(KeyDer::Pkcs1(der)) => rsa_from_pkcs1(&der),
        None => Err(
            "no private key found (expected PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \
             \"RSA PRIVATE KEY\"; encrypted keys are not supported)"
                .into(),
        ),
    }
}

enum KeyDer {
    Pkcs8(Vec<u8>),
    Sec1(Vec<u8>),
    Pkcs1(Vec<u8>),
}

/// PKCS#8 says in its AlgorithmIdentifier what it holds; dispatch on that.
fn from_pkcs8(der: &[u8]) -> Result<ParsedKey, String> {
    let info = PrivateKeyInfoRef::from_der(der).map_err(malformed("PKCS#8 key"))?;
    let algorithm = &info.algorithm;
    if algorithm.oid == ID_EC_PUBLIC_KEY {
        if algorithm.parameters_oid().ok() != Some(P256) {
            return Err(NOT_P256.into());
        }
        ec_from_pkcs8(der)
    } else if algorithm.oid == RSA_ENCRYPTION {
        rsa_from_pkcs1(info.private_key.as_bytes())
    } else {
        Err("unsupported key type: use EC P-256 or RSA".into())
    }
}

/// Wraps a SEC1 `ECPrivateKey` into PKCS#8, the only EC form ring and jsonwebtoken take.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, String> {
    let key = sec1::EcPrivateKey::from_der(sec1).map_err(malformed("SEC1 key"))?;
    // The curve may be left to the container; when SEC1 names one, it must be P-256.
    if let Some(parameters) = key.parameters {
        if parameters.named_curve() != Some(P256) {
            return Err(NOT_P256.into());
        }
    }
    let private_key = OctetStringRef::new(sec1).map_err(malformed("SEC1 key"))?;
    PrivateKeyInfoRef::new(p256_algorithm(), private_key)
        .to_der()
        .map_err(malformed("PKCS#8 key"))
}

/// An EC P-256 key's algorithm, in its PKCS#8 wrapper and in its SubjectPublicKeyInfo.
fn p256_algorithm() -> AlgorithmIdentifierRef<'static> {
    AlgorithmIdentifierRef {
        oid: ID_EC_PUBLIC_KEY,
        parameters: Some(AnyRef::from(&P256)),
    }
}

/// The DER SubjectPublicKeyInfo of a public key (what the libtrust kid hashes).
fn spki_der(algorithm: AlgorithmIdentifierRef<'_>, key: &[u8]) -> Result<Vec<u8>, String> {
    SubjectPublicKeyInfoRef {
        algorithm,
        subject_public_key: BitStringRef::from_bytes(key).map_err(malformed("public key"))?,
    }
    .to_der()
    .map_err(malformed("public key"))
}

fn ec_from_pkcs8(pkcs8: &[u8]) -> Result<ParsedKey, String> {
    let pair = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &SystemRandom::new(),
    )
    // ring insists on the public key being stored next to the private one.
    .map_err(|e| {
        format!("not a usable EC P-256 key ({e}); keys without their public part are not supported")
    })?;
    let point = pair.public_key().as_ref();
    let spki = spki_der(p256_algorithm(), point)?;
    let public = PublicKey {
        kid: libtrust_kid(&spki),
        algorithm: Algorithm::ES256,
        decoding: DecodingKey::from_ec_der(point),
        spki,
    };
    // The scalar alone: SEC1 may or may not repeat the curve and the public point.
    let info = PrivateKeyInfoRef::from_der(pkcs8).map_err(malformed("PKCS#8 key"))?;
    let sec1 =
        sec1::EcPrivateKey::from_der(info.private_key.as_bytes()).map_err(malformed("SEC1 key"))?;
    let scalar = sec1.private_key.to_vec();
    Ok((EncodingKey::from_ec_der(pkcs8), public, scalar))
}

fn rsa_from_pkcs1(pkcs1: &[u8]) -> Result<ParsedKey, String> {
    let pair = signature::RsaKeyPair::from_der(pkcs1)
        .map_err(|e| format!("not a usable RSA key ({e}); at least 2048 bits are required"))?;
    // ring's public key is the PKCS#1 RSAPublicKey; PKIX wraps it with its algorithm.
    let rsa_public = pair.public().as_ref();
    let algorithm = AlgorithmIdentifierRef {
        oid: RSA_ENCRYPTION,
        parameters: Some(AnyRef::NULL),
    };
    let spki = spki_der(algorithm, rsa_public)?;
    let public = PublicKey {
        kid: libtrust_kid(&spki),
        algorithm: Algorithm::RS256,
        decoding: DecodingKey::from_rsa_der(rsa_public),
        spki,
    };
    // PKCS#1 DER is canonical for a key; PKCS#8 only wraps it.
    Ok((EncodingKey::from_rsa_der(pkcs1), public, pkcs1.to_vec()))
}

/// The certificates of a PEM file as `x5c` entries, after checking that the first one
/// certifies `public`: a mismatch would make every other registry reject berth's tokens.
fn certificate_chain(pem: &[u8], public: &PublicKey) -> Result<Vec<String>, String> {
    let mut chain = Vec::new();
    for certificate in rustls_pemfile::certs(&mut &pem[..]) {
        let certificate = certificate.map_err(|e| format!("not a readable PEM file: {e}"))?;
        chain.push(certificate.as_ref().to_vec());
    }
    let leaf = chain
        .first()
        .ok_or("no certificate found (expected PEM \"CERTIFICATE\")")?;
    let certificate = x509_cert::Certificate::from_der(leaf).map_err(malformed("certificate"))?;
    let spki = certificate
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(malformed("certificate"))?;
    if spki != public.spki {
        return Err("the certificate is not for the signing key".into());
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(chain.iter().map(|der| b64.encode(der)).collect())
}

/// The libtrust key ID: the first 240 bits of SHA-256 over the PKIX public key, in base32,
/// as 12 colon-separated groups of 4.
pub fn libtrust_kid(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    // 30 bytes are 48 base32 characters: no padding.
    let encoded = data_encoding::BASE32_NOPAD.encode(&digest.as_ref()[..30]);
    let groups: Vec<&str> = encoded
        .as_bytes()
        .chunks(4)
        // base32 output is ASCII, so every chunk is valid UTF-8.
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    groups.join(":")
}

/// Verifies tokens signed by the configured key(s): signature, pinned algorithm, `iss`, `aud`,
/// `exp` and `nbf` (with [`LEEWAY_SECS`]).
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<PublicKey>,
    issuer: String,
}

impl Verifier {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>, issuer: impl Into<String>) -> Self {
        Verifier {
            keys: keys.into_iter().collect(),
            issuer: issuer.into(),
        }
    }

    /// Checks `token` and returns its claims; `audience` is the `aud` it must carry.
    pub fn verify<T: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<T, AuthError> {
        let invalid = |reason: &str| AuthError::InvalidToken(reason.to_owned());
        // The header is read unverified only to pick the key; the algorithm it names must
        // still be that key's own.
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
        let kid = header.kid.as_deref().ok_or_else(|| invalid("no key ID"))?;
        let key = self
            .keys
            .iter()
            .find(|key| key.kid == kid)
            .ok_or_else(|| invalid("signed by an unknown key"))?;
        if header.alg != key.algorithm {
            return Err(invalid("algorithm does not match the key"));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.required_spec_claims = ["exp", "nbf", "aud", "iss"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>();
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                invalid(match e.kind() {
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidAlgorithm => "algorithm not allowed",
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::ImmatureSignature => "not yet valid",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::MissingRequiredClaim(_) => "missing a required claim",
                    _ => "malformed",
                })
            })
    }
}

/// A new EC P-256 private key as PKCS#8 PEM (`berth keygen`).
pub fn generate_ec_pem() -> Result<String, AuthError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|key| key.serialize_pem())
        .map_err(|e| AuthError::Crypto(format!("key generation: {e}")))
}

/// The key kept at `path`, made there (EC P-256, PKCS#8, mode 0600) when there is none yet:
/// the open mirror's key, which nobody configures. Reads and writes files: call it at startup,
/// off the async executor.
pub fn load_or_generate(path: &Path) -> Result<SigningKey, AuthError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| AuthError::Io { path, source }
    };
    if !path.exists() {
        let pem = generate_ec_pem()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut file| file.write_all(pem.as_bytes()))
            .map_err(io_error(path))?;
    }
    SigningKey::load(path, None)
}

#[cfg(test)]
pub(crate) mod tests;

//! Key loading in every container, the libtrust kid, and a verifier that cannot be fooled.

use super::*;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

// A throwaway P-256 key, in both the SEC1 and the PKCS#8 form `openssl` writes.
pub(crate) const EC_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIO9BUVQxfY7lgjFzvXLbfEmvPDFYIruuJc9fSy7s66POoAoGCCqGSM49
AwEHoUQDQgAEYQy1vxrxVk/mEeUJma4U4WpCMBIIKul/0rZftG03fuI5777rFBPS
+2vpI7we16Fg/td9E6TWnZABoJ5/H3H/Lw==
-----END EC PRIVATE KEY-----
";
pub(crate) const EC_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg70FRVDF9juWCMXO9
ctt8Sa88MVgiu64lz19LLuzro86hRANCAARhDLW/GvFWT+YR5QmZrhThakIwEggq
6X/Stl+0bTd+4jnvvusUE9L7a+kjvB7XoWD+130TpNadkAGgnn8fcf8v
-----END PRIVATE KEY-----
";
/// Computed independently: `openssl pkey -pubout -outform DER | sha256`, first 30 bytes,
/// Python's `base64.b32encode`, grouped by 4.
const EC_KID: &str = "KO6E:WY7C:WMIQ:DF4J:XHWT:UP4M:R7GP:YJUO:VZSX:53AV:IXEN:IBOZ";

// A throwaway 2048-bit RSA key, as PKCS#1 (`openssl genrsa -traditional`) and PKCS#8.
pub(crate) const RSA_PKCS1: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEogIBAAKCAQEAqd/QeigpX153PxP58+srVfuXTsnWOyE9snQRXYbxjoVn5ilg
1ZJmctoLHmfsseas+d5BBgT2LvCsmM4m8lHiTk7pmG1JgzPsVUfxCjGh6cfndnaW
KuoAgqGXZLUhpclwyGVRsxbKZgN3ShF2usCoLPpjfRa6YUIzaaXKPI0CRZc9Qz+p
okgvye/fcdRBo78OCB/UtI3z3esSxLMhQ/SEDUITIrkB9R+LDbqN7Uobnnt3568D
meI1WxGKUcdBcq1RTJbANXynK7lCfyDGQxwwG+clphISaD6NPTHMdNDu2hf5DYAT
Y6aHfjQ7snAYHCd1BkSOBoaLaaFPLzcyU2A0iQIDAQABAoIBADtWPpAs7yas7KJP
7ANTpfOGyjdvMTG+TrrC6D3vIPlTiBNRaM2xMa/0keWxD3Ckzs8I31Wm7gc/ckp9
2ATUrWQFFHt10TPPM0Imuv+AjroGZcdvbMzYqAz5PNSkoHg0gPy+x2bzEwfHNifd
KcfZ++SaIZ5UDg5i/WptytKTvrNnqZCHG6RLea9nfQ6FZGE+k+HmbJl3sspuCj7D
kS/qr7st8z6NAS3RbHk+UGuREiPFrbCe3qV4Pi20dyyD8dMzkhbdGhaEoF2z0+bd
kn8/PsYdmx4Nbr24qF0ufOpsIoCU79cBBj/cPUVUkUI+MuDEq6YVzW3OkN5+Wop4
L3zenHECgYEA8BLLPhnYDfbSrU/GIewpyDbU0s9MldoQfiMpr/DqOk+geCRTXUev
YC+szIv46zm7BHkNYOTEGoN6OcxVfKZEy2Rh38bSzc+uWFGv5uKZtG8Sx/CbMVBm
XWXYbb/6MNMNt7iRAZj/Bfeiip1QieURPnaYIxgGSEBwFiEnotiQq18CgYEAtSTR
Jaso5aDSiIhI3nf8dNNHtsrFUrgGL8B4lE92ivvKJmrHhPnPmXWS5z83AHn056oS
3COpiaptWKbHicMWpkQBVcSbjCBeRuBZ/9fVqWAzI4+0YGjFYE9VJEbJclVTszg0
1knX+4lSaXrwWdiHYT/PoIZSHSv5bkbLgGSwkRcCgYBgEvVZFdibxgILr5gX7T3P
TPognysD8S+WexXsvhnOWh1a1xaxhsWNVabueLmV0RWhtZwAAazk+2bHiJlRd+yi
BLsSZavpB0q7N32QhXCDf8vhTc2dj5JXoDFbwm8qaNvdgTQukn7EcZSPqmMXvB8J
g0ZhDPU+puL0SDJnfglvOwKBgBWKMDiLdsx/aCmGEywpFmMJ8KAi0n34lfu9plj0
bgMu16Xj0p/UWMRFv9cxpCexWNbnWWDF+NX+5wvAoT+XbC0PLx10yI5MFwnUib8r
eiOu5cXXw7onGzlNlbE/nZqz3MUV7OqCU2V8uckDLmtwnQCKZvUOo9sGLJ3ZWz+E
OZ63AoGAQ0Sv3QDU4HVcUPaYVFWzkacIXHU3xuK4suEVhKdZHFg1TPuUswOgEI3Z
YH04wwE/7p9viisWkqbKUwnB4GScCNwEr0evQSJNB/bCWCouGW+xdzEzeZNv2H2F
pRv2j0oPeTj9hO2PE/hqxEa/tAh+u33l0wmwHyY36WJoGzG5i5A=
-----END RSA PRIVATE KEY-----
";
pub(crate) const RSA_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCp39B6KClfXnc/
E/nz6ytV+5dOydY7IT2ydBFdhvGOhWfmKWDVkmZy2gseZ+yx5qz53kEGBPYu8KyY
zibyUeJOTumYbUmDM+xVR/EKMaHpx+d2dpYq6gCCoZdktSGlyXDIZVGzFspmA3dK
EXa6wKgs+mN9FrphQjNppco8jQJFlz1DP6miSC/J799x1EGjvw4IH9S0jfPd6xLE
syFD9IQNQhMiuQH1H4sNuo3tShuee3fnrwOZ4jVbEYpRx0FyrVFMlsA1fKcruUJ/
IMZDHDAb5yWmEhJoPo09Mcx00O7aF/kNgBNjpod+NDuycBgcJ3UGRI4GhotpoU8v
NzJTYDSJAgMBAAECggEAO1Y+kCzvJqzsok/sA1Ol84bKN28xMb5OusLoPe8g+VOI
E1FozbExr/SR5bEPcKTOzwjfVabuBz9ySn3YBNStZAUUe3XRM88zQia6/4COugZl
x29szNioDPk81KSgeDSA/L7HZvMTB8c2J90px9n75JohnlQODmL9am3K0pO+s2ep
kIcbpEt5r2d9DoVkYT6T4eZsmXeyym4KPsORL+qvuy3zPo0BLdFseT5Qa5ESI8Wt
sJ7epXg+LbR3LIPx0zOSFt0aFoSgXbPT5t2Sfz8+xh2bHg1uvbioXS586mwigJTv
1wEGP9w9RVSRQj4y4MSrphXNbc6Q3n5aingvfN6ccQKBgQDwEss+GdgN9tKtT8Yh
7CnINtTSz0yV2hB+Iymv8Oo6T6B4JFNdR69gL6zMi/jrObsEeQ1g5MQag3o5zFV8
pkTLZGHfxtLNz65YUa/m4pm0bxLH8JsxUGZdZdhtv/ow0w23uJEBmP8F96KKnVCJ
5RE+dpgjGAZIQHAWISei2JCrXwKBgQC1JNElqyjloNKIiEjed/x000e2ysVSuAYv
wHiUT3aK+8omaseE+c+ZdZLnPzcAefTnqhLcI6mJqm1YpseJwxamRAFVxJuMIF5G
4Fn/19WpYDMjj7RgaMVgT1UkRslyVVOzODTWSdf7iVJpevBZ2IdhP8+ghlIdK/lu
RsuAZLCRFwKBgGAS9VkV2JvGAguvmBftPc9M+iCfKwPxL5Z7Fey+Gc5aHVrXFrGG
xY1Vpu54uZXRFaG1nAABrOT7ZseImVF37KIEuxJlq+kHSrs3fZCFcIN/y+FNzZ2P
klegMVvCbypo292BNC6SfsRxlI+qYxe8HwmDRmEM9T6m4vRIMmd+CW87AoGAFYow
OIt2zH9oKYYTLCkWYwnwoCLSffiV+72mWPRuAy7XpePSn9RYxEW/1zGkJ7FY1udZ
YMX41f7nC8ChP5dsLQ8vHXTIjkwXCdSJvyt6I67lxdfDuicbOU2VsT+dmrPcxRXs
6oJTZXy5yQMua3CdAIpm9Q6j2wYsndlbP4Q5nrcCgYBDRK/dANTgdVxQ9phUVbOR
pwhcdTfG4riy4RWEp1kcWDVM+5SzA6AQjdlgfTjDAT/un2+KKxaSpspTCcHgZJwI
3ASvR69BIk0H9sJYKi4Zb7F3MTN5k2/YfYWlG/aPSg95OP2E7Y8T+GrERr+0CH67
feXTCbAfJjfpYmgbMbmLkA==
-----END PRIVATE KEY-----
";
/// Computed independently, as [`EC_KID`].
const RSA_KID: &str = "N4HK:QKA7:V6YG:PPIG:6BED:SCUE:OGQI:B47R:UT4C:QT3Z:35WE:D2CI";

/// What labels errors of keys built in memory.
fn memory_path() -> PathBuf {
    PathBuf::from("<memory>")
}

pub(crate) fn key(pem: &str) -> SigningKey {
    SigningKey::from_pem(pem.as_bytes(), &memory_path(), None).unwrap()
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    exp: u64,
    nbf: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Claims {
    Claims {
        iss: "berth".into(),
        aud: "registry".into(),
        sub: "alice".into(),
        exp: now() + 300,
        nbf: now(),
    }
}

fn verifier(key: &SigningKey) -> Verifier {
    Verifier::new([key.public_key().clone()], "berth")
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn assert_rejected(verifier: &Verifier, token: &str, why: &str) {
    match verifier.verify::<Claims>(token, "registry") {
        Err(AuthError::InvalidToken(reason)) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected rejection ({why}), got {other:?}"),
    }
}

#[test]
fn known_kids_match_an_independent_computation() {
    assert_eq!(key(EC_SEC1).kid(), EC_KID);
    assert_eq!(key(EC_PKCS8).kid(), EC_KID);
    assert_eq!(key(RSA_PKCS1).kid(), RSA_KID);
    assert_eq!(key(RSA_PKCS8).kid(), RSA_KID);
    assert_eq!(key(EC_SEC1).algorithm(), Algorithm::ES256);
    assert_eq!(key(RSA_PKCS8).algorithm(), Algorithm::RS256);
}

#[test]
fn kid_has_twelve_groups_of_four() {
    let generated = key(&generate_ec_pem().unwrap());
    let groups: Vec<&str> = generated.kid().split(':').collect();
    assert_eq!(groups.len(), 12);
    for group in groups {
        assert_eq!(group.len(), 4);
        assert!(group
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    }
}

#[test]
fn sign_verify_roundtrip_for_every_key_form() {
    for pem in [EC_SEC1, EC_PKCS8, RSA_PKCS1, RSA_PKCS8] {
        let key = key(pem);
        let token = key.sign(&claims()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(header.alg, key.algorithm());
        assert!(header.x5c.is_none());
        let back: Claims = verifier(&key).verify(&token, "registry").unwrap();
        assert_eq!(back.sub, "alice");
    }
    // The same key in either container verifies the other's tokens.
    let token = key(EC_SEC1).sign(&claims()).unwrap();
    verifier(&key(EC_PKCS8))
        .verify::<Claims>(&token, "registry")
        .unwrap();
}

#[test]
fn generated_keys_work() {
    let key = key(&generate_ec_pem().unwrap());
    let token = key.sign(&claims()).unwrap();
    verifier(&key).verify::<Claims>(&token, "registry").unwrap();
}

#[test]
fn tampered_tokens_are_rejected() {
    let key = key(EC_PKCS8);
    let verifier = verifier(&key);
    let token = key.sign(&claims()).unwrap();
    let (message, signature) = token.rsplit_once('.').unwrap();

    // A flipped signature byte.
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    sig[10] ^= 1;
    assert_rejected(
        &verifier,
        &format!("{message}.{}", b64url(&sig)),
        "signature",
    );

    // Other claims under the original signature.
    let (header, _) = message.split_once('.').unwrap();
    let mut forged = claims();
    forged.sub = "root".into();
    let payload = b64url(&serde_json::to_vec(&forged).unwrap());
    assert_rejected(
        &verifier,
        &format!("{header}.{payload}.{signature}"),
        "signature",
    );
}

#[test]
fn alg_none_is_rejected() {
    let key = key(EC_PKCS8);
    let header =
        b64url(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, key.kid()).as_bytes());
    let payload = b64url(&serde_json::to_vec(&claims()).unwrap());
    assert_rejected(
        &verifier(&key),
        &format!("{header}.{payload}."),
        "malformed",
    );
}

#[test]
fn hmac_with_the_public_key_is_rejected() {
    for pem in [EC_PKCS8, RSA_PKCS1] {
        let key = key(pem);
        for secret in [
            key.public_key().spki_der().to_vec(),
            key.kid().as_bytes().to_vec(),
        ] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(key.kid().to_owned());
            let token =
                jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret))
                    .unwrap();
            assert_rejected(&verifier(&key), &token, "algorithm");
        }
    }
}

#[test]
fn other_algorithms_and_keys_are_rejected() {
    let ec = key(EC_PKCS8);
    let rsa = key(RSA_PKCS1);
    // An RS256 token presenting the EC key's kid.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(ec.kid().to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_rsa_pem(RSA_PKCS1.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_rejected(&verifier(&ec), &token, "algorithm");
    // A token from another key entirely.
    assert_rejected(&verifier(&ec), &rsa.sign(&claims()).unwrap(), "unknown key");
    let other = key(&generate_ec_pem().unwrap());
    assert_rejected(
        &verifier(&ec),
        &other.sign(&claims()).unwrap(),
        "unknown key",
    );
    // A token without a kid.
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims(),
        &EncodingKey::from_ec_pem(EC_PKCS8.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_rejected(&verifier(&ec), &token, "key ID");
}

#[test]
fn time_audience_and_issuer_are_checked() {
    let key = key(EC_SEC1);
    let verifier = verifier(&key);
    let mut expired = claims();
    expired.exp = now() - LEEWAY_SECS - 5;
    assert_rejected(&verifier, &key.sign(&expired).unwrap(), "expired");
    // Within the leeway, a just-expired token still passes.
    let mut recent = claims();
    recent.exp = now() - 5;
    verifier
        .verify::<Claims>(&key.sign(&recent).unwrap(), "registry")
        .unwrap();
    let mut early = claims();
    early.nbf = now() + LEEWAY_SECS + 60;
    assert_rejected(&verifier, &key.sign(&early).unwrap(), "not yet valid");
    let mut audience = claims();
    audience.aud = "elsewhere".into();
    assert_rejected(&verifier, &key.sign(&audience).unwrap(), "audience");
    let mut issuer = claims();
    issuer.iss = "mallory".into();
    assert_rejected(&verifier, &key.sign(&issuer).unwrap(), "issuer");
    // Claims that are required must be there.
    #[derive(Serialize)]
    struct NoNbf {
        iss: &'static str,
        aud: &'static str,
        exp: u64,
    }
    let token = key
        .sign(&NoNbf {
            iss: "berth",
            aud: "registry",
            exp: now() + 60,
        })
        .unwrap();
    // (Read as untyped JSON, so that it is the verifier, not serde, that objects.)
    match verifier.verify::<serde_json::Value>(&token, "registry") {
        Err(AuthError::InvalidToken(reason)) => {
            assert!(reason.contains("required"), "{reason}")
        }
        other => panic!("token without nbf accepted: {other:?}"),
    }
}

#[test]
fn certificates_are_sent_as_x5c_and_must_match_the_key() {
    let key_pair = rcgen::KeyPair::from_pem(EC_PKCS8).unwrap();
    let params = rcgen::CertificateParams::new(vec!["registry.test".to_string()]).unwrap();
    let certificate = params.self_signed(&key_pair).unwrap();
    let cert_pem = certificate.pem();
    let key = SigningKey::from_pem(
        EC_SEC1.as_bytes(),
        &memory_path(),
        Some((cert_pem.as_bytes(), Path::new("cert.pem"))),
    )
    .unwrap();
    let x5c = key.x5c().unwrap();
    assert_eq!(x5c.len(), 1);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&x5c[0])
            .unwrap(),
        certificate.der().as_ref()
    );
    let token = key.sign(&claims()).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.x5c.as_deref(), Some(x5c));
    verifier(&key).verify::<Claims>(&token, "registry").unwrap();

    let err = SigningKey::from_pem(
        RSA_PKCS1.as_bytes(),
        &memory_path(),
        Some((cert_pem.as_bytes(), Path::new("cert.pem"))),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not for the signing key"), "{err}");
}

#[test]
fn an_rsa_certificate_matches_its_key() {
    // The RSA SubjectPublicKeyInfo carries a NULL parameter; the certificate's must compare
    // equal to the one built from the key.
    let key_pair = rcgen::KeyPair::from_pem(RSA_PKCS8).unwrap();
    let params = rcgen::CertificateParams::new(vec!["registry.test".to_string()]).unwrap();
    let cert_pem = params.self_signed(&key_pair).unwrap().pem();
    let key = SigningKey::from_pem(
        RSA_PKCS1.as_bytes(),
        &memory_path(),
        Some((cert_pem.as_bytes(), Path::new("cert.pem"))),
    )
    .unwrap();
    assert_eq!(key.x5c().map(<[String]>::len), Some(1));
    assert_eq!(key.public_key().spki_der(), key_pair.public_key_der());
}

#[test]
fn malformed_keys_and_certificates_are_explained() {
    let err = |pem: &str| {
        SigningKey::from_pem(pem.as_bytes(), Path::new("k.pem"), None)
            .unwrap_err()
            .to_string()
    };
    // Valid base64, not DER of the kind the label promises.
    for label in ["PRIVATE KEY", "EC PRIVATE KEY"] {
        let pem = format!("-----BEGIN {label}-----\nMAMCAQA=\n-----END {label}-----\n");
        assert!(err(&pem).contains("malformed"), "{label}: {}", err(&pem));
    }
    let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nMAMCAQA=\n-----END RSA PRIVATE KEY-----\n";
    assert!(
        err(pkcs1).contains("not a usable RSA key"),
        "{}",
        err(pkcs1)
    );
    // `openssl genpkey -algorithm ed25519`
    let ed25519 = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINdD3TIxi+OfHefspsF/nFXEwnQ0PhB3wuIcbNIdl4Qr
-----END PRIVATE KEY-----
";
    assert!(
        err(ed25519).contains("unsupported key type"),
        "{}",
        err(ed25519)
    );
    // The P-384 key below, as PKCS#8.
    let p384 = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBsZHveFeAouD8VJ3zP
89LOFkpul97AegMJbviu62Ha9E0ytXnlb49Xth2abnuSDhqhZANiAAR8bMirutce
rHc06O7/cLQU8NQzq1FFiwJ+WEwQtSY6PUGoKfXtTzQ11cG2aIsAqzzjZp3lWh3E
QV9rrtFzM5ucKv+pIAcsDL03+M1SM/M310loxqWa444/oFTSw8Akox4=
-----END PRIVATE KEY-----
";
    assert!(err(p384).contains("only P-256"), "{}", err(p384));

    let certificate = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
    let err = SigningKey::from_pem(
        EC_SEC1.as_bytes(),
        &memory_path(),
        Some((certificate.as_bytes(), Path::new("cert.pem"))),
    )
    .unwrap_err();
    assert!(matches!(err, AuthError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains("malformed certificate"), "{err}");
}

#[test]
fn unusable_key_files_are_explained() {
    let err = |pem: &str| {
        SigningKey::from_pem(pem.as_bytes(), Path::new("k.pem"), None)
            .unwrap_err()
            .to_string()
    };
    assert!(err("hello").contains("no private key"));
    assert!(err(&format!("{EC_SEC1}{EC_PKCS8}")).contains("more than one"));
    // A P-384 key (SEC1, as `openssl ecparam -name secp384r1 -genkey` writes).
    let p384 = "-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDBsZHveFeAouD8VJ3zP89LOFkpul97AegMJbviu62Ha9E0ytXnlb49X
th2abnuSDhqgBwYFK4EEACKhZANiAAR8bMirutcerHc06O7/cLQU8NQzq1FFiwJ+
WEwQtSY6PUGoKfXtTzQ11cG2aIsAqzzjZp3lWh3EQV9rrtFzM5ucKv+pIAcsDL03
+M1SM/M310loxqWa444/oFTSw8Akox4=
-----END EC PRIVATE KEY-----
";
    assert!(err(p384).contains("only P-256"), "{}", err(p384));
    let missing = SigningKey::load(Path::new("/nonexistent/k.pem"), None).unwrap_err();
    assert!(matches!(missing, AuthError::Io { .. }));
}

#[test]
fn generated_pem_is_pkcs8() {
    let pem = generate_ec_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(pem.lines().all(|line| line.len() <= 64));
}

#[test]
fn a_missing_key_is_made_once_and_kept() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/token.key");
    let made = load_or_generate(&path).unwrap();
    assert_eq!(made.algorithm(), Algorithm::ES256);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A restart signs with the same key: tokens issued before it stay valid.
    let again = load_or_generate(&path).unwrap();
    assert_eq!(again.kid(), made.kid());
    // An unreadable key is an error, never silently replaced.
    std::fs::write(&path, "not a key").unwrap();
    assert!(matches!(
        load_or_generate(&path),
        Err(AuthError::Key { .. })
    ));
}

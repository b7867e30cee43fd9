//! An upstream's TLS material (`ca_file`, `client_certificate`, `client_key`), read and checked
//! when the configuration loads: a missing or unparsable file stops the start with a message
//! naming its key, instead of failing the first pull with a handshake error.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use rustls_pemfile::Item;
use x509_cert::der::Decode as _;

use super::{ConfigError, Secret};

/// What the HTTP client of one upstream trusts and presents, besides the public roots.
#[derive(Clone, Default)]
pub struct UpstreamTls {
    /// Extra trusted roots (`ca_file`), DER.
    pub roots: Vec<Vec<u8>>,
    /// The client certificate chain and its key, as one PEM (certificates, then the key), as
    /// reqwest's `Identity::from_pem` takes it. Rebuilt from the parsed items, so sections it
    /// would refuse (an OpenSSL `EC PARAMETERS` block) are left out.
    pub identity_pem: Option<Secret>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("roots", &self.roots.len())
            .field("identity_pem", &self.identity_pem)
            .finish()
    }
}

/// Reads the files an upstream names. `upstream` and the key names go into every error.
pub(super) fn load(
    upstream: &str,
    ca_file: Option<&Path>,
    client_certificate: Option<&Path>,
    client_key: Option<&Path>,
) -> Result<UpstreamTls, ConfigError> {
    let fail = |key: &str, path: &Path, what: String| {
        ConfigError::Invalid(format!(
            "upstream {upstream:?}: {key} {}: {what}",
            path.display()
        ))
    };
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| fail(key, path, format!("cannot read: {e}")))
    };
    let mut tls = UpstreamTls::default();
    if let Some(path) = ca_file {
        tls.roots = certificates(&read("ca_file", path)?).map_err(|e| fail("ca_file", path, e))?;
    }
    match (client_certificate, client_key) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError::Invalid(format!(
                "upstream {upstream:?}: client_certificate and client_key go together"
            )))
        }
        (Some(cert_path), Some(key_path)) => {
            let chain = certificates(&read("client_certificate", cert_path)?)
                .map_err(|e| fail("client_certificate", cert_path, e))?;
            let (label, key) = private_key(&read("client_key", key_path)?)
                .map_err(|e| fail("client_key", key_path, e))?;
            let mut pem = String::new();
            for der in &chain {
                pem.push_str(&encode_pem("CERTIFICATE", der));
            }
            pem.push_str(&encode_pem(label, &key));
            tls.identity_pem = Some(Secret::new(pem));
        }
    }
    Ok(tls)
}

/// Every certificate of a PEM file, each checked to be X.509; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut found = Vec::new();
    for certificate in rustls_pemfile::certs(&mut &pem[..]) {
        let certificate = certificate.map_err(|e| format!("not a readable PEM file: {e}"))?;
        x509_cert::Certificate::from_der(certificate.as_ref())
            .map_err(|e| format!("certificate {} is not X.509: {e}", found.len() + 1))?;
        found.push(certificate.as_ref().to_vec());
    }
    if found.is_empty() {
        return Err("no certificate found (expected PEM \"CERTIFICATE\" blocks)".into());
    }
    Ok(found)
}

/// The one private key of a PEM file, with the PEM label of its format.
fn private_key(pem: &[u8]) -> Result<(&'static str, Vec<u8>), String> {
    let mut found = None;
    for item in rustls_pemfile::read_all(&mut &pem[..]) {
        let item = item.map_err(|e| format!("not a readable PEM file: {e}"))?;
        let key = match item {
            Item::Pkcs8Key(key) => ("PRIVATE KEY", key.secret_pkcs8_der().to_vec()),
            Item::Sec1Key(key) => ("EC PRIVATE KEY", key.secret_sec1_der().to_vec()),
            Item::Pkcs1Key(key) => ("RSA PRIVATE KEY", key.secret_pkcs1_der().to_vec()),
            _ => continue,
        };
        if found.replace(key).is_some() {
            return Err("more than one private key in the file".into());
        }
    }
    found.ok_or_else(|| {
        "no private key found (expected PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\")"
            .into()
    })
}

fn encode_pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        // Base64 is ASCII.
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn error(result: Result<UpstreamTls, ConfigError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn reads_roots_and_rebuilds_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ca = write(
            dir.path(),
            "ca.pem",
            &format!("{}{}", cert.pem(), cert.pem()),
        );
        let crt = write(dir.path(), "client.crt", &cert.pem());
        // An OpenSSL-style key file with a parameters block before the key.
        let params =
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        let key_file = write(
            dir.path(),
            "client.key",
            &format!("{params}{}", key.serialize_pem()),
        );
        let tls = load("u", Some(&ca), Some(&crt), Some(&key_file)).unwrap();
        assert_eq!(tls.roots.len(), 2);
        assert_eq!(tls.roots[0], cert.der().to_vec());
        let pem = tls.identity_pem.unwrap();
        assert!(!pem.expose().contains("EC PARAMETERS"));
        assert!(pem.expose().starts_with("-----BEGIN CERTIFICATE-----\n"));
        let (label, der) = private_key(pem.expose().as_bytes()).unwrap();
        assert_eq!((label, der), ("PRIVATE KEY", key.serialize_der()));
        assert_eq!(
            format!("{:?}", UpstreamTls::default()),
            "UpstreamTls { roots: 0, identity_pem: None }"
        );
    }

    #[test]
    fn every_error_names_the_upstream_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let junk = write(dir.path(), "junk.pem", "not a certificate\n");
        let not_x509 = write(
            dir.path(),
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = error(load("reg", Some(&missing), None, None));
        assert!(
            e.contains("\"reg\": ca_file") && e.contains("cannot read"),
            "{e}"
        );
        let e = error(load("reg", Some(&junk), None, None));
        assert!(
            e.contains("ca_file") && e.contains("no certificate found"),
            "{e}"
        );
        let e = error(load("reg", Some(&not_x509), None, None));
        assert!(e.contains("ca_file") && e.contains("not X.509"), "{e}");
        let e = error(load("reg", None, Some(&junk), None));
        assert!(e.contains("go together"), "{e}");
        let key = write(
            dir.path(),
            "k.pem",
            &rcgen::KeyPair::generate().unwrap().serialize_pem(),
        );
        let e = error(load("reg", None, Some(&junk), Some(&key)));
        assert!(
            e.contains("client_certificate") && e.contains("junk.pem"),
            "{e}"
        );
        let cert = rcgen::generate_simple_self_signed(vec!["c".to_owned()]).unwrap();
        let crt = write(dir.path(), "c.crt", &cert.cert.pem());
        let e = error(load("reg", None, Some(&crt), Some(&crt)));
        assert!(
            e.contains("client_key") && e.contains("no private key"),
            "{e}"
        );
        let e = error(load("reg", None, Some(&crt), Some(&missing)));
        assert!(e.contains("client_key") && e.contains("cannot read"), "{e}");
    }
}

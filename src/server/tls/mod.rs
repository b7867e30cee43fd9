//! berth's own TLS listener: the rustls configuration (HTTP/2 and HTTP/1.1 through ALPN, which
//! actix adds), optional client certificates, and a certificate resolver whose key pair is
//! swapped in place on reload, so connections already open keep the session they negotiated
//! and only new handshakes see the new certificate.

mod client_ca;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest as _, Sha256};

pub use self::client_ca::ClientCa;
pub use self::reload::keep_fresh;
use crate::config::ServerSettings;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it")]
    NoKey { path: PathBuf },
    #[error("{cert} and {key} are not a usable pair: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("server.tls_client_ca {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

/// The files of the served key pair.
#[derive(Debug, Clone)]
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The listener's TLS: the configuration to listen with, and what reloads swap in it.
pub struct Tls {
    pub config: ServerConfig,
    pub resolver: Arc<CertResolver>,
    pub files: PairFiles,
    /// `server.tls_client_ca`, when client certificates are required.
    pub client_ca: Option<Arc<ClientCa>>,
}

impl Tls {
    /// The TLS of `server`, or `None` when berth speaks plain HTTP. Reads files: blocks.
    pub fn from_settings(server: &ServerSettings) -> Result<Option<Tls>, TlsError> {
        let (Some(cert), Some(key)) = (&server.tls_certificate, &server.tls_key) else {
            return Ok(None);
        };
        let files = PairFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let pair = load_pair(&files)?;
        tracing::info!(
            certificate = %files.cert.display(),
            sha256 = %fingerprint(&pair),
            "TLS certificate loaded"
        );
        let resolver = Arc::new(CertResolver::new(pair));
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let client_ca = server
            .tls_client_ca
            .as_deref()
            .map(|path| ClientCa::load(path, provider).map(Arc::new))
            .transpose()?;
        let builder = match &client_ca {
            Some(client_ca) => builder.with_client_cert_verifier(Arc::clone(client_ca) as _),
            None => builder.with_no_client_auth(),
        };
        let resolver_dyn: Arc<dyn ResolvesServerCert> = Arc::clone(&resolver) as _;
        let config = builder.with_cert_resolver(resolver_dyn);
        Ok(Some(Tls {
            config,
            resolver,
            files,
            client_ca,
        }))
    }
}

/// ring, the provider reqwest already links (no aws-lc-rs in the build).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Hands every handshake the current key pair; [`CertResolver::replace`] swaps it.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(pair: CertifiedKey) -> CertResolver {
        CertResolver {
            current: RwLock::new(Arc::new(pair)),
        }
    }

    /// From now on, new handshakes get `pair`.
    pub fn replace(&self, pair: CertifiedKey) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads the certificate chain and its key, and checks that they belong together. Blocks.
pub fn load_pair(files: &PairFiles) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(&files.cert)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key_pem = read(&files.key)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: files.key.clone(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: files.key.clone(),
        })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })
}

/// The SHA-256 of the leaf certificate, in hex: what `openssl x509 -fingerprint -sha256`
/// shows, for telling in the log which certificate is served.
pub fn fingerprint(pair: &CertifiedKey) -> String {
    pair.end_entity_cert()
        .map(|cert| hex::encode(Sha256::digest(cert.as_ref())))
        .unwrap_or_default()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::ClientCa {
            path: path.to_owned(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests;

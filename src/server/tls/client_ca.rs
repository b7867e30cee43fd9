//! Client certificates checked against `server.tls_client_ca`, re-read on reload like the key
//! pair: the verifier is swapped in place, so new handshakes are checked against the new CA
//! file while connections already open keep the session they negotiated.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{load_roots, TlsError};

#[derive(Debug)]
pub struct ClientCa {
    path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    /// The CAs named to clients in the handshake. rustls borrows them from the verifier for as
    /// long as it lives, so each distinct set loaded is kept for good: a few hundred bytes per
    /// changed CA file, which only the operator causes (a reload of the same CAs keeps none).
    hints: RwLock<&'static [DistinguishedName]>,
}

impl ClientCa {
    /// Reads the CA file. Blocks.
    pub fn load(path: &Path, provider: Arc<CryptoProvider>) -> Result<ClientCa, TlsError> {
        let verifier = verifier(path, &provider)?;
        let hints = kept(verifier.root_hint_subjects());
        Ok(ClientCa {
            path: path.to_owned(),
            provider,
            current: RwLock::new(verifier),
            hints: RwLock::new(hints),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the CA file again; new handshakes are checked against it. A file that does not
    /// load leaves the CA in use as it is. Blocks.
    pub fn reload(&self) -> Result<(), TlsError> {
        let verifier = verifier(&self.path, &self.provider)?;
        let mut hints = self.hints.write().unwrap_or_else(PoisonError::into_inner);
        let names = |hints: &[DistinguishedName]| -> Vec<Vec<u8>> {
            hints.iter().map(|name| name.as_ref().to_vec()).collect()
        };
        if names(*hints) != names(verifier.root_hint_subjects()) {
            *hints = kept(verifier.root_hint_subjects());
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = verifier;
        Ok(())
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// CA names kept for the rest of the process (see [`ClientCa::hints`]).
fn kept(hints: &[DistinguishedName]) -> &'static [DistinguishedName] {
    Box::leak(hints.to_vec().into_boxed_slice())
}

fn verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = Arc::new(load_roots(path)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(provider))
        .build()
        .map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(verifier)
}

impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        *self.hints.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

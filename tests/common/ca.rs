//! A private certificate authority for berth's own TLS: a CA, server certificates it signs for
//! 127.0.0.1 and localhost, client certificates, and clients (reqwest) that trust only it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A key pair and its certificate, both PEM, and the certificate's DER SHA-256.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as PEM, in `dir`.
    pub ca_file: PathBuf,
    /// Where berth's `tls_certificate` and `tls_key` point.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Ca {
    /// A fresh CA named `name`, with a first server pair installed.
    pub fn new(name: &str) -> (Ca, Issued) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("berth test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        let ca = Ca {
            cert,
            key,
            ca_file,
            cert_file: dir.path().join("tls/berth.crt"),
            key_file: dir.path().join("tls/berth.key"),
            dir,
        };
        std::fs::create_dir_all(dir_of(&ca.cert_file)).unwrap();
        let first = ca.server();
        ca.install(&first.cert_pem, &first.key_pem);
        (ca, first)
    }

    /// A server certificate for 127.0.0.1 and localhost, with a new key.
    pub fn server(&self) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into().unwrap()),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate (for `server.tls_client_ca`).
    pub fn client(&self, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: super::images::sha256(cert.der())
                .trim_start_matches("sha256:")
                .to_owned(),
        }
    }

    /// Writes the pair berth serves, each file replaced atomically (as certbot or a Kubernetes
    /// secret update does), key first.
    pub fn install(&self, cert_pem: &str, key_pem: &str) {
        replace(&self.key_file, key_pem);
        replace(&self.cert_file, cert_pem);
    }

    /// `[server]` lines that make berth serve this CA's pair.
    pub fn server_config(&self) -> String {
        format!(
            "tls_certificate = \"{}\"\ntls_key = \"{}\"\n",
            self.cert_file.display(),
            self.key_file.display()
        )
    }

    /// A directory holding only `ca.crt`: what podman's and skopeo's `--cert-dir` take.
    pub fn cert_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("certs.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&self.ca_file, dir.join("ca.crt")).unwrap();
        dir
    }

    /// A reqwest client that trusts only this CA, reports the peer certificate, and opens a
    /// connection of its own (build one per connection wanted).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .tls_info(true)
    }
}

fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap()
}

fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// The SHA-256 (hex) of the certificate the server presented on `response`'s connection.
pub fn served_fingerprint(response: &reqwest::Response) -> String {
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("the client was built with tls_info(true)");
    let der = info.peer_certificate().expect("a peer certificate");
    super::images::sha256(der)
        .trim_start_matches("sha256:")
        .to_owned()
}

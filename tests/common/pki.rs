//! A private certificate authority made with rcgen, and the files a TLS server, its clients
//! and berth read: a CA no public root store knows, as a company's internal registry has.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub struct PrivateCa {
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl PrivateCa {
    pub fn generate(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        PrivateCa { key, cert }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA certificate to `dir/<file>`.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// A server certificate for 127.0.0.1 and localhost, written as `dir/<stem>.crt|.key`.
    pub fn server(&self, dir: &Path, stem: &str) -> Issued {
        self.issue(
            dir,
            stem,
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate (for mutual TLS) named `name`, written as `dir/<stem>.crt|.key`.
    pub fn client(&self, dir: &Path, stem: &str, name: &str) -> Issued {
        self.issue(
            dir,
            stem,
            vec![name.to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(&issued.cert, &issued.cert_pem).unwrap();
        std::fs::write(&issued.key, &issued.key_pem).unwrap();
        issued
    }
}

/// TLS for a test server (the upstream registry): its certificate from a private CA and,
/// with `client_ca`, the CA whose client certificates it requires. `client` is what the test
/// itself presents when it seeds the server.
pub struct ServeTls {
    pub ca_pem: String,
    pub server: Issued,
    pub client_ca: Option<PathBuf>,
    pub client: Option<Issued>,
}

impl ServeTls {
    /// The `http.tls` section of a Distribution configuration (indented under `http:`).
    pub fn registry_yaml(&self) -> String {
        let mut yaml = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            self.server.cert.display(),
            self.server.key.display()
        );
        if let Some(ca) = &self.client_ca {
            yaml.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
        }
        yaml
    }

    /// A client that trusts the private CA (and only public roots besides) and presents the
    /// client certificate, if any.
    pub fn http_client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap());
        if let Some(client) = &self.client {
            let pem = format!("{}{}", client.cert_pem, client.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

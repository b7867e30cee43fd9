//! The HTTP client of one upstream: timeouts, and the TLS trust configured for it (extra roots
//! from `ca_file` on top of the public ones, a client certificate, or, with `insecure`, none).

use super::error::SetupError;
use crate::config::UpstreamSettings;

pub fn http_client(settings: &UpstreamSettings) -> Result<reqwest::Client, SetupError> {
    let failed = |what: &str, source| SetupError::Tls {
        upstream: settings.name.clone(),
        what: what.to_owned(),
        source,
    };
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
    for der in &settings.tls.roots {
        let root = reqwest::Certificate::from_der(der).map_err(|e| failed("ca_file", e))?;
        builder = builder.add_root_certificate(root);
    }
    if let Some(pem) = &settings.tls.identity_pem {
        let identity = reqwest::Identity::from_pem(pem.expose().as_bytes())
            .map_err(|e| failed("client_certificate / client_key", e))?;
        builder = builder.identity(identity);
    }
    if settings.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    let configured: Vec<&str> = [
        ("ca_file", settings.ca_file.is_some()),
        ("client_certificate", settings.client_certificate.is_some()),
        ("client_key", settings.client_key.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    builder.build().map_err(|source| {
        if configured.is_empty() {
            SetupError::Client {
                upstream: settings.name.clone(),
                source,
            }
        } else {
            // rustls checks the material as a whole here (a key that does not match its
            // certificate): name what was configured.
            failed(&configured.join(" / "), source)
        }
    })
}

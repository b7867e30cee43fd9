//! What berth tells the operator at start: one line that sums up how it runs, and a warning
//! when the token realm it hands out would be `http://` while clients may reach it through a
//! proxy it does not trust (dockerd then fails its mirror pull on the realm and silently falls
//! back to Docker Hub).

use std::net::SocketAddr;

use crate::config::{ServerSettings, Settings};

/// The one summary line: listen address and scheme, external URL, upstreams, auth mode,
/// storage, offline.
pub fn log_summary(settings: &Settings, addr: SocketAddr) {
    let scheme = if settings.server.tls_enabled() {
        "https"
    } else {
        "http"
    };
    let upstreams = settings
        .upstreams
        .iter()
        .map(|u| format!("{}={}", u.name, u.url))
        .collect::<Vec<_>>()
        .join(", ");
    let auth = match &settings.auth {
        None => "open mirror".to_owned(),
        Some(_) => {
            let projects = settings
                .projects
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>();
            format!("token service, projects: [{}]", projects.join(", "))
        }
    };
    let storage = match &settings.storage.s3 {
        Some(s3) => format!(
            "s3 {} bucket {} (local {})",
            s3.endpoint,
            s3.bucket,
            settings.storage.data_dir.display()
        ),
        None => format!("local {}", settings.storage.data_dir.display()),
    };
    let external = settings
        .server
        .external_url
        .as_ref()
        .map_or_else(|| "(from each request)".to_owned(), |u| u.to_string());
    tracing::info!(
        listen = %format!("{scheme}://{addr}"),
        external_url = %external,
        upstreams = %upstreams,
        auth = %auth,
        storage = %storage,
        offline = settings.mirror.offline,
        client_certificates = settings.server.tls_client_ca.is_some(),
        "berth serving"
    );
}

/// Why the realm could come out `http://` for clients behind a TLS proxy, if it could.
pub fn plain_realm_risk(server: &ServerSettings) -> Option<&'static str> {
    if server.tls_enabled() {
        return server
            .external_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "http")
            .then_some("server.external_url is http:// although berth serves TLS itself");
    }
    let proxied = server.external_url.is_none()
        && server.trusted_proxies.is_empty()
        && !server.listen.ip().is_loopback();
    proxied.then_some(
        "the token realm will be http:// (no server.tls_certificate, no server.external_url, no server.trusted_proxies) while berth listens beyond loopback: clients that reach berth through a TLS proxy are sent to an http:// realm, and dockerd then fails its mirror pull and silently falls back to Docker Hub. Serve TLS (server.tls_certificate/tls_key), set server.external_url, or list the proxy in server.trusted_proxies",
    )
}

/// Logs [`plain_realm_risk`] as a warning.
pub fn warn_plain_realm(server: &ServerSettings) {
    if let Some(risk) = plain_realm_risk(server) {
        tracing::warn!("{risk}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(extra: serde_json::Value) -> ServerSettings {
        let mut value = serde_json::json!({"listen": "0.0.0.0:5000", "workers": 1});
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_realm_risk_is_named_only_where_it_exists() {
        assert!(plain_realm_risk(&server(serde_json::json!({}))).is_some());
        for safe in [
            serde_json::json!({"listen": "127.0.0.1:5000"}),
            serde_json::json!({"listen": "[::1]:5000"}),
            serde_json::json!({"external_url": "https://registry.example"}),
            serde_json::json!({"trusted_proxies": ["10.0.0.1"]}),
            serde_json::json!({"tls_certificate": "a.crt", "tls_key": "a.key"}),
        ] {
            assert!(plain_realm_risk(&server(safe.clone())).is_none(), "{safe}");
        }
        let contradictory = serde_json::json!({
            "tls_certificate": "a.crt",
            "tls_key": "a.key",
            "external_url": "http://registry.example",
        });
        assert!(plain_realm_risk(&server(contradictory)).is_some());
    }
}

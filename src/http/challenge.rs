//! The `WWW-Authenticate: Bearer …` challenge, and the externally visible base URL its realm
//! (berth's `/token`) is built on.
//!
//! Clients follow the realm blindly and send their credentials there, so it must not be
//! steerable by whoever sends the request: `X-Forwarded-Proto`/`X-Forwarded-Host` are believed
//! only from a configured trusted proxy (by TCP peer address), and the configured
//! `external_url` beats everything. actix's `connection_info()` trusts those headers from
//! anyone, which is why it is not used here.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::HttpRequest;
use ipnet::IpNet;

use crate::config::ServerSettings;

/// The base URL clients reach berth at, without a trailing `/`.
pub fn external_base(req: &HttpRequest, server: &ServerSettings) -> String {
    if let Some(base) = server.external_base() {
        return base.to_owned();
    }
    let trusted = req
        .peer_addr()
        .is_some_and(|peer| is_trusted(peer.ip(), &server.trusted_proxies));
    let forwarded = |name: &str| -> Option<&str> {
        if !trusted {
            return None;
        }
        // With several proxies, the first value is what the client used.
        let value = req.headers().get(name)?.to_str().ok()?;
        Some(value.split(',').next()?.trim()).filter(|v| !v.is_empty())
    };
    // With berth's own TLS every URL is https://, whatever a proxy claims: whoever reached
    // this listener spoke TLS to it.
    let scheme = if server.tls_enabled() || req.app_config().secure() {
        "https".to_owned()
    } else {
        forwarded("x-forwarded-proto")
            .map(str::to_ascii_lowercase)
            .filter(|s| s == "http" || s == "https")
            .unwrap_or_else(|| "http".to_owned())
    };
    let host = forwarded("x-forwarded-host")
        .filter(|h| is_valid_host(h))
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| is_valid_host(h))
        })
        .or_else(|| {
            // HTTP/2 carries the host as the `:authority` pseudo-header.
            req.uri()
                .authority()
                .map(|a| a.as_str())
                .filter(|h| is_valid_host(h))
        })
        .unwrap_or_else(|| req.app_config().host());
    format!("{scheme}://{host}")
}

/// A host (name, IPv4 or bracketed IPv6) with an optional port: nothing that could escape the
/// quoted realm or point it at a path.
fn is_valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Whether `peer` falls in one of the `trusted` blocks.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// `Bearer realm="<base>/token",service="<service>"[,scope="<scope>"][,error="insufficient_scope"]`.
/// `scope` is one or more space-separated scopes.
pub fn bearer_challenge(
    base: &str,
    service: &str,
    scope: Option<&str>,
    insufficient: bool,
) -> String {
    let mut challenge = format!(
        "Bearer realm=\"{}/token\",service=\"{}\"",
        quote(base.trim_end_matches('/')),
        quote(service)
    );
    if let Some(scope) = scope {
        challenge.push_str(&format!(",scope=\"{}\"", quote(scope)));
    }
    if insufficient {
        challenge.push_str(",error=\"insufficient_scope\"");
    }
    challenge
}

/// The inside of an RFC 7230 quoted-string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        // Control characters cannot appear in a header value at all.
        if !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_net;
    use actix_web::test::TestRequest;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn server(external_url: Option<&str>, trusted: &[&str]) -> ServerSettings {
        ServerSettings {
            listen: "127.0.0.1:5000".parse().unwrap(),
            workers: 1,
            external_url: external_url.map(|url| url.parse().unwrap()),
            trusted_proxies: trusted.iter().map(|s| parse_net(s).unwrap()).collect(),
            read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            health_listen: None,
            tls_certificate: None,
            tls_key: None,
            tls_client_ca: None,
            metrics_listen: None,
            shutdown_timeout: Duration::from_secs(30),
            admin_socket: None,
        }
    }

    fn request(peer: &str) -> TestRequest {
        TestRequest::default()
            .peer_addr(peer.parse::<SocketAddr>().unwrap())
            .insert_header(("Host", "berth.internal:5000"))
            .insert_header(("X-Forwarded-Proto", "https"))
            .insert_header(("X-Forwarded-Host", "registry.example.com, proxy.local"))
    }

    #[test]
    fn external_url_wins() {
        let req = request("10.1.2.3:4444").to_http_request();
        let settings = server(Some("https://registry.example/"), &["10.0.0.0/8"]);
        assert_eq!(external_base(&req, &settings), "https://registry.example");
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let settings = server(None, &["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        for peer in [
            "10.1.2.3:4444",
            "127.0.0.1:1",
            "[::1]:1",
            "[::ffff:10.9.9.9]:1",
        ] {
            let req = request(peer).to_http_request();
            assert_eq!(
                external_base(&req, &settings),
                "https://registry.example.com",
                "{peer}"
            );
        }
        for peer in ["192.168.1.5:4444", "11.0.0.1:1", "127.0.0.2:1", "[::2]:1"] {
            let req = request(peer).to_http_request();
            assert_eq!(
                external_base(&req, &settings),
                "http://berth.internal:5000",
                "{peer}"
            );
        }
        // No trusted proxies configured: headers never count.
        let req = request("127.0.0.1:1").to_http_request();
        assert_eq!(
            external_base(&req, &server(None, &[])),
            "http://berth.internal:5000"
        );
    }

    #[test]
    fn own_tls_makes_every_base_https() {
        let mut settings = server(None, &["127.0.0.1"]);
        settings.tls_certificate = Some("tls.crt".into());
        settings.tls_key = Some("tls.key".into());
        let plain = TestRequest::default()
            .insert_header(("Host", "berth.internal:5000"))
            .to_http_request();
        assert_eq!(
            external_base(&plain, &settings),
            "https://berth.internal:5000"
        );
        // A trusted proxy's X-Forwarded-Proto cannot turn it back into http://.
        let forwarded = TestRequest::default()
            .peer_addr("127.0.0.1:1".parse().unwrap())
            .insert_header(("Host", "berth.internal:5000"))
            .insert_header(("X-Forwarded-Proto", "http"))
            .to_http_request();
        assert_eq!(
            external_base(&forwarded, &settings),
            "https://berth.internal:5000"
        );
    }

    #[test]
    fn hostile_host_values_are_not_used() {
        let settings = server(None, &["127.0.0.1"]);
        let req = TestRequest::default()
            .peer_addr("127.0.0.1:1".parse().unwrap())
            .insert_header(("Host", "berth.internal"))
            .insert_header(("X-Forwarded-Proto", "javascript"))
            .insert_header(("X-Forwarded-Host", "evil.example/\"x"))
            .to_http_request();
        assert_eq!(external_base(&req, &settings), "http://berth.internal");
        let req = TestRequest::default()
            .insert_header(("Host", "a\"b"))
            .to_http_request();
        // Falls back to the server's own idea of its host.
        assert_eq!(
            external_base(&req, &server(None, &[])),
            format!("http://{}", req.app_config().host())
        );
    }

    #[test]
    fn trusted_blocks() {
        let trusted = |entry: &str, peer: &str| {
            is_trusted(peer.parse().unwrap(), &[parse_net(entry).unwrap()])
        };
        assert!(trusted("10.0.0.0/8", "10.255.0.1"));
        assert!(!trusted("10.0.0.0/8", "11.0.0.1"));
        assert!(!trusted("10.0.0.0/8", "::1"));
        assert!(trusted("10.0.0.0/8", "::ffff:10.1.1.1"));
        assert!(trusted("0.0.0.0/0", "8.8.8.8"));
        assert!(trusted("fd00::/8", "fd12:3456::1"));
        assert!(!trusted("fd00::/8", "fe80::1"));
        // Host bits in the entry do not narrow it.
        assert!(trusted("10.1.2.3/8", "10.9.9.9"));
        assert!(trusted(" 192.168.0.7 ", "192.168.0.7"));
        assert!(!trusted("192.168.0.7", "192.168.0.8"));
        assert_eq!(
            parse_net("192.168.0.7").unwrap().to_string(),
            "192.168.0.7/32"
        );
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "host/8",
            "10.0.0/8",
            "nope",
        ] {
            assert!(parse_net(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn challenges() {
        assert_eq!(
            bearer_challenge("https://r.example/", "berth", None, false),
            r#"Bearer realm="https://r.example/token",service="berth""#
        );
        assert_eq!(
            bearer_challenge(
                "https://r.example",
                "berth",
                Some("repository:team/app:pull,push"),
                false
            ),
            r#"Bearer realm="https://r.example/token",service="berth",scope="repository:team/app:pull,push""#
        );
        assert_eq!(
            bearer_challenge(
                "http://localhost:5000",
                "berth",
                Some("repository:a:pull repository:b:pull"),
                true
            ),
            r#"Bearer realm="http://localhost:5000/token",service="berth",scope="repository:a:pull repository:b:pull",error="insufficient_scope""#
        );
        assert_eq!(
            bearer_challenge("http://x", "a\"b", None, false),
            r#"Bearer realm="http://x/token",service="a\"b""#
        );
    }
}

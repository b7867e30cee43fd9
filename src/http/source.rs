//! The address a request comes from, for per-client limits (the login throttle).
//!
//! The TCP peer, unless it is one of `server.trusted_proxies`: then `X-Forwarded-For` is read
//! from the right (each proxy appends the address it saw), skipping trusted proxies, and the
//! first address that is not one is the client. Anyone else's `X-Forwarded-For` is ignored, or
//! a guesser could name a new address with every attempt.

use std::net::{IpAddr, SocketAddr};

use actix_web::{web, HttpRequest};
use ipnet::IpNet;

use super::challenge::is_trusted;
use crate::config::ServerSettings;

pub fn client_address(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let trusted = req
        .app_data::<web::Data<ServerSettings>>()
        .map(|server| server.trusted_proxies.as_slice())
        .unwrap_or_default();
    Some(forwarded_client(peer, trusted, req.headers()))
}

fn forwarded_client(
    peer: IpAddr,
    trusted: &[IpNet],
    headers: &actix_web::http::header::HeaderMap,
) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // What cannot be read ends the walk: the last trusted hop is all that is known.
        let Some(address) = parse_hop(hop) else {
            break;
        };
        client = address;
        if !is_trusted(address, trusted) {
            break;
        }
    }
    client
}

/// `192.0.2.1`, `2001:db8::1`, or either with a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn client(peer: &str, trusted: &[&str], values: &[&str]) -> String {
        let trusted: Vec<IpNet> = trusted
            .iter()
            .map(|s| crate::config::parse_net(s).unwrap())
            .collect();
        forwarded_client(peer.parse().unwrap(), &trusted, &headers(values)).to_string()
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        // An untrusted peer names itself, whatever it claims.
        assert_eq!(client("198.51.100.9", &[], &["192.0.2.1"]), "198.51.100.9");
        assert_eq!(
            client("198.51.100.9", &["10.0.0.0/8"], &["192.0.2.1"]),
            "198.51.100.9"
        );
        // One trusted proxy: the address it saw.
        assert_eq!(
            client("10.0.0.2", &["10.0.0.0/8"], &["192.0.2.1"]),
            "192.0.2.1"
        );
        // A client's forged entry sits left of what the trusted proxy appended.
        assert_eq!(
            client("10.0.0.2", &["10.0.0.0/8"], &["1.2.3.4, 192.0.2.1"]),
            "192.0.2.1"
        );
        // Two trusted proxies, the header split over two lines.
        assert_eq!(
            client("10.0.0.2", &["10.0.0.0/8"], &["192.0.2.1", "10.0.0.7"]),
            "192.0.2.1"
        );
        assert_eq!(
            client("::1", &["::1"], &["[2001:db8::5]:4711"]),
            "2001:db8::5"
        );
        // Nothing usable: the proxy itself.
        assert_eq!(client("10.0.0.2", &["10.0.0.0/8"], &[]), "10.0.0.2");
        assert_eq!(client("10.0.0.2", &["10.0.0.0/8"], &["junk"]), "10.0.0.2");
        assert_eq!(
            client("10.0.0.2", &["10.0.0.0/8"], &["192.0.2.1, junk"]),
            "10.0.0.2"
        );
    }
}

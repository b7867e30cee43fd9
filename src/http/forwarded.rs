//! Noticing `X-Forwarded-Proto` from a peer that is not a trusted proxy: berth ignores the
//! header (see [`super::challenge`]), so behind such a proxy the token realm it builds names
//! its own scheme and host, usually `http://`, and dockerd's mirror pull fails on it and falls
//! back to Docker Hub without a word. Said once per peer address, for a bounded number of
//! addresses, so a busy proxy does not flood the log.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use actix_web::http::header::HeaderMap;

use super::challenge::is_trusted;
use crate::config::ServerSettings;

/// Peer addresses remembered; past that, new ones go unreported.
const MAX_PEERS: usize = 1024;

#[derive(Debug, Default)]
pub struct UntrustedForwarders {
    warned: Mutex<HashSet<IpAddr>>,
}

impl UntrustedForwarders {
    /// Warns if the request from `peer` carries `X-Forwarded-Proto` that berth does not believe
    /// and that would have mattered (no `external_url` names the realm).
    pub fn check(&self, peer: Option<SocketAddr>, headers: &HeaderMap, server: &ServerSettings) {
        let Some(proto) = headers.get("x-forwarded-proto") else {
            return;
        };
        let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
            return;
        };
        if server.external_url.is_some() || is_trusted(peer, &server.trusted_proxies) {
            return;
        }
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.len() >= MAX_PEERS || !warned.insert(peer) {
            return;
        }
        let last = warned.len() == MAX_PEERS;
        drop(warned);
        tracing::warn!(
            %peer,
            x_forwarded_proto = %String::from_utf8_lossy(proto.as_bytes()),
            "a request carries X-Forwarded-Proto from a peer not in server.trusted_proxies: the header is ignored, so the token realm and Locations name berth's own scheme and host. If this is your proxy, add it to server.trusted_proxies or set server.external_url (dockerd silently falls back to Docker Hub on an http:// realm){}",
            if last { "; further peers are not reported" } else { "" }
        );
    }

    #[cfg(test)]
    fn warned(&self) -> usize {
        self.warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("https"),
        );
        headers
    }

    fn server(trusted: &[&str]) -> ServerSettings {
        serde_json::from_value(serde_json::json!({
            "listen": "127.0.0.1:5000",
            "workers": 1,
            "trusted_proxies": trusted,
        }))
        .unwrap()
    }

    #[test]
    fn each_untrusted_peer_is_noted_once_and_the_set_stays_bounded() {
        let seen = UntrustedForwarders::default();
        let settings = server(&["10.0.0.0/8"]);
        let peer = |n: u32| Some(SocketAddr::from((std::net::Ipv4Addr::from(n), 4000)));
        seen.check(peer(0x0a00_0001), &headers(), &settings);
        assert_eq!(seen.warned(), 0, "a trusted proxy was reported");
        seen.check(peer(0xc0a8_0001), &HeaderMap::new(), &settings);
        assert_eq!(
            seen.warned(),
            0,
            "a request without the header was reported"
        );
        seen.check(peer(0xc0a8_0001), &headers(), &settings);
        seen.check(peer(0xc0a8_0001), &headers(), &settings);
        assert_eq!(seen.warned(), 1);
        for n in 0..(2 * MAX_PEERS as u32) {
            seen.check(peer(0xc0a9_0000 + n), &headers(), &settings);
        }
        assert_eq!(seen.warned(), MAX_PEERS);
    }
}

//! What can go wrong talking to an upstream registry, with the predicates the cache decides on.

use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} is unreachable: {source}")]
    Unreachable {
        upstream: String,
        #[source]
        source: Arc<reqwest::Error>,
    },
    #[error("upstream {upstream} did not answer in time")]
    Timeout { upstream: String },
    #[error("upstream {upstream} has no {what}{}", reason_suffix(.reason))]
    NotFound {
        upstream: String,
        what: String,
        reason: String,
    },
    #[error("upstream {upstream} refused access{}", reason_suffix(.reason))]
    Unauthorized { upstream: String, reason: String },
    /// The upstream's token service refused to issue a token. Says nothing about one
    /// repository: for berth's own identity it is trouble at the token service, for a client's
    /// credentials a wrong password.
    #[error("the token service of upstream {upstream} refused{}", reason_suffix(.reason))]
    TokenRefused { upstream: String, reason: String },
    #[error("upstream {upstream} is rate-limiting requests (429){}", reason_suffix(.reason))]
    TooManyRequests {
        upstream: String,
        retry_after: Option<Duration>,
        reason: String,
    },
    #[error("upstream {upstream} failed with HTTP {status}{}", reason_suffix(.reason))]
    Status {
        upstream: String,
        status: u16,
        retry_after: Option<Duration>,
        reason: String,
    },
    #[error("upstream {upstream} is offline (configured); only cached content is served")]
    Offline { upstream: String },
    /// Failing requests in a row made berth stop waiting for it; a probe checks it again soon.
    #[error("upstream {upstream} is down (recent requests failed); trying again in {}s", .retry_after.as_secs())]
    Down {
        upstream: String,
        retry_after: Duration,
    },
    #[error("upstream {upstream} broke the protocol: {detail}")]
    Protocol { upstream: String, detail: String },
}

/// Why an upstream from the configuration cannot be set up (at start, never per request).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("upstream {upstream}: bad url {url:?}: {source}")]
    Url {
        upstream: String,
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("upstream {upstream}: cannot build its HTTP client: {source}")]
    Client {
        upstream: String,
        #[source]
        source: reqwest::Error,
    },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl UpstreamError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::NotFound { .. })
    }

    /// Faults that may pass (network, overload, a token service in trouble): the cache may
    /// serve stale content instead, and nothing is concluded about a repository from them.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::TokenRefused { .. }
            | UpstreamError::Down { .. }
            | UpstreamError::TooManyRequests { .. } => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::TooManyRequests { retry_after, .. }
            | UpstreamError::Status { retry_after, .. } => *retry_after,
            UpstreamError::Down { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(upstream: &str, source: reqwest::Error) -> Self {
        if source.is_timeout() {
            UpstreamError::Timeout {
                upstream: upstream.to_owned(),
            }
        } else {
            UpstreamError::Unreachable {
                upstream: upstream.to_owned(),
                source: Arc::new(source),
            }
        }
    }

    pub(crate) fn protocol(upstream: &str, detail: impl Into<String>) -> Self {
        UpstreamError::Protocol {
            upstream: upstream.to_owned(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::time::Duration;

    use super::SetupError;
    use crate::config::UpstreamSettings;
    use crate::upstream::Upstreams;

    #[test]
    fn a_bad_upstream_url_keeps_its_parse_error() {
        let settings = UpstreamSettings {
            name: "docker.io".into(),
            url: "not a url".into(),
            tag_ttl: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            max_stale: Duration::from_secs(1),
            offline: false,
            not_found_ttl: Duration::from_secs(1),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            username: None,
            password: None,
            password_file: None,
        };
        let Err(err) = Upstreams::new(&[settings], false, &crate::clock::Clock::system()) else {
            panic!("a bad url was accepted");
        };
        assert!(
            matches!(&err, SetupError::Url { upstream, .. } if upstream == "docker.io"),
            "{err:?}"
        );
        let source = err.source().expect("the url error is kept");
        assert!(source.downcast_ref::<url::ParseError>().is_some());
    }
}

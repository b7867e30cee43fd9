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
    /// Every one of the upstream's `max_concurrent_requests` slots stayed taken for as long
    /// as the request could wait. Says nothing about upstream's health.
    #[error("upstream {upstream}: all {limit} request slots (max_concurrent_requests) stayed busy for {}s", .waited.as_secs_f32())]
    Busy {
        upstream: String,
        limit: usize,
        waited: Duration,
    },
    #[error("upstream {upstream} broke the protocol: {detail}")]
    Protocol { upstream: String, detail: String },
}

/// Why an upstream from the configuration cannot be set up (at start, never per request).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("upstream {upstream}: cannot build its HTTP client: {}", chain(.source))]
    Client {
        upstream: String,
        #[source]
        source: reqwest::Error,
    },
    /// The TLS material was read at load, but the TLS library refuses it (a key that does not
    /// match its certificate, an unsupported key type). Shows the whole chain: reqwest's own
    /// message is only "builder error".
    #[error("upstream {upstream}: {what} not usable: {}", chain(.source))]
    Tls {
        upstream: String,
        what: String,
        #[source]
        source: reqwest::Error,
    },
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
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
            | UpstreamError::Busy { .. }
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

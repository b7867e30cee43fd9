//! Reading upstream's answers: bounded bodies, error reasons, `Retry-After`, `Link`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use url::Url;

use super::error::UpstreamError;

/// Error bodies are only read for their message.
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;

/// A whole response body, refused once it passes `limit` bytes.
pub(crate) async fn read_limited(
    upstream: &str,
    response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Bytes, UpstreamError> {
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::from_reqwest(upstream, e))?;
        if body.len() + chunk.len() > limit {
            return Err(UpstreamError::protocol(
                upstream,
                format!("{what} is larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

pub(super) fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `Retry-After` in its delta-seconds form (the form registries use).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_string(headers, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The message of a registry JSON error body, or the start of a plain-text one.
pub(crate) async fn error_reason(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(&body) {
        return parsed
            .errors
            .iter()
            .map(|e| format!("{} {}", e.code, e.message).trim().to_owned())
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(&body);
    text.chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_owned()
}

pub(crate) async fn status_error(
    upstream: &str,
    response: reqwest::Response,
    what: &str,
) -> UpstreamError {
    let status = response.status().as_u16();
    let retry = retry_after(response.headers());
    let reason = error_reason(response).await;
    if status == 429 {
        UpstreamError::TooManyRequests {
            upstream: upstream.to_owned(),
            retry_after: retry,
            reason,
        }
    } else {
        UpstreamError::Status {
            upstream: upstream.to_owned(),
            status,
            retry_after: retry,
            reason: if reason.is_empty() {
                what.to_owned()
            } else {
                format!("{what}: {reason}")
            },
        }
    }
}

/// The query pairs of a `Link: <url>; rel="next"` header.
pub(super) fn next_link_query(link: &str) -> Option<Vec<(String, String)>> {
    let (target, params) = link.split_once(';')?;
    if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
        return None;
    }
    let target = target.trim().trim_start_matches('<').trim_end_matches('>');
    let url = Url::parse("http://upstream.invalid/")
        .ok()?
        .join(target)
        .ok()?;
    Some(url.query_pairs().into_owned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_parsed() {
        let q = next_link_query(r#"</v2/library/x/tags/list?last=b&n=2>; rel="next""#).unwrap();
        assert_eq!(
            q,
            vec![
                ("last".to_string(), "b".to_string()),
                ("n".to_string(), "2".to_string())
            ]
        );
        assert!(next_link_query(r#"</v2/x>; rel="prev""#).is_none());
    }

    /// A referrers page's link, with an opaque cursor and a digest in its query, as Harbor and
    /// zot write them: the query comes back decoded, to be sent again.
    #[test]
    fn a_referrers_next_link_keeps_its_query() {
        let link = r#"</v2/library/x/referrers/sha256:ab?last=sha256%3Acd&n=100>; rel="next""#;
        assert_eq!(
            next_link_query(link).unwrap(),
            vec![
                ("last".to_string(), "sha256:cd".to_string()),
                ("n".to_string(), "100".to_string())
            ]
        );
    }
}

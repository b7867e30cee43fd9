//! Request bodies that stall are cut off.
//!
//! actix drops a client that is slow to send its request *headers* (`client_request_timeout`),
//! but waits for a body forever: a thousand clients that announce a body and never send it hold
//! a thousand connections (and file descriptors) for good. Every request's body is read here
//! with a limit on the silence before each chunk; past it the read fails, the handler answers
//! with an error, and actix closes a connection whose body was not read to its end.

use std::io;
use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::HttpMessage;
use futures_util::StreamExt;

/// Makes `req`'s body fail once no chunk has arrived for `limit`.
pub fn limit_silence(req: &mut ServiceRequest, limit: Duration) {
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        return;
    }
    let chunks = futures_util::stream::unfold(Some(payload), move |payload| async move {
        let mut payload = payload?;
        match tokio::time::timeout(limit, payload.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(payload))),
            Ok(None) => None,
            // The body ends with the error; the connection goes with it.
            Err(_) => Some((
                Err(PayloadError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no request body received for {}s", limit.as_secs_f32()),
                ))),
                None,
            )),
        }
    });
    req.set_payload(Payload::Stream {
        payload: Box::pin(chunks),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use bytes::Bytes;

    #[actix_rt::test]
    async fn a_silent_body_fails_and_a_flowing_one_does_not() {
        // A body that sends one chunk and then nothing.
        let stalling = futures_util::stream::once(async {
            Ok::<_, PayloadError>(Bytes::from_static(b"grant_type="))
        })
        .chain(futures_util::stream::pending());
        let mut req = TestRequest::post().to_srv_request();
        req.set_payload(Payload::Stream {
            payload: Box::pin(stalling),
        });
        limit_silence(&mut req, Duration::from_millis(100));
        let mut body = req.take_payload();
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(first, Bytes::from_static(b"grant_type="));
        let stalled = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("the stalled body was waited for past the limit");
        assert!(matches!(stalled, Some(Err(PayloadError::Io(_)))));
        assert!(
            body.next().await.is_none(),
            "the body goes on after the error"
        );

        let mut req = TestRequest::post()
            .set_payload(Bytes::from_static(b"whole"))
            .to_srv_request();
        limit_silence(&mut req, Duration::from_millis(100));
        let mut body = req.take_payload();
        assert_eq!(body.next().await.unwrap().unwrap(), "whole");
        assert!(body.next().await.is_none());
    }
}

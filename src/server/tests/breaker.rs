//! The upstream breaker, through the app: it opens after `breaker_threshold` failures in a
//! row, fails fast (cached tags are served stale at once), and one probe after the cool-down
//! closes it.

use std::time::Duration;

use actix_web::http::StatusCode;

use super::test_app;
use crate::upstream::fake::Op;

const COOLDOWN: Duration = Duration::from_secs(30);

#[actix_web::test]
async fn the_breaker_opens_after_the_threshold_and_a_probe_closes_it() {
    let app = test_app(|s| {
        s.upstreams[0].breaker_threshold = 3;
        s.upstreams[0].breaker_cooldown = COOLDOWN;
        s.upstreams[0].tag_ttl = Duration::from_secs(10);
    })
    .await;
    let hub = app.hub();
    let cached = hub.put_image("library/cached", "v1", "cached");
    assert_eq!(
        app.get("/v2/library/cached/manifests/v1").await.status,
        StatusCode::OK
    );

    hub.fail(Op::GetManifest, hub.timeout());
    for _ in 0..3 {
        let reply = app.get("/v2/library/cold/manifests/v1").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(hub.calls(Op::GetManifest), 4);

    // Open: failed at once, without asking, with a Retry-After.
    let reply = app.get("/v2/library/cold/manifests/v1").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "UNAVAILABLE");
    assert_eq!(reply.header("retry-after"), Some("30"));
    assert_eq!(hub.calls(Op::GetManifest), 4);
    // A cached tag past its TTL is served stale at once, without a HEAD.
    app.advance(Duration::from_secs(11));
    let reply = app.get("/v2/library/cached/manifests/v1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body(), &cached.manifest[..]);
    assert!(reply.header("warning").is_some());
    assert_eq!(hub.calls(Op::HeadManifest), 0);

    // After the cool-down one request probes; its success closes the breaker.
    hub.heal();
    let cold = hub.put_image("library/cold", "v1", "cold");
    app.advance(COOLDOWN);
    let reply = app.get("/v2/library/cold/manifests/v1").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body(), &cold.manifest[..]);
    let reply = app.get("/v2/library/cached/manifests/v1").await;
    assert!(reply.header("warning").is_none());
    assert_eq!(hub.calls(Op::HeadManifest), 1);
}

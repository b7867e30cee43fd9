//! Manifests by tag: the TTL, revalidation with a HEAD, stale serving, dropped tags, digests
//! that do not match, and one upstream GET for concurrent requests.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;

use super::{metric, read, test_app, together, until_called};
use crate::oci::media;
use crate::oci::{Digest, Tag};
use crate::upstream::fake::Op;

const TAG: &str = "/v2/library/app/manifests/v1";
const TTL: Duration = Duration::from_secs(300);

fn tag(app: &super::TestApp) -> Option<Digest> {
    let repo = "library/app".parse().unwrap();
    let tag: Tag = "v1".parse().unwrap();
    app.registry
        .cache()
        .tag("docker.io", &repo, &tag)
        .unwrap()
        .map(|record| record.digest)
}

#[actix_web::test]
async fn a_tag_is_served_from_cache_within_its_ttl_and_revalidated_with_a_head_after() {
    let app = test_app(|s| s.upstreams[0].tag_ttl = TTL).await;
    let hub = app.hub();
    let one = hub.put_image("library/app", "v1", "one");

    let reply = app.get(TAG).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body(), &one.manifest[..]);
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(one.digest.to_string().as_str())
    );
    assert_eq!((hub.calls(Op::GetManifest), hub.all_calls()), (1, 1));

    // Within the TTL: no upstream traffic at all.
    app.advance(TTL - Duration::from_secs(1));
    assert_eq!(app.get(TAG).await.body(), &one.manifest[..]);
    assert_eq!(hub.all_calls(), 1);

    // After it: one HEAD, and no GET for an unchanged digest.
    app.advance(Duration::from_secs(2));
    assert_eq!(app.get(TAG).await.body(), &one.manifest[..]);
    assert_eq!(hub.calls(Op::HeadManifest), 1);
    assert_eq!(hub.calls(Op::GetManifest), 1);
    // The HEAD renewed the TTL.
    assert_eq!(app.get(TAG).await.body(), &one.manifest[..]);
    assert_eq!(hub.all_calls(), 2);

    // A moved tag: a HEAD, then a GET of the new manifest.
    let two = hub.put_image("library/app", "v1", "two");
    app.advance(TTL);
    let reply = app.get(TAG).await;
    assert_eq!(reply.body(), &two.manifest[..]);
    assert_eq!(hub.calls(Op::HeadManifest), 2);
    assert_eq!(hub.calls(Op::GetManifest), 2);
    assert_eq!(tag(&app), Some(two.digest));
}

#[actix_web::test]
async fn a_stale_tag_is_served_with_a_warning_while_upstream_fails() {
    let max_stale = Duration::from_secs(3600);
    let app = test_app(|s| {
        s.upstreams[0].tag_ttl = TTL;
        s.upstreams[0].max_stale = max_stale;
    })
    .await;
    let hub = app.hub();
    let one = hub.put_image("library/app", "v1", "one");
    assert_eq!(app.get(TAG).await.status, StatusCode::OK);

    let failures = [
        hub.status(503),
        hub.timeout(),
        hub.too_many_requests(Duration::from_secs(9)),
    ];
    for (n, failure) in failures.into_iter().enumerate() {
        hub.fail(Op::HeadManifest, failure);
        app.advance(TTL);
        let reply = app.get(TAG).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.body(), &one.manifest[..]);
        let warning = reply.header("warning").expect("a Warning header");
        assert!(warning.starts_with("110 "), "{warning}");
        assert_eq!(hub.calls(Op::HeadManifest), n + 1);
    }
    assert_eq!(metric(&app.registry, |m| &m.stale_serves), 3);

    // Past max_stale, upstream's failure is the answer.
    hub.fail(Op::HeadManifest, hub.status(503));
    app.advance(max_stale);
    let reply = app.get(TAG).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "UNAVAILABLE");

    // Once upstream answers again, the tag is fresh and served without a warning.
    hub.heal();
    let reply = app.get(TAG).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("warning").is_none());
    assert_eq!(hub.calls(Op::GetManifest), 1);
}

#[actix_web::test]
async fn a_tag_upstream_no_longer_has_is_dropped() {
    let app = test_app(|s| {
        s.upstreams[0].tag_ttl = TTL;
        s.upstreams[0].not_found_ttl = Duration::ZERO;
    })
    .await;
    let hub = app.hub();
    let one = hub.put_image("library/app", "v1", "one");
    assert_eq!(app.get(TAG).await.status, StatusCode::OK);
    assert_eq!(tag(&app), Some(one.digest.clone()));

    hub.remove_tag("library/app", "v1");
    // Within the TTL the cache does not know yet.
    assert_eq!(app.get(TAG).await.status, StatusCode::OK);
    app.advance(TTL);
    let reply = app.get(TAG).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "MANIFEST_UNKNOWN");
    assert_eq!(tag(&app), None);
    // Asked again next time, with a GET: nothing stale is left to serve.
    assert_eq!(app.get(TAG).await.status, StatusCode::NOT_FOUND);
    assert_eq!(hub.calls(Op::GetManifest), 2);
    // The manifest itself stays, by digest (immutable), for this repository.
    let by_digest = format!("/v2/library/app/manifests/{}", one.digest);
    assert_eq!(app.get(&by_digest).await.body(), &one.manifest[..]);
    assert_eq!(hub.calls(Op::GetManifest), 2);
}

#[actix_web::test]
async fn a_manifest_that_does_not_match_its_digest_is_neither_served_nor_stored() {
    let app = test_app(|_| {}).await;
    let hub = app.hub();
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
    let claimed = Digest::of(b"something else");
    hub.put_manifest_as(
        "library/app",
        Some("v1"),
        &claimed,
        media::OCI_MANIFEST,
        &body[..],
    );

    for path in [
        TAG.to_owned(),
        format!("/v2/library/app/manifests/{claimed}"),
    ] {
        let reply = app.get(&path).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(reply.error_code(), "UNAVAILABLE");
    }
    let cache = app.registry.cache();
    for digest in [&claimed, &Digest::of(body)] {
        assert!(cache.manifest(digest).await.unwrap().is_none());
    }
    assert_eq!(tag(&app), None);
    assert_eq!(hub.calls(Op::GetManifest), 2);
}

#[actix_web::test]
async fn concurrent_requests_for_a_cold_tag_share_one_upstream_get() {
    let app = test_app(|_| {}).await;
    let hub = app.hub();
    let one = hub.put_image("library/app", "v1", "one");
    let gate = hub.hold(Op::GetManifest);
    let requests = (0..8)
        .map(|_| app.send(TestRequest::get().uri(TAG)))
        .collect();
    let release = async {
        until_called(hub, Op::GetManifest).await;
        gate.release();
    };
    let responses = together(requests, release).await;
    for response in responses {
        let reply = read(response).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body(), &one.manifest[..]);
    }
    assert_eq!(hub.calls(Op::GetManifest), 1);
    assert_eq!(metric(&app.registry, |m| &m.manifest_coalesced), 7);
}

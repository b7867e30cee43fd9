//! Blobs: one upstream GET for concurrent cold requests, and bytes that do not match their
//! digest never served whole nor stored.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;

use super::{metric, read, settle, test_app, together};
use crate::oci::Digest;
use crate::upstream::fake::Op;

fn blob_path(digest: &Digest) -> String {
    format!("/v2/library/app/blobs/{digest}")
}

#[actix_web::test]
async fn concurrent_requests_for_a_cold_blob_share_one_upstream_get() {
    let app = test_app(|_| {}).await;
    let hub = app.hub();
    let image = hub.put_image("library/app", "v1", "one");
    let path = blob_path(&image.layer);
    // Upstream answers at once but holds the bytes: every request is answered (headers)
    // while the fill has not received a byte.
    let gate = hub.hold(Op::GetBlob);
    let requests = (0..8)
        .map(|_| app.send(TestRequest::get().uri(&path)))
        .collect();
    let responses = together(requests, async {}).await;
    assert_eq!(hub.calls(Op::GetBlob), 1);
    gate.release();
    for response in responses {
        let reply = read(response).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body(), &image.layer_bytes[..]);
    }
    assert_eq!(metric(&app.registry, |m| &m.blob_coalesced), 7);
    // The fetch proved the repository holds it: no HEAD for the joiners.
    assert_eq!(hub.calls(Op::HeadBlob), 0);

    // Stored: served from the cache from now on.
    settle(|| metric(&app.registry, |m| &m.fills_in_flight) == 0).await;
    let reply = app.get(&path).await;
    assert_eq!(reply.body(), &image.layer_bytes[..]);
    let ranged = app
        .call(
            TestRequest::get()
                .uri(&path)
                .insert_header(("Range", "bytes=0-4")),
        )
        .await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.body(), &image.layer_bytes[..5]);
    assert_eq!(hub.calls(Op::GetBlob), 1);
}

#[actix_web::test]
async fn a_blob_that_does_not_match_its_digest_is_never_served_whole_nor_stored() {
    let app = test_app(|_| {}).await;
    let hub = app.hub();
    let claimed = Digest::of(b"the real layer");
    hub.put_blob_as("library/app", &claimed, &b"a forged layer"[..]);
    let path = blob_path(&claimed);

    let reply = app.get(&path).await;
    // The bytes stream as they come, but the last one is withheld until verified: the body
    // is cut off, so the client never holds bytes that passed as the blob. (Under load the
    // fill can fail before the handler has its body: then the answer is an error instead.)
    if reply.status == StatusCode::OK {
        assert!(reply.body.is_err(), "a forged blob was served whole");
    } else {
        assert!(
            reply.status.is_server_error(),
            "a failed fill answered {}",
            reply.status
        );
        assert_ne!(reply.body.as_deref().ok(), Some(&b"a forged layer"[..]));
    }
    settle(|| metric(&app.registry, |m| &m.fills_failed) == 1).await;
    settle(|| metric(&app.registry, |m| &m.fills_in_flight) == 0).await;
    assert_eq!(app.registry.cache().blob_size(&claimed).unwrap(), None);

    // A range waits for verification, which never comes: an error, not bytes.
    let ranged = app
        .call(
            TestRequest::get()
                .uri(&path)
                .insert_header(("Range", "bytes=0-3")),
        )
        .await;
    assert_eq!(ranged.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ranged.error_code(), "UNAVAILABLE");
    // Nothing was kept: each request asked upstream again.
    assert_eq!(hub.calls(Op::GetBlob), 2);
    settle(|| metric(&app.registry, |m| &m.fills_in_flight) == 0).await;
    assert_eq!(app.registry.cache().blob_size(&claimed).unwrap(), None);
}

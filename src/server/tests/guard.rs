//! Guarded repositories: a guarded mark is asked again after `guard_ttl`, an unsure one after
//! the retry interval, and neither before.

use std::time::Duration;

use actix_web::http::StatusCode;

use super::test_app;
use crate::storage::index::Guarding;
use crate::upstream::fake::Op;
use crate::upstream::Identity;

const GUARD_TTL: Duration = Duration::from_secs(600);

fn guarding(app: &super::TestApp, repo: &str) -> Guarding {
    app.registry
        .cache()
        .guarding(&format!("docker.io/{repo}"))
        .unwrap()
}

#[actix_web::test]
async fn a_guarded_mark_is_checked_again_after_guard_ttl() {
    let app = test_app(|s| s.mirror.guard_ttl = GUARD_TTL).await;
    let hub = app.hub();
    let image = hub.put_image("org/secret", "v1", "secret");
    hub.guard("org/secret", "alice", "pw");
    let path = "/v2/org/secret/manifests/v1";

    // Upstream refuses anonymous: guarded, and the client is asked for credentials.
    let reply = app.get(path).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("www-authenticate").is_some());
    assert_eq!(guarding(&app, "org/secret"), Guarding::Guarded);
    // The next request checks the mark (it was set by a refusal, not by a check).
    assert_eq!(app.get(path).await.status, StatusCode::UNAUTHORIZED);
    let checked = hub.all_calls();

    // Upstream opens the repository; within guard_ttl the mark stands, unasked.
    hub.open("org/secret");
    app.advance(GUARD_TTL - Duration::from_secs(1));
    assert_eq!(app.get(path).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(hub.all_calls(), checked);

    // After it, whoever asks makes berth check again, and the answer opens it.
    app.advance(Duration::from_secs(2));
    let reply = app.get(path).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body(), &image.manifest[..]);
    assert_eq!(guarding(&app, "org/secret"), Guarding::Open);
    assert_eq!(
        hub.all_calls(),
        checked + 2,
        "one HEAD to check, one GET to fetch"
    );
}

#[actix_web::test]
async fn a_client_is_admitted_to_a_guarded_repository_once_per_guard_ttl() {
    // The tag stays fresh throughout: every HEAD here is the guard's.
    let app = test_app(|s| {
        s.mirror.guard_ttl = GUARD_TTL;
        s.upstreams[0].tag_ttl = 2 * GUARD_TTL;
    })
    .await;
    let hub = app.hub();
    let image = hub.put_image("org/secret", "v1", "secret");
    hub.guard("org/secret", "alice", "pw");
    let path = "/v2/org/secret/manifests/v1";
    let token = app.login("org/secret", "alice", "pw").await;

    let reply = app.get_as(path, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body(), &image.manifest[..]);
    assert_eq!(guarding(&app, "org/secret"), Guarding::Guarded);
    // Anonymous clients do not get what the client fetched.
    assert_eq!(app.get(path).await.status, StatusCode::UNAUTHORIZED);

    // The client's authorization and the classification are remembered for guard_ttl.
    let heads = hub.calls(Op::HeadManifest);
    app.advance(GUARD_TTL - Duration::from_secs(1));
    assert_eq!(app.get_as(path, &token).await.status, StatusCode::OK);
    assert_eq!(hub.calls(Op::HeadManifest), heads);
    // Then upstream is asked again, as the default identity and as the client.
    app.advance(Duration::from_secs(2));
    hub.fail_when(|call| {
        (call.op == Op::HeadManifest && matches!(call.identity, Identity::Client(_))).then(|| {
            crate::upstream::UpstreamError::Unauthorized {
                upstream: "docker.io".into(),
                reason: "revoked".into(),
            }
        })
    });
    let reply = app.get_as(path, &token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(hub.calls(Op::HeadManifest) > heads);
}

#[actix_web::test]
async fn an_unsure_repository_is_asked_again_after_the_retry_interval() {
    let app = test_app(|s| s.mirror.guard_ttl = GUARD_TTL).await;
    let hub = app.hub();
    let image = hub.put_image("org/app", "v1", "app");
    hub.user("bob", "pw");
    let path = "/v2/org/app/manifests/v1";
    let token = app.login("org/app", "bob", "pw").await;

    // The check of the default identity fails before a passed-through fetch: unsure.
    let failing = hub.status(503);
    hub.fail_when(move |call| {
        (call.op == Op::HeadManifest && *call.identity == Identity::Anonymous)
            .then(|| failing.clone())
    });
    let reply = app.get_as(path, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(guarding(&app, "org/app"), Guarding::Unsure);

    // Unsure counts as guarded; within 30 s nobody asks upstream again.
    hub.heal();
    let calls = hub.all_calls();
    app.advance(Duration::from_secs(29));
    assert_eq!(app.get(path).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(hub.all_calls(), calls);

    // After it the first request asks, whoever makes it; the answer opens the repository and
    // the cached manifest is served.
    app.advance(Duration::from_secs(2));
    let reply = app.get(path).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body(), &image.manifest[..]);
    assert_eq!(guarding(&app, "org/app"), Guarding::Open);
    assert_eq!(
        hub.all_calls(),
        calls + 1,
        "one HEAD, the manifest from cache"
    );
}

#[actix_web::test]
async fn a_repository_hidden_behind_404s_is_guarded_once_a_client_finds_it() {
    let app = test_app(|s| s.mirror.guard_ttl = GUARD_TTL).await;
    let hub = app.hub();
    let image = hub.put_image("org/hidden", "v1", "hidden");
    hub.guard("org/hidden", "carol", "pw");
    hub.hide_guarded(true);
    let path = "/v2/org/hidden/manifests/v1";

    // Anonymous: a 404 proves nothing, and marks nothing.
    let reply = app.get(path).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(guarding(&app, "org/hidden"), Guarding::Open);

    // The client's credentials find what anonymous was told is not there: guarded.
    let token = app.login("org/hidden", "carol", "pw").await;
    let reply = app.get_as(path, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body(), &image.manifest[..]);
    assert_eq!(guarding(&app, "org/hidden"), Guarding::Guarded);
    // Now cached, and still not served to anonymous clients.
    assert_eq!(app.get(path).await.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn a_grant_that_does_not_open_is_refused_with_a_challenge() {
    use base64::Engine as _;
    let app = test_app(|_| {}).await;
    let hub = app.hub();
    hub.put_image("org/secret", "v1", "secret");
    hub.guard("org/secret", "alice", "pw");
    let path = "/v2/org/secret/manifests/v1";
    let token = app.login("org/secret", "alice", "pw").await;
    assert_eq!(app.get_as(path, &token).await.status, StatusCode::OK);

    // Even signed with the right key (by a holder of it), a token whose sealed grant was
    // altered is refused: the cipher's tag, not only the signature, guards the grant.
    let key = crate::auth::keys::load_or_generate(&app.data_dir().join("token.key")).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = token.split('.').nth(1).unwrap();
    let mut claims: crate::auth::AccessClaims =
        serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    let sealed = claims.upg.take().unwrap();
    let mut altered = sealed.into_bytes();
    let last = altered.len() - 2;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    claims.upg = Some(String::from_utf8(altered).unwrap());
    let forged = key.sign(&claims).unwrap();
    let reply = app.get_as(path, &forged).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("www-authenticate").is_some());
    let body = String::from_utf8_lossy(reply.body()).into_owned();
    assert!(body.contains("upstream grant cannot be opened"), "{body}");
}

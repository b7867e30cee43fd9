//! Referrers answers that outlive upstream's: the API's `Link` pages followed and merged, the
//! answer kept and served when upstream fails or the mirror is offline (filtered, and guarded
//! as the subject is), and pinned images bringing their referrers along.

use std::time::Duration;

use actix_web::http::StatusCode;

use super::referrers::{attach, listed, path, sorted, tag_referrers, REPO, SBOM, SIG};
use super::{test_app, TestApp};
use crate::oci::{Digest, ImageReference};
use crate::registry::pins::PinPlan;
use crate::upstream::fake::Op;

/// An app whose 404s are not remembered (every request asks the API again) and whose stale
/// answers last an hour.
async fn app() -> TestApp {
    test_app(|s| {
        s.upstreams[0].not_found_ttl = Duration::ZERO;
        s.upstreams[0].tag_ttl = Duration::from_secs(60);
        s.upstreams[0].max_stale = Duration::from_secs(3600);
    })
    .await
}

/// The same data directory opened again, offline.
async fn offline_in(data_dir: &std::path::Path) -> TestApp {
    let data_dir = data_dir.to_path_buf();
    test_app(move |s| {
        s.storage.data_dir = data_dir;
        s.mirror.offline = true;
    })
    .await
}

/// Five referrers, through upstream's pages of two linked by `Link: <…>; rel="next"`.
#[actix_web::test]
async fn upstreams_link_pages_are_followed_and_merged() {
    let app = app().await;
    let hub = app.hub();
    hub.serve_referrers(true);
    hub.page_referrers(2);
    let subject = hub.put_image(REPO, "v1", "subject").digest;
    let types: Vec<String> = (0..5).map(|i| format!("{SIG}.{i}")).collect();
    let referrers: Vec<Digest> = types
        .iter()
        .map(|t| attach(hub, REPO, &subject, t))
        .collect();
    let reply = app.get(&path(REPO, &subject, None)).await;
    assert_eq!(
        listed(&reply),
        sorted(&referrers.iter().collect::<Vec<_>>())
    );
    assert_eq!(hub.calls(Op::GetReferrers), 3, "pages of 2, 2 and 1");
    // Filtered after merging: the one of that type, wherever its page was.
    for (t, referrer) in types.iter().zip(&referrers) {
        let one = app.get(&path(REPO, &subject, Some(t))).await;
        assert_eq!(listed(&one), sorted(&[referrer]));
    }
}

#[actix_web::test]
async fn a_kept_answer_serves_while_upstream_fails_within_max_stale() {
    let app = app().await;
    let hub = app.hub();
    hub.serve_referrers(true);
    let subject = hub.put_image(REPO, "v1", "subject").digest;
    let sig = attach(hub, REPO, &subject, SIG);
    let sbom = attach(hub, REPO, &subject, SBOM);
    assert_eq!(
        listed(&app.get(&path(REPO, &subject, None)).await),
        sorted(&[&sig, &sbom])
    );

    let down = hub.status(503);
    hub.fail_when(move |_| Some(down.clone()));
    app.advance(Duration::from_secs(120));
    let before = hub.calls(Op::GetManifest);
    assert_eq!(
        listed(&app.get(&path(REPO, &subject, None)).await),
        sorted(&[&sig, &sbom])
    );
    let filtered = app.get(&path(REPO, &subject, Some(SIG))).await;
    assert_eq!(listed(&filtered), sorted(&[&sig]));
    assert_eq!(filtered.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(
        hub.calls(Op::GetManifest),
        before,
        "the kept answer served: no fallback tag asked for"
    );
    assert!(super::metric(&app.registry, |m| &m.stale_serves) >= 2);

    // Past max_stale, upstream's failure is the answer, not an old list.
    app.advance(Duration::from_secs(3600));
    let reply = app.get(&path(REPO, &subject, None)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    // Upstream back: a new answer replaces the kept one.
    hub.heal();
    hub.fail_when(|_| None);
    let third = attach(hub, REPO, &subject, "application/vnd.example.third");
    assert_eq!(
        listed(&app.get(&path(REPO, &subject, None)).await),
        sorted(&[&sig, &sbom, &third])
    );
}

#[actix_web::test]
async fn offline_the_kept_answer_serves_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let online = test_app(|s| s.storage.data_dir = data_dir.clone()).await;
    let hub = online.hub();
    hub.serve_referrers(true);
    let subject = hub.put_image(REPO, "v1", "subject").digest;
    let sig = attach(hub, REPO, &subject, SIG);
    let sbom = attach(hub, REPO, &subject, SBOM);
    // A tag-schema index upstream says otherwise: offline, the API's answer is the one served.
    tag_referrers(hub, REPO, &subject, &[(&sig, SIG)]);
    assert_eq!(
        listed(&online.get(&path(REPO, &subject, None)).await),
        sorted(&[&sig, &sbom])
    );
    drop(online);

    let offline = offline_in(&data_dir).await;
    assert_eq!(
        listed(&offline.get(&path(REPO, &subject, None)).await),
        sorted(&[&sig, &sbom])
    );
    let filtered = offline.get(&path(REPO, &subject, Some(SBOM))).await;
    assert_eq!(listed(&filtered), sorted(&[&sbom]));
    assert_eq!(filtered.header("oci-filters-applied"), Some("artifactType"));
    // A subject never asked about: an empty index, as before.
    let other = Digest::of(b"never seen");
    assert!(listed(&offline.get(&path(REPO, &other, None)).await).is_empty());
    assert_eq!(offline.hub().all_calls(), 0, "offline asks nothing");
}

#[actix_web::test]
async fn a_guarded_subjects_kept_answer_still_needs_a_grant() {
    const SECRET: &str = "org/secret";
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let online = test_app(|s| {
        s.storage.data_dir = data_dir.clone();
        s.upstreams[0].max_stale = Duration::from_secs(3600);
    })
    .await;
    let hub = online.hub();
    let subject = hub.put_image(SECRET, "v1", "secret").digest;
    let sig = attach(hub, SECRET, &subject, SIG);
    hub.serve_referrers(true);
    hub.guard(SECRET, "alice", "pw");
    let alice = online.login(SECRET, "alice", "pw").await;
    let reply = online.get_as(&path(SECRET, &subject, None), &alice).await;
    assert_eq!(listed(&reply), sorted(&[&sig]));

    // Upstream failing: the kept answer is not anybody's for the asking.
    let down = hub.status(503);
    hub.fail_when(move |_| Some(down.clone()));
    let refused = online.get(&path(SECRET, &subject, None)).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        refused.body
    );
    drop(online);

    // Offline: the same.
    let offline = offline_in(&data_dir).await;
    let refused = offline.get(&path(SECRET, &subject, None)).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        refused.body
    );
    assert!(refused.header("www-authenticate").is_some());
    assert!(!String::from_utf8_lossy(refused.body()).contains(&sig.to_string()));
}

#[actix_web::test]
async fn a_pin_brings_its_referrers_and_picks_up_new_ones() {
    let app = app().await;
    let hub = app.hub();
    hub.serve_referrers(true);
    let subject = hub.put_image(REPO, "v1", "subject").digest;
    let empty = hub.put_blob(REPO, "{}");
    let sig = attach(hub, REPO, &subject, SIG);

    let pin: ImageReference = "app:v1".parse().unwrap();
    let plan = PinPlan {
        pins: vec![pin.clone()],
        platforms: Vec::new(),
        refresh: Duration::from_secs(3600),
    };
    let targets = app.registry.prepare_pins(&plan).unwrap();
    let (pin, target) = &targets[0];
    let seeded = app.registry.seed_pin(pin, target, &[]).await.unwrap();
    assert_eq!(seeded.digest, subject);
    assert_eq!(seeded.referrers, 1);
    let index = &app.registry.cache().storage().index;
    let pinned = index.pinned_blobs().unwrap();
    assert!(pinned.contains(&sig), "the signature is pinned");
    assert!(pinned.contains(&empty), "the signature's blob is pinned");
    assert!(app.registry.cache().blob_size(&sig).unwrap().is_some());
    assert!(app.registry.cache().blob_size(&empty).unwrap().is_some());

    // Signed again upstream: the next refresh brings the new one.
    let again = attach(hub, REPO, &subject, SBOM);
    let seeded = app.registry.seed_pin(pin, target, &[]).await.unwrap();
    assert_eq!(seeded.referrers, 2);
    assert!(index.pinned_blobs().unwrap().contains(&again));

    // Upstream down: the referrers are answered from what the pin kept.
    let down = hub.status(503);
    hub.fail_when(move |_| Some(down.clone()));
    assert_eq!(
        listed(&app.get(&path(REPO, &subject, None)).await),
        sorted(&[&sig, &again])
    );
    let reply = app.get(&format!("/v2/{REPO}/manifests/{again}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(Digest::of(reply.body()), again);

    // The image seeds but its referrers cannot be listed (upstream refuses the API): the pin
    // counts as failed, and its record keeps holding the referrers it held.
    hub.fail(Op::GetReferrers, hub.status(403));
    let seeded_ms = index.pin("app:v1").unwrap().unwrap().seeded_ms;
    assert!(app.registry.seed_pin(pin, target, &[]).await.is_err());
    let record = index.pin("app:v1").unwrap().unwrap();
    assert!(
        record.seeded_ms >= seeded_ms,
        "the record was written again"
    );
    for held in [&subject, &sig, &again, &empty] {
        assert!(record.blobs.contains(held), "{held} is no longer pinned");
    }
}

//! Referrers through the mirror: upstream's referrers API, the tag schema when upstream has
//! none, an empty index when it has neither, and the guard in front of all of it.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::Value;

use super::{test_app, Reply, TestApp};
use crate::oci::media;
use crate::oci::Digest;
use crate::upstream::fake::{FakeRegistry, Op};

pub(super) const REPO: &str = "library/app";
pub(super) const SIG: &str = "application/vnd.example.signature";
pub(super) const SBOM: &str = "application/vnd.example.sbom";

/// An artifact manifest of `artifact_type` whose subject is `subject`: its digest.
pub(super) fn attach(
    hub: &FakeRegistry,
    repo: &str,
    subject: &Digest,
    artifact_type: &str,
) -> Digest {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": Digest::of(b"{}").to_string(),
            "size": 2,
        },
        "layers": [],
        "subject": {
            "mediaType": media::OCI_MANIFEST,
            "digest": subject.to_string(),
            "size": 1,
        },
    });
    hub.put_manifest(repo, None, media::OCI_MANIFEST, manifest.to_string())
}

/// The referrers tag schema: an index of `referrers` under the subject's `sha256-<hex>` tag.
pub(super) fn tag_referrers(
    hub: &FakeRegistry,
    repo: &str,
    subject: &Digest,
    referrers: &[(&Digest, &str)],
) {
    let manifests: Vec<Value> = referrers
        .iter()
        .map(|(digest, artifact_type)| {
            serde_json::json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": digest.to_string(),
                "size": 100,
                "artifactType": artifact_type,
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let tag = format!("sha256-{}", subject.hex());
    hub.put_manifest(repo, Some(&tag), media::OCI_INDEX, index.to_string());
}

pub(super) fn path(repo: &str, subject: &Digest, artifact_type: Option<&str>) -> String {
    match artifact_type {
        Some(t) => format!("/v2/{repo}/referrers/{subject}?artifactType={t}"),
        None => format!("/v2/{repo}/referrers/{subject}"),
    }
}

/// The digests of an index answer, after checking that it is one.
pub(super) fn listed(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.header("content-type"), Some(media::OCI_INDEX));
    let index: Value = serde_json::from_slice(reply.body()).expect("an index");
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], media::OCI_INDEX);
    let mut digests: Vec<String> = index["manifests"]
        .as_array()
        .expect("a list of manifests")
        .iter()
        .map(|d| d["digest"].as_str().expect("a digest").to_owned())
        .collect();
    digests.sort();
    digests
}

pub(super) fn sorted(digests: &[&Digest]) -> Vec<String> {
    let mut all: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
    all.sort();
    all
}

async fn app() -> TestApp {
    test_app(|_| {}).await
}

#[actix_web::test]
async fn upstreams_referrers_api_answers_filtered_by_artifact_type() {
    let app = app().await;
    let hub = app.hub();
    hub.serve_referrers(true);
    let subject = hub.put_image(REPO, "v1", "subject").digest;
    let sig = attach(hub, REPO, &subject, SIG);
    let sbom = attach(hub, REPO, &subject, SBOM);
    // A referrer of another subject, and one of this subject in another repository.
    attach(hub, REPO, &Digest::of(b"other"), SIG);
    attach(hub, "library/other", &subject, SIG);

    let all = app.get(&path(REPO, &subject, None)).await;
    assert_eq!(listed(&all), sorted(&[&sig, &sbom]));
    assert_eq!(all.header("oci-filters-applied"), None);

    let filtered = app.get(&path(REPO, &subject, Some(SIG))).await;
    assert_eq!(listed(&filtered), sorted(&[&sig]));
    assert_eq!(filtered.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(hub.calls(Op::GetReferrers), 2);
    // The API answered: the fallback tag was never asked for.
    assert_eq!(hub.calls(Op::GetManifest), 1, "only the subject");

    // A listed referrer is then read like any manifest of the repository.
    let reply = app.get(&format!("/v2/{REPO}/manifests/{sig}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(Digest::of(reply.body()), sig);
}

#[actix_web::test]
async fn without_the_api_the_referrers_tag_answers() {
    let app = app().await;
    let hub = app.hub();
    let subject = hub.put_image(REPO, "v1", "subject").digest;
    let sig = attach(hub, REPO, &subject, SIG);
    let sbom = attach(hub, REPO, &subject, SBOM);
    tag_referrers(hub, REPO, &subject, &[(&sig, SIG), (&sbom, SBOM)]);

    assert_eq!(
        listed(&app.get(&path(REPO, &subject, None)).await),
        sorted(&[&sig, &sbom])
    );
    let filtered = app.get(&path(REPO, &subject, Some(SBOM))).await;
    assert_eq!(listed(&filtered), sorted(&[&sbom]));
    assert_eq!(filtered.header("oci-filters-applied"), Some("artifactType"));
    // The API's 404 is remembered; the tag is cached like any tag within its TTL.
    assert_eq!(hub.calls(Op::GetReferrers), 1);
    assert_eq!(hub.calls(Op::GetManifest), 2, "the subject and the tag");
    let tag = format!("sha256-{}", subject.hex()).parse().unwrap();
    let cached = app
        .registry
        .cache()
        .tag("docker.io", &REPO.parse().unwrap(), &tag)
        .unwrap();
    assert!(cached.is_some(), "the fallback tag is cached");
}

#[actix_web::test]
async fn neither_api_nor_tag_nor_subject_is_an_empty_index() {
    let app = app().await;
    let hub = app.hub();
    let subject = hub.put_image(REPO, "v1", "subject").digest;
    assert!(listed(&app.get(&path(REPO, &subject, None)).await).is_empty());
    assert_eq!(hub.calls(Op::GetReferrers), 1);

    // A subject upstream does not have: no referrers, and no referrers call upstream.
    let unknown = Digest::of(b"no such manifest");
    hub.serve_referrers(true);
    let reply = app.get(&path(REPO, &unknown, Some(SIG))).await;
    assert!(listed(&reply).is_empty());
    assert_eq!(hub.calls(Op::GetReferrers), 1);
}

#[actix_web::test]
async fn upstream_failing_is_unavailable_not_an_empty_answer() {
    let app = app().await;
    let hub = app.hub();
    hub.serve_referrers(true);
    let subject = hub.put_image(REPO, "v1", "subject").digest;
    attach(hub, REPO, &subject, SIG);
    hub.fail(Op::GetReferrers, hub.status(503));
    let reply = app.get(&path(REPO, &subject, None)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "UNAVAILABLE");
}

#[actix_web::test]
async fn a_guarded_repositorys_referrers_need_the_callers_own_grant() {
    const SECRET: &str = "org/secret";
    let app = app().await;
    let hub = app.hub();
    let subject = hub.put_image(SECRET, "v1", "secret").digest;
    let sig = attach(hub, SECRET, &subject, SIG);
    hub.serve_referrers(true);
    hub.guard(SECRET, "alice", "pw");
    hub.user("mallory", "pw");

    let anonymous = app.get(&path(SECRET, &subject, None)).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.header("www-authenticate").is_some());

    assert_eq!(
        hub.calls(Op::GetReferrers),
        0,
        "nothing asked for anonymous"
    );

    // The fake refuses every call not made as alice: the answer is upstream's API's to her.
    let alice = app.login(SECRET, "alice", "pw").await;
    let reply = app.get_as(&path(SECRET, &subject, None), &alice).await;
    assert_eq!(listed(&reply), sorted(&[&sig]));
    assert_eq!(hub.calls(Op::GetReferrers), 1);

    // What alice's calls cached (the subject) reaches nobody else.
    assert_eq!(
        app.get(&path(SECRET, &subject, None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mallory = app.login(SECRET, "mallory", "pw").await;
    let refused = app.get_as(&path(SECRET, &subject, None), &mallory).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        refused.body
    );
}

#[actix_web::test]
async fn upstream_failing_falls_back_to_a_cached_referrers_tag_within_max_stale() {
    // No remembered 404s: every request asks the API again.
    let app = test_app(|s| {
        s.upstreams[0].not_found_ttl = Duration::ZERO;
        s.upstreams[0].tag_ttl = Duration::from_secs(60);
        s.upstreams[0].max_stale = Duration::from_secs(3600);
    })
    .await;
    let hub = app.hub();
    let subject = hub.put_image(REPO, "v1", "subject").digest;
    let sig = attach(hub, REPO, &subject, SIG);
    tag_referrers(hub, REPO, &subject, &[(&sig, SIG)]);
    assert_eq!(
        listed(&app.get(&path(REPO, &subject, None)).await),
        sorted(&[&sig])
    );

    // Upstream down: the cached tag answers, past its TTL too (stale, within max_stale).
    let down = hub.status(503);
    hub.fail_when(move |_| Some(down.clone()));
    app.advance(Duration::from_secs(120));
    assert_eq!(
        listed(&app.get(&path(REPO, &subject, None)).await),
        sorted(&[&sig])
    );
    // Past max_stale it is upstream's failure again, not an empty list.
    app.advance(Duration::from_secs(3600));
    let reply = app.get(&path(REPO, &subject, None)).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        reply.body
    );
}

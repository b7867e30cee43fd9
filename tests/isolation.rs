//! Repository isolation: content is stored once per digest, but served under a repository only
//! when that repository may hold it, for this caller. A table of identities × repository names
//! × endpoints, online and offline, against one berth holding a private project's image, an
//! image upstream guards (pulled with a client's own upstream credentials) and a public one.
//! Then the classification of guarded repositories against upstreams that misbehave: one that
//! hides private repositories behind 404s, and a token service that refuses for a while.

mod common;

use std::collections::HashMap;

use common::images::{self, Flavor, Image};
use common::private::{skopeo_push, write_oci_layout, AuthFiles};
use common::proxy::{FaultProxy, Mode};
use common::{config_for, seeded, skopeo, try_pull, Berth, OTHER_USER, PRIVATE_USER};
use reqwest::{Method, StatusCode};

const KIB: usize = 1024;

/// Who is asking: nobody, a local user, or a client with upstream credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    /// Developer in `team` and `pub`.
    Alice,
    /// Guest in `team`.
    Bob,
    /// A local user in no project.
    Dave,
    /// Upstream account that may pull `private/*`.
    Priv,
    /// Upstream account that may pull nothing used here.
    Other,
}

const EVERYONE: [Who; 6] = [
    Who::Anonymous,
    Who::Alice,
    Who::Bob,
    Who::Dave,
    Who::Priv,
    Who::Other,
];

impl Who {
    fn credentials(self) -> Option<(String, String)> {
        let pair = |(u, p): (&str, &str)| Some((u.to_owned(), p.to_owned()));
        match self {
            Who::Anonymous => None,
            Who::Alice => pair(("alice", "alice-pw")),
            Who::Bob => pair(("bob", "bob-pw")),
            Who::Dave => pair(("dave", "dave-pw")),
            Who::Priv => pair(PRIVATE_USER),
            Who::Other => pair(OTHER_USER),
        }
    }
}

/// A registry client as docker's: it answers berth's Bearer challenge at the token endpoint
/// with its credentials (if any) and keeps each token per scope.
struct Client {
    base: String,
    http: reqwest::Client,
    tokens: HashMap<(Who, String), Option<String>>,
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    content_type: String,
}

/// `key="value"` of a challenge.
fn challenge_param(challenge: &str, key: &str) -> Option<String> {
    let start = challenge.find(&format!("{key}=\""))? + key.len() + 2;
    let end = challenge[start..].find('"')? + start;
    Some(challenge[start..end].to_owned())
}

impl Client {
    fn new(berth: &Berth) -> Client {
        Client {
            base: berth.url.clone(),
            http: reqwest::Client::new(),
            tokens: HashMap::new(),
        }
    }

    async fn send(
        &self,
        method: &Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.unwrap()
    }

    async fn token(&mut self, who: Who, challenge: &str) -> Option<String> {
        let scope = challenge_param(challenge, "scope").unwrap_or_default();
        if let Some(token) = self.tokens.get(&(who, scope.clone())) {
            return token.clone();
        }
        let realm = challenge_param(challenge, "realm")?;
        let service = challenge_param(challenge, "service").unwrap_or_default();
        let mut request = self.http.get(realm).query(&[("service", service.as_str())]);
        if !scope.is_empty() {
            request = request.query(&[("scope", scope.as_str())]);
        }
        if let Some((user, password)) = who.credentials() {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.unwrap();
        let token = if response.status().is_success() {
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            body["token"].as_str().map(str::to_owned)
        } else {
            None
        };
        self.tokens.insert((who, scope), token.clone());
        token
    }

    /// One request as `who`, answering a challenge once.
    async fn call(
        &mut self,
        who: Who,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut response = self.send(&method, path, None, headers).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if let Some(token) = self.token(who, &challenge).await {
                response = self.send(&method, path, Some(&token), headers).await;
            }
        }
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Reply {
            status,
            body: response.bytes().await.unwrap_or_default().to_vec(),
            content_type,
        }
    }
}

/// Pushes `image` to berth as `user` with skopeo; panics on failure.
fn push(berth: &Berth, image: &Image, target: &str, user: &str) {
    let output = skopeo_push(berth, image, target, user);
    assert!(
        output.status.success(),
        "push {target}: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        berth.log()
    );
}

/// A piece of content and who may read it under which names.
struct Secret {
    what: &'static str,
    digest: String,
    data: Vec<u8>,
    is_manifest: bool,
    /// Repository names it is served under, and to whom.
    readable: Vec<(&'static str, Vec<Who>)>,
    /// Callers for whom either answer is right (public content, offline, for a client whose
    /// upstream credentials cannot be checked).
    either: Vec<Who>,
}

fn last_layer(image: &Image) -> &images::Blob {
    image.blobs.last().unwrap()
}

/// Every name the table tries: the right ones and their neighbours.
const NAMES: [&str; 9] = [
    "team/app",
    "pub/app",
    "team/other",
    "library/small",
    "small",
    "docker.io/library/small",
    "private/iso",
    "private/other",
    "secret",
];

/// The status of an answer that must not serve `secret`, and that no byte of it leaked.
fn assert_refused(reply: &Reply, secret: &Secret, context: &str) {
    assert!(
        !reply.status.is_success(),
        "{context}: served {} with {}",
        secret.what,
        reply.status
    );
    assert!(
        reply.body.len() < 64 || !contains(&reply.body, &secret.data[..64.min(secret.data.len())]),
        "{context}: the answer carries bytes of {}",
        secret.what
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every identity × name × endpoint for every secret: served exactly where allowed.
async fn check_table(client: &mut Client, secrets: &[Secret], phase: &str) {
    for secret in secrets {
        for name in NAMES {
            for who in EVERYONE.into_iter().filter(|w| !secret.either.contains(w)) {
                let allowed = secret
                    .readable
                    .iter()
                    .any(|(n, whom)| *n == name && whom.contains(&who));
                let kind = if secret.is_manifest {
                    "manifests"
                } else {
                    "blobs"
                };
                let path = format!("/v2/{name}/{kind}/{}", secret.digest);
                let accept = (
                    "accept",
                    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
                );
                let mut endpoints = vec![
                    ("GET", Method::GET, vec![accept]),
                    ("HEAD", Method::HEAD, vec![accept]),
                ];
                if !secret.is_manifest {
                    endpoints.push(("range", Method::GET, vec![("range", "bytes=0-99")]));
                }
                for (label, method, headers) in endpoints {
                    let reply = client.call(who, method, &path, &headers).await;
                    let context = format!("{label} {path} as {who:?}{phase}");
                    if allowed {
                        assert!(reply.status.is_success(), "{context}: {}", reply.status);
                        match label {
                            "GET" => assert_eq!(reply.body, secret.data, "{context}"),
                            "range" => assert_eq!(reply.body, secret.data[..100], "{context}"),
                            _ => {}
                        }
                    } else {
                        assert_refused(&reply, secret, &context);
                    }
                }
            }
        }
    }
}

/// Tags, referrers and the catalog of the private and the guarded repository: only to those
/// who may read them (the guarded repository's tags and referrers come from upstream, so only
/// while it answers).
async fn check_listings(
    client: &mut Client,
    team_manifest: &str,
    guarded_manifest: &str,
    upstream_answers: bool,
) {
    for who in EVERYONE {
        let team = client
            .call(who, Method::GET, "/v2/team/app/tags/list", &[])
            .await;
        let member = matches!(who, Who::Alice | Who::Bob);
        let referrers = client
            .call(
                who,
                Method::GET,
                &format!("/v2/team/app/referrers/{team_manifest}"),
                &[],
            )
            .await;
        assert_eq!(
            referrers.status.is_success(),
            member,
            "team referrers as {who:?}: {}",
            referrers.status
        );
        assert_eq!(
            team.status.is_success(),
            member,
            "team tags as {who:?}: {}",
            team.status
        );
        let guarded = client
            .call(who, Method::GET, "/v2/private/iso/tags/list", &[])
            .await;
        let may = who == Who::Priv && upstream_answers;
        assert_eq!(
            guarded.status.is_success(),
            may,
            "guarded tags as {who:?} (upstream answers: {upstream_answers}): {} {}",
            guarded.status,
            String::from_utf8_lossy(&guarded.body)
        );
        // Referrers follow the subject: only Priv, and surely while upstream answers (when it
        // does not, upstream's remembered 404s may still answer Priv from memory).
        let path = format!("/v2/private/iso/referrers/{guarded_manifest}");
        let referrers = client.call(who, Method::GET, &path, &[]).await;
        let listed = referrers.status.is_success();
        assert!(
            if who == Who::Priv {
                listed || !upstream_answers
            } else {
                !listed
            },
            "guarded referrers as {who:?} (upstream answers: {upstream_answers}): {} {}",
            referrers.status,
            String::from_utf8_lossy(&referrers.body)
        );
        let catalog = client.call(who, Method::GET, "/v2/_catalog", &[]).await;
        let listed = contains(&catalog.body, b"team/app");
        assert_eq!(
            listed,
            member,
            "catalog as {who:?}: {}",
            String::from_utf8_lossy(&catalog.body)
        );
    }
}

#[tokio::test]
async fn every_read_path_serves_a_digest_only_under_a_repository_that_holds_it() {
    let s = seeded().await;
    let files = AuthFiles::create();
    let team = images::image(Flavor::Oci, 9101, &[40 * KIB], "amd64");
    let guarded = images::image(Flavor::Oci, 9102, &[40 * KIB], "amd64");
    let public = images::image(Flavor::Oci, 9103, &[40 * KIB], "amd64");
    s.upstream.push("private/iso", "1", &guarded).await;
    s.upstream.push("library/small", "1", &public).await;

    // Through a proxy, so the upstream can go down later.
    let proxy = FaultProxy::start(&s.upstream.url());
    let config = format!("{}{}", files.config(""), config_for(&proxy.url(), "5m", ""));
    let berth = Berth::start(&config);
    push(&berth, &team, "team/app:1", "alice");
    try_pull(&berth, "library/small:1", None).unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
    try_pull(
        &berth,
        "private/iso:1",
        Some(&format!("{}:{}", PRIVATE_USER.0, PRIVATE_USER.1)),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
    berth.settle();

    let public_names = ["library/small", "small", "docker.io/library/small"];
    let secrets = |offline: bool| {
        let guarded_readers = if offline { vec![] } else { vec![Who::Priv] };
        vec![
            Secret {
                what: "the private project's layer",
                digest: last_layer(&team).digest.clone(),
                data: last_layer(&team).data.clone(),
                is_manifest: false,
                readable: vec![("team/app", vec![Who::Alice, Who::Bob])],
                either: vec![],
            },
            Secret {
                what: "the private project's manifest",
                digest: team.manifest.digest.clone(),
                data: team.manifest.data.clone(),
                is_manifest: true,
                readable: vec![("team/app", vec![Who::Alice, Who::Bob])],
                either: vec![],
            },
            Secret {
                what: "the guarded repository's layer",
                digest: last_layer(&guarded).digest.clone(),
                data: last_layer(&guarded).data.clone(),
                is_manifest: false,
                readable: vec![("private/iso", guarded_readers.clone())],
                either: vec![],
            },
            Secret {
                what: "the guarded repository's manifest",
                digest: guarded.manifest.digest.clone(),
                data: guarded.manifest.data.clone(),
                is_manifest: true,
                readable: vec![("private/iso", guarded_readers)],
                either: vec![],
            },
            Secret {
                what: "the public layer",
                digest: last_layer(&public).digest.clone(),
                data: last_layer(&public).data.clone(),
                is_manifest: false,
                readable: public_names
                    .iter()
                    .map(|n| (*n, EVERYONE.to_vec()))
                    .collect(),
                either: if offline {
                    vec![Who::Priv, Who::Other]
                } else {
                    vec![]
                },
            },
        ]
    };

    let mut client = Client::new(&berth);
    check_table(&mut client, &secrets(false), "").await;
    check_listings(
        &mut client,
        &team.manifest.digest,
        &guarded.manifest.digest,
        true,
    )
    .await;

    // A mount names a repository the caller may read, but only a private repository's own
    // links count: nothing is mounted from the mirror namespace.
    for from in ["private/iso", "library/small"] {
        let digest = if from == "private/iso" {
            &last_layer(&guarded).digest
        } else {
            &last_layer(&public).digest
        };
        let path = format!("/v2/pub/mounted/blobs/uploads/?mount={digest}&from={from}");
        let reply = client.call(Who::Alice, Method::POST, &path, &[]).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "mount from {from}");
        let head = client
            .call(
                Who::Alice,
                Method::HEAD,
                &format!("/v2/pub/mounted/blobs/{digest}"),
                &[],
            )
            .await;
        assert_eq!(head.status, StatusCode::NOT_FOUND, "mounted from {from}");
    }

    // Upstream down: what upstream confirmed stays served, nothing else is.
    proxy.set_mode(Mode::Status(503));
    check_table(&mut client, &secrets(false), " (upstream down)").await;
    check_listings(
        &mut client,
        &team.manifest.digest,
        &guarded.manifest.digest,
        false,
    )
    .await;

    // Offline: the same table, with nobody able to prove upstream access.
    let data_dir = berth.into_data_dir();
    let offline = format!("{config}\n[mirror]\noffline = true\n");
    let berth = Berth::start_in(&offline, &data_dir);
    let mut client = Client::new(&berth);
    check_table(&mut client, &secrets(true), " (offline)").await;
    check_listings(
        &mut client,
        &team.manifest.digest,
        &guarded.manifest.digest,
        false,
    )
    .await;
}

/// A berth behind a fault proxy in front of the shared upstream.
fn proxied_berth(proxy: &FaultProxy, extra_mirror: &str) -> Berth {
    Berth::start(&format!(
        "{}\n[mirror]\nprefetch = false\n{extra_mirror}",
        config_for(&proxy.url(), "5m", "")
    ))
}

#[tokio::test]
async fn an_upstream_that_hides_private_repositories_behind_404_keeps_them_guarded() {
    let s = seeded().await;
    let image = images::image(Flavor::Oci, 9201, &[30 * KIB], "amd64");
    s.upstream.push("private/hidden", "1", &image).await;
    let proxy = FaultProxy::start(&s.upstream.url());
    proxy.set_mode(Mode::HideRefusals);
    let berth = proxied_berth(&proxy, "");
    let priv_creds = format!("{}:{}", PRIVATE_USER.0, PRIVATE_USER.1);

    try_pull(&berth, "private/hidden:1", Some(&priv_creds))
        .unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
    berth.settle();
    assert!(
        try_pull(&berth, "private/hidden:1", None).is_err(),
        "what a credentialed client fetched became public"
    );
    let mut client = Client::new(&berth);
    for path in [
        format!("/v2/private/hidden/manifests/{}", image.manifest.digest),
        format!("/v2/private/hidden/blobs/{}", image.blobs[1].digest),
        "/v2/private/hidden/manifests/1".to_owned(),
    ] {
        for who in [Who::Anonymous, Who::Other] {
            let reply = client.call(who, Method::GET, &path, &[]).await;
            assert!(
                !reply.status.is_success(),
                "{path} as {who:?}: {}",
                reply.status
            );
        }
    }
    // The client that may read it still does, from the cache.
    try_pull(&berth, "private/hidden:1", Some(&priv_creds)).unwrap();
}

#[tokio::test]
async fn a_token_service_refusing_for_a_while_guards_nothing_for_good() {
    let s = seeded().await;
    let image = images::image(Flavor::Oci, 9301, &[30 * KIB], "amd64");
    s.upstream.push("library/flaky", "1", &image).await;
    let proxy = FaultProxy::start(&s.upstream.url());
    let berth = proxied_berth(&proxy, "guard_ttl = \"2s\"\n");

    // The token service refuses anonymous tokens for the repository: nothing can be pulled,
    // and nothing is concluded about the repository.
    s.upstream
        .issuer
        .fail_anonymous_with(Some("library/flaky"), 401);
    assert!(try_pull(&berth, "library/flaky:1", None).is_err());
    s.upstream.issuer.fail_anonymous_with(None, 401);
    try_pull(&berth, "library/flaky:1", None).unwrap_or_else(|e| {
        panic!(
            "a transient refusal guarded a public repository: {e}\n{}",
            berth.log()
        )
    });

    // Across a restart too.
    let mut berth = berth;
    berth.restart();
    try_pull(&berth, "library/flaky:1", None).unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
}

#[tokio::test]
async fn a_guarded_mark_is_checked_again_after_guard_ttl() {
    let s = seeded().await;
    let image = images::image(Flavor::Oci, 9501, &[20 * KIB], "amd64");
    s.upstream.push("private/flip", "1", &image).await;
    let berth = Berth::start(&format!(
        "{}\n[mirror]\nguard_ttl = \"1s\"\n",
        config_for(&s.upstream.url(), "5m", "")
    ));
    let priv_creds = format!("{}:{}", PRIVATE_USER.0, PRIVATE_USER.1);
    try_pull(&berth, "private/flip:1", Some(&priv_creds))
        .unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
    assert!(try_pull(&berth, "private/flip:1", None).is_err());

    // Its owner makes it public upstream: after guard_ttl berth asks again and opens it.
    s.upstream.issuer.open_anonymous(Some("private/flip"));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let opened = try_pull(&berth, "private/flip:1", None);
    s.upstream.issuer.open_anonymous(None);
    opened.unwrap_or_else(|e| panic!("still guarded after guard_ttl: {e}\n{}", berth.log()));
}

#[tokio::test]
async fn a_manifest_keeps_the_media_type_each_repository_pushed_it_with() {
    let s = seeded().await;
    let files = AuthFiles::create();
    let config = format!(
        "{}{}",
        files.config(""),
        config_for(&s.upstream.url(), "5m", "")
    );
    let berth = Berth::start(&config);
    let mut client = Client::new(&berth);

    // A manifest without a mediaType field: the Content-Type of each push decides.
    let config_blob =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = images::sha256(config_blob);
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_blob.len()},
        "layers": [],
    }))
    .unwrap();
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    for (repo, media_type, user) in [
        ("team/typed", oci, Who::Alice),
        ("pub/typed", docker, Who::Alice),
    ] {
        let token = {
            let challenge = format!(
                "Bearer realm=\"{}/token\",service=\"berth-test\",scope=\"repository:{repo}:pull,push\"",
                berth.url
            );
            client.token(user, &challenge).await.unwrap()
        };
        let http = reqwest::Client::new();
        let response = http
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?digest={config_digest}",
                berth.url
            ))
            .bearer_auth(&token)
            .body(config_blob.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let response = http
            .put(format!("{}/v2/{repo}/manifests/v1", berth.url))
            .bearer_auth(&token)
            .header("content-type", media_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
    for (repo, media_type) in [("team/typed", oci), ("pub/typed", docker)] {
        for reference in ["v1".to_owned(), images::sha256(&body)] {
            let reply = client
                .call(
                    Who::Alice,
                    Method::GET,
                    &format!("/v2/{repo}/manifests/{reference}"),
                    &[],
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.content_type, media_type, "{repo}:{reference}");
            assert_eq!(reply.body, body);
        }
    }
}

#[tokio::test]
async fn pushing_to_a_repository_in_no_project_never_contacts_an_upstream() {
    let s = seeded().await;
    let files = AuthFiles::create();
    let proxy = FaultProxy::start(&s.upstream.url());
    let config = format!("{}{}", files.config(""), config_for(&proxy.url(), "5m", ""));
    let berth = Berth::start(&config);
    // berth knows the upstream and its token service from a pull.
    try_pull(&berth, "library/oci:1", None).unwrap_or_else(|e| panic!("{e}\n{}", berth.log()));
    berth.settle();
    let forwarded = proxy.forwarded();

    let image = images::image(Flavor::Oci, 9401, &[10 * KIB], "amd64");
    let upstream_creds = format!("{}:{}", PRIVATE_USER.0, PRIVATE_USER.1);
    for (target, creds) in [
        ("library/pushme:1", upstream_creds.as_str()),
        ("pushme:1", upstream_creds.as_str()),
        ("library/pushme:1", "alice:alice-pw"),
    ] {
        let source = tempfile::tempdir().unwrap();
        write_oci_layout(&image, source.path());
        let src = format!("oci:{}:latest", source.path().display());
        let dest = format!("docker://{}/{target}", berth.addr);
        let output = skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            "--retry-times",
            "0",
            &src,
            &dest,
        ]);
        assert!(
            !output.status.success(),
            "a push to the mirror namespace ({target}) succeeded"
        );
    }
    assert_eq!(
        s.upstream.issuer.requests_for("library/pushme"),
        0,
        "credentials went to the upstream's token service:\n{}",
        berth.log()
    );
    assert_eq!(
        proxy.forwarded(),
        forwarded,
        "a push reached the upstream registry"
    );
}

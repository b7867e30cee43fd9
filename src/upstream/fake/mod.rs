//! An in-memory registry behind [`RegistryApi`], for in-process tests: repositories of
//! manifests, tags and blobs; repositories that only credentials may see; failures on demand;
//! calls held until a test lets them go; and a count of every call by operation.
//!
//! It stands in for the network only: an [`Upstream`](super::Upstream) over it still has its
//! breaker and its memory of 404s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

mod api;

use super::api::ReferrersPage;
use super::auth::Identity;
use super::error::UpstreamError;
use crate::oci::media;
use crate::oci::{Digest, Reference, RepoName};

/// The operations of [`RegistryApi`], for counting, holding and failing calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    GetManifest,
    HeadManifest,
    GetBlob,
    HeadBlob,
    GetTags,
    GetReferrers,
    Exchange,
}

/// One call, as a fault rule sees it.
pub struct Call<'a> {
    pub op: Op,
    pub repo: Option<&'a str>,
    pub identity: &'a Identity,
}

type FaultRule = Arc<dyn Fn(&Call<'_>) -> Option<UpstreamError> + Send + Sync>;

/// An image put into the fake: a manifest naming one config and one layer.
pub struct Image {
    pub digest: Digest,
    pub manifest: Bytes,
    pub config: Digest,
    pub layer: Digest,
    pub layer_bytes: Bytes,
}

#[derive(Clone)]
pub struct FakeRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    content: Mutex<Content>,
    calls: Mutex<HashMap<Op, usize>>,
    fault: Mutex<Option<FaultRule>>,
    gates: Mutex<HashMap<Op, watch::Receiver<bool>>>,
}

#[derive(Default)]
struct Content {
    /// (repo, digest) → (media type, body). The digest is the one the fake claims, so a test
    /// can store a body under a digest it does not hash to.
    manifests: HashMap<(String, String), (String, Bytes)>,
    tags: HashMap<(String, String), String>,
    blobs: HashMap<(String, String), Bytes>,
    /// Repositories served only to granted identities, with the user that may see them.
    guarded: HashMap<String, String>,
    /// Answer 404 instead of 401 to identities refused a guarded repository.
    hide_guarded: bool,
    /// Serve the referrers API (Distribution 2.8 has none: a 404).
    referrers_api: bool,
    /// Referrers per page of the API's answer (a `Link` to the next page after each); all at
    /// once when `None`.
    referrers_page: Option<usize>,
    users: HashMap<String, String>,
    /// Identity ids of exchanged credentials → their user.
    granted: HashMap<String, String>,
}

/// Lets calls held by [`FakeRegistry::hold`] go on; dropping it does too.
pub struct Gate(watch::Sender<bool>);

impl Gate {
    pub fn release(self) {}
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

impl FakeRegistry {
    pub fn new(name: &str) -> Self {
        FakeRegistry {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                content: Mutex::default(),
                calls: Mutex::default(),
                fault: Mutex::default(),
                gates: Mutex::default(),
            }),
        }
    }

    fn content(&self) -> MutexGuard<'_, Content> {
        lock(&self.inner.content)
    }

    /// Stores a blob in `repo`: its digest.
    pub fn put_blob(&self, repo: &str, bytes: impl Into<Bytes>) -> Digest {
        let bytes = bytes.into();
        let digest = Digest::of(&bytes);
        self.put_blob_as(repo, &digest, bytes);
        digest
    }

    /// Serves `bytes` as the blob `digest`, whether they hash to it or not.
    pub fn put_blob_as(&self, repo: &str, digest: &Digest, bytes: impl Into<Bytes>) {
        self.content()
            .blobs
            .insert((repo.to_owned(), digest.to_string()), bytes.into());
    }

    /// Stores a manifest under its digest and points `tag` (if any) at it.
    pub fn put_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        body: impl Into<Bytes>,
    ) -> Digest {
        let body = body.into();
        let digest = Digest::of(&body);
        self.put_manifest_as(repo, tag, &digest, media_type, body);
        digest
    }

    /// Serves `body` as manifest `digest` (and `tag`), whether it hashes to it or not.
    pub fn put_manifest_as(
        &self,
        repo: &str,
        tag: Option<&str>,
        digest: &Digest,
        media_type: &str,
        body: impl Into<Bytes>,
    ) {
        let mut content = self.content();
        content.manifests.insert(
            (repo.to_owned(), digest.to_string()),
            (media_type.to_owned(), body.into()),
        );
        if let Some(tag) = tag {
            content
                .tags
                .insert((repo.to_owned(), tag.to_owned()), digest.to_string());
        }
    }

    /// An image manifest with one config and one layer (`label` makes its bytes unique),
    /// tagged `tag` in `repo`.
    pub fn put_image(&self, repo: &str, tag: &str, label: &str) -> Image {
        let config_bytes = format!("{{\"label\":\"{label}\"}}");
        let config = self.put_blob(repo, config_bytes.clone());
        let layer_bytes = Bytes::from(format!("layer of {label} ").repeat(1000));
        let layer = self.put_blob(repo, layer_bytes.clone());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.to_string(),
                "size": config_bytes.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer.to_string(),
                "size": layer_bytes.len(),
            }],
        });
        let manifest = Bytes::from(manifest.to_string());
        let digest = self.put_manifest(repo, Some(tag), media::OCI_MANIFEST, manifest.clone());
        Image {
            digest,
            manifest,
            config,
            layer,
            layer_bytes,
        }
    }

    pub fn remove_tag(&self, repo: &str, tag: &str) {
        self.content()
            .tags
            .remove(&(repo.to_owned(), tag.to_owned()));
    }

    /// Serves `repo` only to identities that exchanged `user`'s credentials.
    pub fn guard(&self, repo: &str, user: &str, password: &str) {
        let mut content = self.content();
        content.guarded.insert(repo.to_owned(), user.to_owned());
        content.users.insert(user.to_owned(), password.to_owned());
    }

    /// A user whose credentials the fake's token service accepts.
    pub fn user(&self, user: &str, password: &str) {
        self.content()
            .users
            .insert(user.to_owned(), password.to_owned());
    }

    /// Serves `repo` to everyone again.
    pub fn open(&self, repo: &str) {
        self.content().guarded.remove(repo);
    }

    /// Answers refused identities 404 rather than 401, as registries hiding private
    /// repositories do.
    pub fn hide_guarded(&self, hide: bool) {
        self.content().hide_guarded = hide;
    }

    /// Serves the referrers API, from the manifests whose `subject` names the digest asked.
    pub fn serve_referrers(&self, serve: bool) {
        self.content().referrers_api = serve;
    }

    /// Answers the referrers API `per_page` referrers at a time, linking each page to the next.
    pub fn page_referrers(&self, per_page: usize) {
        self.content().referrers_page = Some(per_page);
    }

    /// Fails every call `rule` returns an error for (replacing any earlier rule).
    pub fn fail_when(
        &self,
        rule: impl Fn(&Call<'_>) -> Option<UpstreamError> + Send + Sync + 'static,
    ) {
        *lock(&self.inner.fault) = Some(Arc::new(rule));
    }

    /// Fails every call of `op` with `error`.
    pub fn fail(&self, op: Op, error: UpstreamError) {
        self.fail_when(move |call| (call.op == op).then(|| error.clone()));
    }

    /// Answers normally again.
    pub fn heal(&self) {
        *lock(&self.inner.fault) = None;
    }

    /// Holds calls of `op` until the gate is released; a blob GET answers at once but holds
    /// its body.
    pub fn hold(&self, op: Op) -> Gate {
        let (tx, rx) = watch::channel(false);
        lock(&self.inner.gates).insert(op, rx);
        Gate(tx)
    }

    /// Calls of `op` so far, failed and held ones included.
    pub fn calls(&self, op: Op) -> usize {
        lock(&self.inner.calls).get(&op).copied().unwrap_or(0)
    }

    /// Calls of every operation so far.
    pub fn all_calls(&self) -> usize {
        lock(&self.inner.calls).values().sum()
    }

    /// Error values as the HTTP client produces them.
    pub fn status(&self, status: u16) -> UpstreamError {
        UpstreamError::Status {
            upstream: self.inner.name.clone(),
            status,
            retry_after: None,
            reason: format!("fake {status}"),
        }
    }

    pub fn timeout(&self) -> UpstreamError {
        UpstreamError::Timeout {
            upstream: self.inner.name.clone(),
        }
    }

    pub fn too_many_requests(&self, retry_after: Duration) -> UpstreamError {
        UpstreamError::TooManyRequests {
            upstream: self.inner.name.clone(),
            retry_after: Some(retry_after),
            reason: "TOOMANYREQUESTS".into(),
        }
    }

    pub fn unauthorized(&self) -> UpstreamError {
        UpstreamError::Unauthorized {
            upstream: self.inner.name.clone(),
            reason: "UNAUTHORIZED authentication required".into(),
        }
    }

    fn not_found(&self, what: String) -> UpstreamError {
        UpstreamError::NotFound {
            upstream: self.inner.name.clone(),
            what,
            reason: "NOT_FOUND".into(),
        }
    }

    /// Counts the call, applies the fault rule, and checks that `identity` may see `repo`.
    fn begin(&self, op: Op, repo: Option<&str>, identity: &Identity) -> Result<(), UpstreamError> {
        *lock(&self.inner.calls).entry(op).or_default() += 1;
        let rule = lock(&self.inner.fault).clone();
        let call = Call { op, repo, identity };
        if let Some(error) = rule.and_then(|rule| rule(&call)) {
            return Err(error);
        }
        let Some(repo) = repo.filter(|_| op != Op::Exchange) else {
            return Ok(());
        };
        let content = self.content();
        let Some(user) = content.guarded.get(repo) else {
            return Ok(());
        };
        let granted = match identity {
            Identity::Client(id) => content.granted.get(id) == Some(user),
            Identity::Anonymous | Identity::Site => false,
        };
        match (granted, content.hide_guarded) {
            (true, _) => Ok(()),
            (false, true) => Err(self.not_found(format!("repository {repo}"))),
            (false, false) => Err(self.unauthorized()),
        }
    }

    /// Waits while `op` is held.
    async fn pass_gate(&self, op: Op) {
        let gate = lock(&self.inner.gates).get(&op).cloned();
        if let Some(mut gate) = gate {
            let _ = gate.wait_for(|open| *open).await;
        }
    }

    fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, String, Bytes), UpstreamError> {
        let content = self.content();
        let digest = match reference {
            Reference::Digest(digest) => Some(digest.to_string()),
            Reference::Tag(tag) => content
                .tags
                .get(&(repo.to_string(), tag.to_string()))
                .cloned(),
        };
        let found = digest.and_then(|digest| {
            let (media_type, body) = content.manifests.get(&(repo.to_string(), digest.clone()))?;
            Some((digest.parse().ok()?, media_type.clone(), body.clone()))
        });
        found.ok_or_else(|| self.not_found(format!("manifest {repo}:{reference}")))
    }

    /// A page of the referrers index of `subject` in `repo`, built as a registry with the API
    /// would, in digest order: the page after `last` (from the query), of at most the page size.
    fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        query: &[(String, String)],
    ) -> Result<ReferrersPage, UpstreamError> {
        let content = self.content();
        if !content.referrers_api {
            return Err(self.not_found(format!("referrers of {subject} in {repo}")));
        }
        let wanted = subject.to_string();
        let mut manifests = Vec::new();
        for ((r, digest), (media_type, body)) in &content.manifests {
            let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(body) else {
                continue;
            };
            let names_subject = manifest["subject"]["digest"].as_str() == Some(wanted.as_str());
            if r != repo.as_str() || !names_subject {
                continue;
            }
            let artifact_type = manifest["artifactType"]
                .as_str()
                .or_else(|| manifest["config"]["mediaType"].as_str());
            manifests.push(serde_json::json!({
                "mediaType": media_type,
                "digest": digest,
                "size": body.len(),
                "artifactType": artifact_type,
            }));
        }
        manifests.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        if let Some((_, last)) = query.iter().find(|(key, _)| key == "last") {
            manifests.retain(|d| d["digest"].as_str() > Some(last.as_str()));
        }
        let mut next = None;
        if let Some(n) = content
            .referrers_page
            .filter(|n| *n > 0 && manifests.len() > *n)
        {
            manifests.truncate(n);
            let last = manifests[n - 1]["digest"].as_str().unwrap_or_default();
            next = Some(vec![("last".to_owned(), last.to_owned())]);
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        });
        Ok(ReferrersPage {
            body: Bytes::from(index.to_string()),
            next,
        })
    }

    fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<Bytes, UpstreamError> {
        let found = self
            .content()
            .blobs
            .get(&(repo.to_string(), digest.to_string()))
            .cloned();
        found.ok_or_else(|| self.not_found(format!("blob {digest} in {repo}")))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

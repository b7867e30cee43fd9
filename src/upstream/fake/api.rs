//! The fake's answers to the [`RegistryApi`] calls.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{lock, FakeRegistry, Op};
use crate::oci::{Digest, Reference, RepoName};
use crate::upstream::api::{
    ApiFuture, BlobResponse, FetchedManifest, ManifestHead, ReferrersPage, RegistryApi, TagPage,
};
use crate::upstream::auth::{ClientToken, Credentials, Identity};
use crate::upstream::error::UpstreamError;

impl RegistryApi for FakeRegistry {
    fn get_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        reference: &'a Reference,
        _accept: &'a str,
        identity: &'a Identity,
    ) -> ApiFuture<'a, FetchedManifest> {
        Box::pin(async move {
            self.begin(Op::GetManifest, Some(repo.as_str()), identity)?;
            self.pass_gate(Op::GetManifest).await;
            let (digest, media_type, body) = self.manifest(repo, reference)?;
            Ok(FetchedManifest {
                body,
                content_type: Some(media_type),
                digest: Some(digest.to_string()),
            })
        })
    }

    fn head_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        reference: &'a Reference,
        _accept: &'a str,
        identity: &'a Identity,
    ) -> ApiFuture<'a, ManifestHead> {
        Box::pin(async move {
            self.begin(Op::HeadManifest, Some(repo.as_str()), identity)?;
            self.pass_gate(Op::HeadManifest).await;
            let (digest, media_type, _) = self.manifest(repo, reference)?;
            Ok(ManifestHead {
                digest: Some(digest.to_string()),
                content_type: Some(media_type),
            })
        })
    }

    fn get_blob<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        identity: &'a Identity,
    ) -> ApiFuture<'a, BlobResponse> {
        Box::pin(async move {
            self.begin(Op::GetBlob, Some(repo.as_str()), identity)?;
            let bytes = self.blob(repo, digest)?;
            let gate = lock(&self.inner.gates).get(&Op::GetBlob).cloned();
            // Two chunks, so that readers see a fill in progress.
            let half = bytes.len() / 2;
            let chunks = vec![Ok(bytes.slice(..half)), Ok(bytes.slice(half..))];
            let body = futures_util::stream::once(async move {
                if let Some(mut gate) = gate {
                    let _ = gate.wait_for(|open| *open).await;
                }
                futures_util::stream::iter(chunks)
            })
            .flatten();
            Ok(BlobResponse {
                content_length: Some(bytes.len() as u64),
                body: Box::new(Box::pin(body)),
            })
        })
    }

    fn head_blob<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        identity: &'a Identity,
    ) -> ApiFuture<'a, u64> {
        Box::pin(async move {
            self.begin(Op::HeadBlob, Some(repo.as_str()), identity)?;
            self.pass_gate(Op::HeadBlob).await;
            Ok(self.blob(repo, digest)?.len() as u64)
        })
    }

    fn get_tags<'a>(
        &'a self,
        repo: &'a RepoName,
        query: &'a [(String, String)],
        identity: &'a Identity,
    ) -> ApiFuture<'a, TagPage> {
        Box::pin(async move {
            self.begin(Op::GetTags, Some(repo.as_str()), identity)?;
            self.pass_gate(Op::GetTags).await;
            let mut tags: Vec<String> = self
                .content()
                .tags
                .keys()
                .filter(|(r, _)| r == repo.as_str())
                .map(|(_, tag)| tag.clone())
                .collect();
            if tags.is_empty() {
                return Err(self.not_found(format!("repository {repo}")));
            }
            tags.sort();
            let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            if let Some(last) = param("last") {
                tags.retain(|t| t > last);
            }
            let mut next = None;
            if let Some(n) = param("n").and_then(|n| n.parse::<usize>().ok()) {
                if tags.len() > n {
                    tags.truncate(n);
                    let last = tags.last().cloned().unwrap_or_default();
                    next = Some(vec![("last".into(), last), ("n".into(), n.to_string())]);
                }
            }
            let body = serde_json::json!({"name": repo.as_str(), "tags": tags}).to_string();
            Ok(TagPage {
                body: Bytes::from(body),
                next,
            })
        })
    }

    fn get_referrers<'a>(
        &'a self,
        repo: &'a RepoName,
        subject: &'a Digest,
        query: &'a [(String, String)],
        identity: &'a Identity,
    ) -> ApiFuture<'a, ReferrersPage> {
        Box::pin(async move {
            self.begin(Op::GetReferrers, Some(repo.as_str()), identity)?;
            self.pass_gate(Op::GetReferrers).await;
            self.referrers(repo, subject, query)
        })
    }

    fn exchange<'a>(
        &'a self,
        repo: Option<&'a RepoName>,
        credentials: &'a Credentials,
        identity: &'a Identity,
    ) -> ApiFuture<'a, ClientToken> {
        Box::pin(async move {
            self.begin(Op::Exchange, repo.map(RepoName::as_str), identity)?;
            self.pass_gate(Op::Exchange).await;
            let mut content = self.content();
            let known = content.users.get(&credentials.username);
            if known.map(String::as_str) != Some(credentials.password.expose()) {
                return Err(UpstreamError::TokenRefused {
                    upstream: self.inner.name.clone(),
                    reason: "UNAUTHORIZED incorrect username or password".into(),
                });
            }
            if let Identity::Client(id) = identity {
                content
                    .granted
                    .insert(id.clone(), credentials.username.clone());
            }
            Ok(ClientToken {
                authorization: format!("Bearer fake-token-of-{}", credentials.username).into(),
                lifetime: Duration::from_secs(300),
            })
        })
    }
}

//! The seam between berth and a registry's network API: the raw operations one upstream
//! answers, as [`RegistryApi`]. The HTTP client implements it; tests put an in-memory registry
//! in its place. What berth decides about the answers (offline, the breaker, remembered 404s)
//! stays in [`super::Upstream`], on top of either.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use super::auth::{ClientToken, Credentials, Identity};
use super::error::UpstreamError;
use crate::oci::{Digest, Reference, RepoName};

/// What every operation returns: boxed, since the registry behind it is chosen at run time
/// (a heap allocation per upstream call, against a network round trip).
pub type ApiFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, UpstreamError>> + Send + 'a>>;

/// A manifest as fetched: raw bytes plus what upstream said about them.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub body: Bytes,
    pub content_type: Option<String>,
    pub digest: Option<String>,
}

/// A manifest's identity as answered to a HEAD.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Option<String>,
    pub content_type: Option<String>,
}

/// A blob response whose body has not been read yet.
pub struct BlobResponse {
    pub content_length: Option<u64>,
    pub body: Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send + Unpin>,
}

/// A page of the tag list, passed through as upstream wrote it.
pub struct TagPage {
    pub body: Bytes,
    /// The `last` and `n` query values of upstream's `Link: <…>; rel="next"`, if any.
    pub next: Option<Vec<(String, String)>>,
}

/// A page of a subject's referrers: upstream's image index as it wrote it.
pub struct ReferrersPage {
    pub body: Bytes,
    /// The query of upstream's `Link: <…>; rel="next"`, if any (the path is the same).
    pub next: Option<Vec<(String, String)>>,
}

/// The registry API of one upstream, speaking as `identity`. Every answer that is not a
/// success is an [`UpstreamError`] (a 404 is [`UpstreamError::NotFound`], a refusal
/// [`UpstreamError::Unauthorized`]).
pub trait RegistryApi: Send + Sync {
    fn get_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        reference: &'a Reference,
        accept: &'a str,
        identity: &'a Identity,
    ) -> ApiFuture<'a, FetchedManifest>;

    fn head_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        reference: &'a Reference,
        accept: &'a str,
        identity: &'a Identity,
    ) -> ApiFuture<'a, ManifestHead>;

    fn get_blob<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        identity: &'a Identity,
    ) -> ApiFuture<'a, BlobResponse>;

    /// The size of a blob, from a HEAD.
    fn head_blob<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        identity: &'a Identity,
    ) -> ApiFuture<'a, u64>;

    fn get_tags<'a>(
        &'a self,
        repo: &'a RepoName,
        query: &'a [(String, String)],
        identity: &'a Identity,
    ) -> ApiFuture<'a, TagPage>;

    /// One page of the referrers of `subject` (OCI distribution 1.1): upstream's image index,
    /// unfiltered; `query` is empty for the first page, then the previous page's `next`. A
    /// registry without the referrers API answers 404.
    fn get_referrers<'a>(
        &'a self,
        repo: &'a RepoName,
        subject: &'a Digest,
        query: &'a [(String, String)],
        identity: &'a Identity,
    ) -> ApiFuture<'a, ReferrersPage>;

    /// Exchanges a client's credentials for pull on `repo` (`None`: only checks them), kept
    /// under `identity`. Returns the token upstream issued.
    fn exchange<'a>(
        &'a self,
        repo: Option<&'a RepoName>,
        credentials: &'a Credentials,
        identity: &'a Identity,
    ) -> ApiFuture<'a, ClientToken>;

    /// Keeps `token`, exchanged for `identity` elsewhere (another node), for pull on `repo`,
    /// unless a token is kept for them already. Asks nothing upstream. A registry that does
    /// not keep tokens (the in-memory one) has nothing to do.
    fn adopt<'a>(
        &'a self,
        _repo: &'a RepoName,
        _identity: &'a Identity,
        _token: &'a ClientToken,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }
}

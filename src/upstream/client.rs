//! The registry API over HTTP: [`HttpClient`] authenticates the way the upstream's challenge
//! asks (see [`super::auth`]), follows redirects itself (Docker Hub sends blobs to a CDN, which
//! must not see the registry token), and turns every non-success answer into an
//! [`UpstreamError`]. Every request to the upstream (redirects included) holds one of its
//! [`Slots`] until its answer is dropped; token requests to the token service do not.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use url::Url;

use super::api::{
    ApiFuture, BlobResponse, FetchedManifest, ManifestHead, ReferrersPage, RegistryApi, TagPage,
};
use super::auth::{Authenticator, ClientToken, Credentials, Identity};
use super::error::{SetupError, UpstreamError};
use super::response::{error_reason, header_string, next_link_query, read_limited, status_error};
use super::slots::{Slot, Slots};
use crate::config::UpstreamSettings;
use crate::oci::media::{self, MAX_MANIFEST_BYTES};
use crate::oci::{Digest, Reference, RepoName};

const MAX_REDIRECTS: usize = 5;
/// Bound for requests whose whole answer is small (manifests, tags, tokens).
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// What a small request is left at least, however long it waited for a slot.
const MIN_REQUEST_TIME: Duration = Duration::from_secs(1);

pub struct HttpClient {
    name: String,
    base: Url,
    http: reqwest::Client,
    auth: Authenticator,
    slots: Slots,
    /// How long a blob GET may wait for a slot: as long as it may wait for upstream's first
    /// bytes (a GET that streams a blob has no overall timeout).
    read_timeout: Duration,
}

/// An upstream's answer, holding its request's slot until the answer is dropped.
struct Answer {
    response: reqwest::Response,
    slot: Slot,
}

impl HttpClient {
    pub fn new(settings: &UpstreamSettings) -> Result<Self, SetupError> {
        let base = settings.url.clone();
        let http = super::tls::http_client(settings)?;
        Ok(HttpClient {
            slots: Slots::new(&settings.name, settings.max_concurrent_requests),
            read_timeout: settings.read_timeout,
            name: settings.name.clone(),
            auth: Authenticator::new(&settings.name, super::site_credentials(settings)),
            base,
            http,
        })
    }

    fn url(&self, path: &str) -> Result<Url, UpstreamError> {
        self.base
            .join(path)
            .map_err(|e| UpstreamError::protocol(&self.name, format!("bad url {path}: {e}")))
    }

    async fn manifest_response(
        &self,
        method: Method,
        repo: &RepoName,
        reference: &Reference,
        accept: &str,
        identity: &Identity,
    ) -> Result<Answer, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let response = self
            .send(method, &path, repo, Some(accept), true, identity)
            .await?;
        self.check(response, &format!("manifest {repo}:{reference}"))
            .await
    }

    async fn blob_response(
        &self,
        method: Method,
        repo: &RepoName,
        digest: &Digest,
        identity: &Identity,
    ) -> Result<Answer, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        // A GET streams a blob of any size: no overall timeout, only the read timeout.
        let small = method == Method::HEAD;
        let response = self
            .send(method, &path, repo, None, small, identity)
            .await?;
        self.check(response, &format!("blob {digest} in {repo}"))
            .await
    }

    async fn fetch_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &str,
        identity: &Identity,
    ) -> Result<FetchedManifest, UpstreamError> {
        let answer = self
            .manifest_response(Method::GET, repo, reference, accept, identity)
            .await?;
        let content_type = header_string(answer.response.headers(), CONTENT_TYPE.as_str());
        let digest = header_string(answer.response.headers(), "docker-content-digest");
        if answer
            .response
            .content_length()
            .is_some_and(|len| len > MAX_MANIFEST_BYTES as u64)
        {
            return Err(UpstreamError::protocol(
                &self.name,
                format!("manifest {repo}:{reference} is larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let body = self
            .read_limited(answer, MAX_MANIFEST_BYTES, "manifest")
            .await?;
        Ok(FetchedManifest {
            body,
            content_type,
            digest,
        })
    }

    async fn fetch_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        identity: &Identity,
    ) -> Result<BlobResponse, UpstreamError> {
        let Answer { response, slot } = self
            .blob_response(Method::GET, repo, digest, identity)
            .await?;
        let content_length = response.content_length();
        let upstream = self.name.clone();
        // The slot rides with the body: it is freed when the body is done or dropped.
        let body = response.bytes_stream().map(move |chunk| {
            let _slot = &slot;
            chunk.map_err(|e| UpstreamError::from_reqwest(&upstream, e))
        });
        Ok(BlobResponse {
            content_length,
            body: Box::new(body),
        })
    }

    async fn blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
        identity: &Identity,
    ) -> Result<u64, UpstreamError> {
        let answer = self
            .blob_response(Method::HEAD, repo, digest, identity)
            .await?;
        header_string(answer.response.headers(), "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| UpstreamError::protocol(&self.name, "blob HEAD without Content-Length"))
    }

    async fn tag_page(
        &self,
        repo: &RepoName,
        query: &[(String, String)],
        identity: &Identity,
    ) -> Result<TagPage, UpstreamError> {
        let mut url = self.url(&format!("/v2/{repo}/tags/list"))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let response = self
            .send(
                Method::GET,
                &path,
                repo,
                Some("application/json"),
                true,
                identity,
            )
            .await?;
        let answer = self.check(response, &format!("repository {repo}")).await?;
        let next =
            header_string(answer.response.headers(), "link").and_then(|l| next_link_query(&l));
        let body = self
            .read_limited(answer, MAX_MANIFEST_BYTES, "tag list")
            .await?;
        Ok(TagPage { body, next })
    }

    async fn referrers_index(
        &self,
        repo: &RepoName,
        subject: &Digest,
        query: &[(String, String)],
        identity: &Identity,
    ) -> Result<ReferrersPage, UpstreamError> {
        let mut url = self.url(&format!("/v2/{repo}/referrers/{subject}"))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let response = self
            .send(
                Method::GET,
                &path,
                repo,
                Some(media::OCI_INDEX),
                true,
                identity,
            )
            .await?;
        let answer = self
            .check(response, &format!("referrers of {subject} in {repo}"))
            .await?;
        let next =
            header_string(answer.response.headers(), "link").and_then(|l| next_link_query(&l));
        let body = self
            .read_limited(answer, MAX_MANIFEST_BYTES, "referrers")
            .await?;
        Ok(ReferrersPage { body, next })
    }

    async fn exchange_credentials(
        &self,
        repo: Option<&RepoName>,
        credentials: &Credentials,
        identity: &Identity,
    ) -> Result<ClientToken, UpstreamError> {
        if !self.auth.scheme_known() {
            // Learn the scheme from the upstream's challenge to an anonymous ping.
            let url = self.url("/v2/")?;
            let Answer { response, .. } = self.follow(Method::GET, url, None, None, true).await?;
            if response.status() == StatusCode::UNAUTHORIZED {
                let challenge = header_string(response.headers(), WWW_AUTHENTICATE.as_str());
                self.auth.learn(challenge.as_deref(), "", identity).await;
            } else {
                self.auth.mark_open_if_unknown();
            }
        }
        let scope = repo
            .map(|repo| format!("repository:{repo}:pull"))
            .unwrap_or_default();
        self.auth
            .exchange(&self.http, &scope, credentials, identity)
            .await
    }

    /// Sends a request with authentication, answering one 401 challenge and following
    /// redirects. Non-success statuses are returned as they are, for the caller to check.
    async fn send(
        &self,
        method: Method,
        path: &str,
        repo: &RepoName,
        accept: Option<&str>,
        small: bool,
        identity: &Identity,
    ) -> Result<Answer, UpstreamError> {
        let scope = format!("repository:{repo}:pull");
        let url = self.url(path)?;
        let mut authorization = self
            .auth
            .authorization(&self.http, &scope, identity)
            .await?;
        let mut answered_challenge = false;
        loop {
            let answer = self
                .follow(
                    method.clone(),
                    url.clone(),
                    accept,
                    authorization.as_deref(),
                    small,
                )
                .await?;
            if answer.response.status() != StatusCode::UNAUTHORIZED {
                if authorization.is_none() {
                    self.auth.mark_open_if_unknown();
                }
                return Ok(answer);
            }
            if answered_challenge {
                return Ok(answer);
            }
            answered_challenge = true;
            let challenge = header_string(answer.response.headers(), WWW_AUTHENTICATE.as_str());
            let learned = match identity {
                // A passed-through grant cannot be renewed here: the client must log in again.
                Identity::Client(_) if authorization.is_some() => return Ok(answer),
                // A node that never asked upstream before learns the scheme, keeping the
                // client's token (exchanged on another node) to answer with.
                Identity::Client(_) => self.auth.learn_scheme(challenge.as_deref()),
                Identity::Anonymous | Identity::Site => {
                    self.auth
                        .learn(challenge.as_deref(), &scope, identity)
                        .await
                }
            };
            if !learned {
                return Ok(answer);
            }
            authorization = self
                .auth
                .authorization(&self.http, &scope, identity)
                .await?;
        }
    }

    /// One request, following up to [`MAX_REDIRECTS`] redirects. Credentials go only to the
    /// upstream's own host, never to a redirect target elsewhere (a CDN with a signed URL).
    /// One slot covers the request and its redirects; waiting for it counts toward the
    /// request's timeout.
    async fn follow(
        &self,
        method: Method,
        mut url: Url,
        accept: Option<&str>,
        authorization: Option<&str>,
        small: bool,
    ) -> Result<Answer, UpstreamError> {
        let started = Instant::now();
        let patience = if small {
            SMALL_REQUEST_TIMEOUT
        } else {
            self.read_timeout
        };
        let slot = self.slots.take(patience).await?;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.http.request(method.clone(), url.clone());
            if small {
                let left = SMALL_REQUEST_TIMEOUT.saturating_sub(started.elapsed());
                request = request.timeout(left.max(MIN_REQUEST_TIME));
            }
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(authorization) = authorization {
                if url.origin() == self.base.origin() {
                    request = request.header(AUTHORIZATION, authorization);
                }
            }
            let response = request
                .send()
                .await
                .map_err(|e| UpstreamError::from_reqwest(&self.name, e))?;
            if !response.status().is_redirection() {
                return Ok(Answer { response, slot });
            }
            let location =
                header_string(response.headers(), LOCATION.as_str()).ok_or_else(|| {
                    UpstreamError::protocol(&self.name, "redirect without a Location header")
                })?;
            url = url.join(&location).map_err(|e| {
                UpstreamError::protocol(&self.name, format!("bad redirect {location:?}: {e}"))
            })?;
        }
        Err(UpstreamError::protocol(
            &self.name,
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }

    /// Passes a success through; turns anything else into the matching error.
    async fn check(&self, answer: Answer, what: &str) -> Result<Answer, UpstreamError> {
        let status = answer.response.status();
        if status.is_success() {
            return Ok(answer);
        }
        let response = answer.response;
        Err(match status {
            StatusCode::NOT_FOUND => UpstreamError::NotFound {
                upstream: self.name.clone(),
                what: what.to_owned(),
                reason: error_reason(response).await,
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => UpstreamError::Unauthorized {
                upstream: self.name.clone(),
                reason: error_reason(response).await,
            },
            _ => status_error(&self.name, response, what).await,
        })
    }

    /// The whole body, up to `limit` bytes; the slot is freed once it is read.
    async fn read_limited(
        &self,
        answer: Answer,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, UpstreamError> {
        let Answer { response, slot } = answer;
        let body = read_limited(&self.name, response, limit, what).await;
        drop(slot);
        body
    }
}

impl RegistryApi for HttpClient {
    fn get_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        reference: &'a Reference,
        accept: &'a str,
        identity: &'a Identity,
    ) -> ApiFuture<'a, FetchedManifest> {
        Box::pin(self.fetch_manifest(repo, reference, accept, identity))
    }

    fn head_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        reference: &'a Reference,
        accept: &'a str,
        identity: &'a Identity,
    ) -> ApiFuture<'a, ManifestHead> {
        Box::pin(async move {
            let answer = self
                .manifest_response(Method::HEAD, repo, reference, accept, identity)
                .await?;
            let headers = answer.response.headers();
            Ok(ManifestHead {
                digest: header_string(headers, "docker-content-digest"),
                content_type: header_string(headers, CONTENT_TYPE.as_str()),
            })
        })
    }

    fn get_blob<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        identity: &'a Identity,
    ) -> ApiFuture<'a, BlobResponse> {
        Box::pin(self.fetch_blob(repo, digest, identity))
    }

    fn head_blob<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        identity: &'a Identity,
    ) -> ApiFuture<'a, u64> {
        Box::pin(self.blob_size(repo, digest, identity))
    }

    fn get_tags<'a>(
        &'a self,
        repo: &'a RepoName,
        query: &'a [(String, String)],
        identity: &'a Identity,
    ) -> ApiFuture<'a, TagPage> {
        Box::pin(self.tag_page(repo, query, identity))
    }

    fn get_referrers<'a>(
        &'a self,
        repo: &'a RepoName,
        subject: &'a Digest,
        query: &'a [(String, String)],
        identity: &'a Identity,
    ) -> ApiFuture<'a, ReferrersPage> {
        Box::pin(self.referrers_index(repo, subject, query, identity))
    }

    fn exchange<'a>(
        &'a self,
        repo: Option<&'a RepoName>,
        credentials: &'a Credentials,
        identity: &'a Identity,
    ) -> ApiFuture<'a, ClientToken> {
        Box::pin(self.exchange_credentials(repo, credentials, identity))
    }

    fn adopt<'a>(
        &'a self,
        repo: &'a RepoName,
        identity: &'a Identity,
        token: &'a ClientToken,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let scope = format!("repository:{repo}:pull");
            self.auth.adopt(&scope, identity, token).await
        })
    }
}

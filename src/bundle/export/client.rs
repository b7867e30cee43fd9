//! A registry client for the export: reads manifests, referrers and blobs of one berth over
//! its `/v2/` API, answering its challenges the way docker does. A Bearer challenge sends the
//! user (if any) to the realm it names for a token with the challenge's scope, kept per
//! repository; a Basic challenge gets the credentials directly. Without `--user` the token is
//! anonymous, which is all the open mirror asks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{header, Response, StatusCode};
use serde::Deserialize;
use url::Url;

use super::ExportError;
use crate::oci::{media, Digest};
use crate::upstream::challenge::{self, Scheme};

/// The media type of a referrers answer and of every index in it.
const OCI_INDEX: &str = media::OCI_INDEX;

pub struct Client {
    http: reqwest::Client,
    base: Url,
    credentials: Option<(String, String)>,
    /// The token last granted for each repository.
    tokens: Mutex<HashMap<String, String>>,
}

/// A manifest as the berth served it, its digest checked.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// One entry of a referrers answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferrerDescriptor {
    pub digest: Digest,
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
}

#[derive(Deserialize)]
struct ReferrersIndex {
    #[serde(default)]
    manifests: Vec<ReferrerDescriptor>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    code: String,
    #[serde(default)]
    message: String,
}

impl Client {
    pub fn new(base: Url, credentials: Option<(String, String)>) -> Result<Self, ExportError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("berth-export/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ExportError::Client(e.to_string()))?;
        Ok(Client {
            http,
            base,
            credentials,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The manifest `reference` of `repository`, checked against the digest it was asked by
    /// (or, by tag, against the `Docker-Content-Digest` the berth sent).
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, ExportError> {
        let path = format!("{repository}/manifests/{reference}");
        let response = self
            .get(repository, &path, Some(&media::accept_all()))
            .await?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(media::normalize_content_type)
            .unwrap_or_default();
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&path, e))?;
        if bytes.len() > media::MAX_MANIFEST_BYTES {
            return Err(ExportError::Invalid(format!(
                "{repository}:{reference}: a manifest of {} bytes",
                bytes.len()
            )));
        }
        let digest = Digest::of(&bytes);
        let expected = reference.parse::<Digest>().ok().or(announced);
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(ExportError::Digest {
                digest: expected,
                got: digest,
            });
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The manifests that name `subject` as theirs (signatures, SBOMs, attestations).
    pub async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Vec<ReferrerDescriptor>, ExportError> {
        let path = format!("{repository}/referrers/{subject}");
        let response = match self.get(repository, &path, Some(OCI_INDEX)).await {
            Ok(response) => response,
            // A registry without the referrers API: nothing refers to anything there.
            Err(ExportError::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&path, e))?;
        let index: ReferrersIndex = serde_json::from_slice(&bytes).map_err(|e| {
            ExportError::Invalid(format!("the referrers of {repository}@{subject}: {e}"))
        })?;
        Ok(index.manifests)
    }

    /// A blob's response, ready to be streamed.
    pub async fn blob(&self, repository: &str, digest: &Digest) -> Result<Response, ExportError> {
        self.get(repository, &format!("{repository}/blobs/{digest}"), None)
            .await
    }

    /// `GET /v2/<path>`, answering one challenge; any answer but 200 is an error.
    async fn get(
        &self,
        repository: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response, ExportError> {
        let url = self
            .base
            .join(&format!("v2/{path}"))
            .map_err(|e| ExportError::Invalid(format!("{path}: {e}")))?;
        let mut retried = false;
        loop {
            let mut request = self.http.get(url.clone());
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            let token = self.token_for(repository);
            request = match (&token, &self.credentials) {
                (Some(token), _) => request.bearer_auth(token),
                (None, Some((user, password))) if retried => {
                    request.basic_auth(user, Some(password))
                }
                _ => request,
            };
            let response = request.send().await.map_err(|e| self.transport(path, e))?;
            if response.status() == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                self.answer_challenge(repository, &response).await?;
                continue;
            }
            if response.status() == StatusCode::OK {
                return Ok(response);
            }
            return Err(self.refusal(path, response).await);
        }
    }

    fn token_for(&self, repository: &str) -> Option<String> {
        self.tokens
            .lock()
            .ok()
            .and_then(|tokens| tokens.get(repository).cloned())
    }

    /// Gets a token for what a 401 asked (Bearer); a Basic challenge needs nothing fetched.
    async fn answer_challenge(
        &self,
        repository: &str,
        response: &Response,
    ) -> Result<(), ExportError> {
        let challenges: Vec<_> = response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        let Some(bearer) = challenges.iter().find(|c| c.scheme == Scheme::Bearer) else {
            return Ok(());
        };
        let realm = bearer
            .param("realm")
            .ok_or_else(|| ExportError::Invalid("a Bearer challenge without a realm".into()))?;
        let mut url = Url::parse(realm)
            .or_else(|_| self.base.join(realm))
            .map_err(|e| ExportError::Invalid(format!("token realm {realm:?}: {e}")))?;
        let default_scope = format!("repository:{repository}:pull");
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = bearer.param("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", bearer.param("scope").unwrap_or(&default_scope));
        }
        let mut request = self.http.get(url.clone());
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let answer = request
            .send()
            .await
            .map_err(|e| self.transport(url.as_str(), e))?;
        if !answer.status().is_success() {
            return Err(ExportError::Denied(format!(
                "the token service at {realm} answered {} for {repository}{}",
                answer.status(),
                self.credentials_hint()
            )));
        }
        let body = answer
            .bytes()
            .await
            .map_err(|e| self.transport(url.as_str(), e))?;
        let token: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| ExportError::Invalid(format!("token answer of {realm}: {e}")))?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or_else(|| ExportError::Invalid(format!("{realm} answered no token")))?;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(repository.to_owned(), token);
        }
        Ok(())
    }

    fn credentials_hint(&self) -> &'static str {
        if self.credentials.is_some() {
            ""
        } else {
            " (a private project needs --user and --password-stdin)"
        }
    }

    fn transport(&self, path: &str, e: reqwest::Error) -> ExportError {
        ExportError::Unreachable {
            url: format!("{}v2/{path}", self.base),
            reason: error_chain(&e),
        }
    }

    /// The error an answer other than 200 stands for, in the registry's own words.
    async fn refusal(&self, path: &str, response: Response) -> ExportError {
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let errors = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.errors)
            .unwrap_or_default();
        let said = errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let said = if said.is_empty() {
            status.to_string()
        } else {
            said
        };
        match status {
            StatusCode::NOT_FOUND => ExportError::NotFound(format!("{path}: {said}")),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                ExportError::Denied(format!("{path}: {said}{}", self.credentials_hint()))
            }
            _ => ExportError::Registry(format!("{path}: {said}")),
        }
    }
}

/// An error with its sources, `: `-separated (reqwest's own message hides the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

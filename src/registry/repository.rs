//! One face for the two kinds of repository a name can resolve to: a private project's
//! ([`Target::Project`]) and a mirrored upstream's ([`Target::Mirror`]). The HTTP layer
//! resolves a name to a [`Target`], checks the caller's access, binds the target to the
//! caller, and from then on talks to a [`Repository`] without knowing which kind it is: each
//! endpoint is written once.
//!
//! The mirror is read-only, as Distribution's proxy is: its writes answer `UNSUPPORTED`
//! (the trait's defaults), and [`Target::admits`] says so before any token is asked for.

use bytes::Bytes;

use super::error::RegistryError;
use super::listing::{Listing, PageRequest};
use super::mirror::{BlobRead, ManifestReply, Mirror};
use super::namespace::MirrorRepo;
use super::private::manifest::PutManifest;
use super::private::upload::{Started, UploadBody, UploadState};
use super::private::Projects;
use crate::auth::scope::Action;
use crate::auth::seal::UpstreamGrant;
use crate::cache::BlobBody;
use crate::oci::media::AcceptList;
use crate::oci::ErrorCode;
use crate::oci::{Digest, Reference, RepoName};

/// What a client's repository name resolved to.
pub enum Target {
    /// A repository of a private project: berth's own, the whole API.
    Project(RepoName),
    /// A repository on a configured upstream, through the mirror: read-only.
    Mirror(MirrorRepo),
}

impl Target {
    /// Refuses what this kind of repository never does, before any token is asked for: the
    /// mirror namespace takes no writes, whoever asks.
    pub fn admits(&self, action: Action) -> Result<(), RegistryError> {
        match self {
            Target::Mirror(_) if action != Action::Pull => Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("{action} is not supported: the mirror namespace is read-only; push to a private project instead"),
            )),
            _ => Ok(()),
        }
    }
}

/// How a manifest is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRead {
    /// A `HEAD`: how update bots check a tag; it starts nothing.
    Head,
    /// A `GET`: how a pull starts (the mirror prefetches the image's blobs).
    Get,
}

/// Every operation of the `/v2/<name>/…` API on one repository, bound to its caller.
///
/// `async fn` in a public trait cannot promise `Send` futures; none is needed: handlers run
/// to completion on the actix worker that took the request.
#[allow(async_fn_in_trait)]
pub trait Repository {
    /// The repository's name as the client wrote it (for `Location` and `Link` headers).
    fn name(&self) -> &str;

    async fn manifest(
        &self,
        reference: &Reference,
        accept: &AcceptList,
        read: ManifestRead,
    ) -> Result<ManifestReply, RegistryError>;

    async fn blob_size(&self, digest: &Digest) -> Result<u64, RegistryError>;

    async fn blob(&self, digest: &Digest, read: BlobRead) -> Result<BlobBody, RegistryError>;

    async fn tags(&self, page: &PageRequest) -> Result<Listing, RegistryError>;

    /// The referrers of `subject` as an OCI index, filtered by `artifact_type` when given.
    async fn referrers(
        &self,
        _subject: &Digest,
        _artifact_type: Option<&str>,
    ) -> Result<Bytes, RegistryError> {
        Err(unsupported("the referrers API"))
    }

    async fn put_manifest(
        &self,
        _reference: &Reference,
        _content_type: Option<&str>,
        _body: Bytes,
    ) -> Result<PutManifest, RegistryError> {
        Err(unsupported("pushing a manifest"))
    }

    async fn delete_manifest(&self, _reference: &Reference) -> Result<(), RegistryError> {
        Err(unsupported("deleting a manifest"))
    }

    async fn delete_blob(&self, _digest: &Digest) -> Result<(), RegistryError> {
        Err(unsupported("deleting a blob"))
    }

    /// Links `digest` from the repository `from` (as the client named it). `None`: not
    /// mounted (unknown, unreadable, or not a repository of this kind); upload instead.
    async fn mount(&self, _digest: &Digest, _from: &str) -> Result<Option<Digest>, RegistryError> {
        Err(unsupported("mounting a blob"))
    }

    /// A new upload, or the finished blob when `monolithic` names its digest.
    async fn start_upload(
        &self,
        _monolithic: Option<Digest>,
        _body: impl UploadBody,
    ) -> Result<Started, RegistryError> {
        Err(unsupported("pushing a blob"))
    }

    /// A chunk of upload `id`, starting at `start` when the client said where.
    async fn append(
        &self,
        _id: &str,
        _start: Option<u64>,
        _body: impl UploadBody,
    ) -> Result<UploadState, RegistryError> {
        Err(unsupported("pushing a blob"))
    }

    async fn upload_status(&self, _id: &str) -> Result<UploadState, RegistryError> {
        Err(unsupported("pushing a blob"))
    }

    /// The last bytes of upload `id`, then the digest check and the commit.
    async fn finish_upload(
        &self,
        _id: &str,
        _digest: &Digest,
        _body: impl UploadBody,
    ) -> Result<(), RegistryError> {
        Err(unsupported("pushing a blob"))
    }

    async fn cancel_upload(&self, _id: &str) -> Result<(), RegistryError> {
        Err(unsupported("pushing a blob"))
    }
}

fn unsupported(what: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{what} is not supported on the mirror namespace"),
    )
}

/// A private project's repository, for one caller.
pub struct ProjectRepository<'a, F> {
    projects: &'a Projects,
    repo: RepoName,
    /// Whether the caller may pull a repository (the source of a mount).
    may_pull: F,
}

impl<'a, F: Fn(&RepoName) -> bool> ProjectRepository<'a, F> {
    pub fn new(projects: &'a Projects, repo: RepoName, may_pull: F) -> Self {
        ProjectRepository {
            projects,
            repo,
            may_pull,
        }
    }
}

impl<F: Fn(&RepoName) -> bool> Repository for ProjectRepository<'_, F> {
    fn name(&self) -> &str {
        self.repo.as_str()
    }

    async fn manifest(
        &self,
        reference: &Reference,
        _accept: &AcceptList,
        _read: ManifestRead,
    ) -> Result<ManifestReply, RegistryError> {
        let manifest = self.projects.manifest(&self.repo, reference).await?;
        Ok(ManifestReply {
            manifest,
            stale: false,
        })
    }

    async fn blob_size(&self, digest: &Digest) -> Result<u64, RegistryError> {
        self.projects.blob_size(&self.repo, digest).await
    }

    async fn blob(&self, digest: &Digest, read: BlobRead) -> Result<BlobBody, RegistryError> {
        self.projects.blob(&self.repo, digest, read).await
    }

    async fn tags(&self, page: &PageRequest) -> Result<Listing, RegistryError> {
        self.projects.tags(&self.repo, page).await
    }

    async fn referrers(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, RegistryError> {
        self.projects
            .referrers(&self.repo, subject, artifact_type)
            .await
    }

    async fn put_manifest(
        &self,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest, RegistryError> {
        self.projects
            .put_manifest(&self.repo, reference, content_type, body)
            .await
    }

    async fn delete_manifest(&self, reference: &Reference) -> Result<(), RegistryError> {
        self.projects.delete_manifest(&self.repo, reference).await
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), RegistryError> {
        self.projects.delete_blob(&self.repo, digest).await
    }

    /// A `from` outside the private projects, or one the caller may not pull, is no source.
    async fn mount(&self, digest: &Digest, from: &str) -> Result<Option<Digest>, RegistryError> {
        let Some(Ok(from)) = self.projects.repo_of(from) else {
            return Ok(None);
        };
        let readable = (self.may_pull)(&from);
        self.projects
            .mount(&self.repo, digest, &from, readable)
            .await
    }

    async fn start_upload(
        &self,
        monolithic: Option<Digest>,
        body: impl UploadBody,
    ) -> Result<Started, RegistryError> {
        self.projects
            .start_upload(&self.repo, monolithic, body)
            .await
    }

    async fn append(
        &self,
        id: &str,
        start: Option<u64>,
        body: impl UploadBody,
    ) -> Result<UploadState, RegistryError> {
        self.projects.append(&self.repo, id, start, body).await
    }

    async fn upload_status(&self, id: &str) -> Result<UploadState, RegistryError> {
        self.projects.upload_status(&self.repo, id).await
    }

    async fn finish_upload(
        &self,
        id: &str,
        digest: &Digest,
        body: impl UploadBody,
    ) -> Result<(), RegistryError> {
        self.projects
            .finish_upload(&self.repo, id, digest, body)
            .await
    }

    async fn cancel_upload(&self, id: &str) -> Result<(), RegistryError> {
        self.projects.cancel_upload(&self.repo, id).await
    }
}

/// A mirrored repository, for one caller: berth speaks upstream as that caller.
pub struct MirrorRepository<'a> {
    mirror: &'a Mirror,
    target: MirrorRepo,
    /// containerd's `?ns=`, carried into the links the client follows.
    ns: Option<String>,
}

impl<'a> MirrorRepository<'a> {
    /// `grant`: the caller's passed-through upstream grant, opened from its token, if it
    /// logged in with upstream credentials (on this node or another); else berth speaks as the
    /// upstream's default identity.
    pub async fn new(
        mirror: &'a Mirror,
        mut target: MirrorRepo,
        ns: Option<String>,
        grant: Option<&UpstreamGrant>,
    ) -> Self {
        if let Some(grant) = grant {
            mirror.act_for(&mut target, grant).await;
        }
        MirrorRepository { mirror, target, ns }
    }
}

impl Repository for MirrorRepository<'_> {
    fn name(&self) -> &str {
        &self.target.client_name
    }

    async fn manifest(
        &self,
        reference: &Reference,
        accept: &AcceptList,
        read: ManifestRead,
    ) -> Result<ManifestReply, RegistryError> {
        let reply = self
            .mirror
            .manifest(&self.target, reference, accept)
            .await?;
        if read == ManifestRead::Get {
            self.mirror.prefetch(&self.target, &reply.manifest);
        }
        Ok(reply)
    }

    async fn blob_size(&self, digest: &Digest) -> Result<u64, RegistryError> {
        self.mirror.blob_size(&self.target, digest).await
    }

    async fn blob(&self, digest: &Digest, read: BlobRead) -> Result<BlobBody, RegistryError> {
        self.mirror.blob(&self.target, digest, read).await
    }

    async fn tags(&self, page: &PageRequest) -> Result<Listing, RegistryError> {
        self.mirror
            .tags(&self.target, page, self.ns.as_deref())
            .await
    }

    async fn referrers(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, RegistryError> {
        self.mirror
            .referrers(&self.target, subject, artifact_type)
            .await
    }
}

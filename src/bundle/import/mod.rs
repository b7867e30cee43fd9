//! `berth import`: an OCI image layout (a directory or a tar of one, as `berth export` or
//! `skopeo copy … oci-archive:` write it) loaded into the mirror cache as pinned content of
//! its upstream names, or into a private project as pushed content.
//!
//! It runs in three steps, the same on a running berth (over its admin socket) and on the
//! data directory of a stopped one:
//! 1. [`plan`]: the bundle's `index.json` and manifests are read (each checked against its
//!    digest) and walked, so a bundle missing a config or layer is refused before any byte
//!    is copied. An index may leave out child manifests (platforms not exported); a manifest
//!    may not leave out its blobs.
//! 2. [`stage`]: every blob not already stored is streamed into a staging directory of the
//!    data directory (`import/<session>/`), hashed as it is written and renamed to its digest
//!    only when it matches. A staged blob survives an interruption: running the same bundle
//!    again skips what is staged or stored (the bundle's copy is still hashed).
//! 3. [`commit`]: the plan is walked again over what is staged and stored (the daemon
//!    trusts no client), then committed: blobs, manifests, links, pin records, tags last.
//!    Only then does anything become visible; a failure before it removes the staging.

pub mod commit;
pub mod layout;
pub mod plan;
pub mod stage;
pub mod verify;
mod write;

use std::io;

use crate::oci::Digest;

/// Why a bundle cannot be imported: what is wrong with it, naming the blob when one is.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("blob {digest} {problem}")]
    Blob { digest: Digest, problem: String },
    #[error("{0}")]
    Layout(String),
    #[error("cannot write the staged copy: {0}")]
    Write(#[source] io::Error),
}

impl BundleError {
    pub fn blob(digest: &Digest, problem: impl Into<String>) -> Self {
        BundleError::Blob {
            digest: digest.clone(),
            problem: problem.into(),
        }
    }

    pub fn layout(message: impl Into<String>) -> Self {
        BundleError::Layout(message.into())
    }

    fn read(digest: &Digest, e: io::Error) -> Self {
        BundleError::blob(digest, format!("cannot be read: {e}"))
    }
}

/// A staging session's name: the first 32 hex digits of the digest of the bundle's
/// `index.json`, so running the same bundle again finds what an interrupted run staged.
pub fn session_of(index_json: &[u8]) -> String {
    Digest::of(index_json).hex()[..32].to_owned()
}

/// Whether `session` is a name [`session_of`] gives (it becomes a directory name).
pub fn is_session(session: &str) -> bool {
    session.len() == 32 && session.bytes().all(|b| b.is_ascii_hexdigit())
}

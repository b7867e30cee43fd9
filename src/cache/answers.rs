//! Upstream's referrers answers, kept in the index for when upstream cannot be asked. Read and
//! written off the async workers: a record holds a whole list of descriptors.

use std::sync::Arc;

use super::{blocking, Cache};
use crate::oci::{Digest, RepoName};
use crate::storage::index::ReferrersAnswer;
use crate::storage::StorageError;

impl Cache {
    /// The last referrers answer upstream gave for `subject` in `upstream/repo`.
    pub async fn referrers_answer(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Option<ReferrersAnswer>, StorageError> {
        let storage = Arc::clone(&self.storage);
        let (upstream, repo, subject) = (upstream.to_owned(), repo.clone(), subject.clone());
        blocking(move || storage.index.referrers_answer(&upstream, &repo, &subject)).await
    }

    /// Keeps upstream's answer, replacing the one before. Not flushed at once: losing the
    /// last second of answers to a crash only means asking again (pins flush their own).
    pub async fn put_referrers_answer(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        answer: ReferrersAnswer,
    ) -> Result<(), StorageError> {
        let storage = Arc::clone(&self.storage);
        let (upstream, repo, subject) = (upstream.to_owned(), repo.clone(), subject.clone());
        blocking(move || {
            storage
                .index
                .put_referrers_answer(&upstream, &repo, &subject, &answer)
        })
        .await
    }
}

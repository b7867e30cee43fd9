//! The `answers` tree: upstream's referrers API answers, kept so that a mirror can answer
//! referrers when upstream is offline or failing (see `registry::mirror::referrers`).
//!
//! | tree      | key                                   | value               |
//! |-----------|---------------------------------------|---------------------|
//! | `answers` | `<upstream>/<repo>@sha256:<hex>` (the subject, as in `links`) | [`ReferrersAnswer`] |
//!
//! One record per subject, replaced by each answer upstream gives; the descriptors are kept as
//! upstream wrote them (JSON objects), already bounded by the caller.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::mirror::link_key;
use super::{decode, encode, Index, IndexError};
use crate::oci::{Digest, RepoName};

/// Upstream's referrers of one subject, merged over its pages, when it last answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferrersAnswer {
    /// The descriptors of upstream's index, unfiltered.
    pub descriptors: Vec<Value>,
    /// Upstream listed more than the cap (or more pages than are followed): the rest is missing.
    #[serde(default)]
    pub truncated: bool,
    /// When upstream answered, in milliseconds since the Unix epoch.
    pub checked_at_ms: u64,
}

impl Index {
    pub fn referrers_answer(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Option<ReferrersAnswer>, IndexError> {
        let key = link_key(upstream, repo, subject);
        self.answers
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    pub fn put_referrers_answer(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        answer: &ReferrersAnswer,
    ) -> Result<(), IndexError> {
        self.answers
            .insert(link_key(upstream, repo, subject), encode(answer))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_kept_per_upstream_repository_and_subject() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let repo: RepoName = "library/app".parse().unwrap();
        let subject = Digest::of(b"subject");
        let answer = ReferrersAnswer {
            descriptors: vec![serde_json::json!({"digest": Digest::of(b"sig").to_string()})],
            truncated: false,
            checked_at_ms: 7,
        };
        index
            .put_referrers_answer("docker.io", &repo, &subject, &answer)
            .unwrap();
        let read = |upstream: &str, subject: &Digest| {
            index.referrers_answer(upstream, &repo, subject).unwrap()
        };
        assert_eq!(read("docker.io", &subject), Some(answer));
        assert_eq!(read("ghcr.io", &subject), None);
        assert_eq!(read("docker.io", &Digest::of(b"other")), None);
        // Written before `truncated` existed: read as complete.
        let old = br#"{"descriptors":[],"checked_at_ms":1}"#;
        let record: ReferrersAnswer = decode(b"k", old).unwrap();
        assert!(!record.truncated);
    }
}

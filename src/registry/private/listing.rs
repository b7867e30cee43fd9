//! Listings of private content: tags (sorted, paginated with `n`/`last`), the catalog of
//! repositories the caller may see, and the referrers of a manifest.

use bytes::Bytes;

use super::Projects;
use crate::oci::media;
use crate::oci::ErrorCode;
use crate::oci::{Digest, RepoName};
use crate::registry::error::RegistryError;
use crate::registry::mirror::storage_error;

/// A page of a sorted listing.
pub struct Page {
    pub body: Bytes,
    /// `last` and `n` for the next page, when there is one.
    pub next: Option<(String, usize)>,
}

/// Entries after `last`, at most `n` of them.
fn paginate(
    mut entries: Vec<String>,
    n: Option<usize>,
    last: Option<&str>,
) -> (Vec<String>, Option<(String, usize)>) {
    if let Some(last) = last {
        entries.retain(|e| e.as_str() > last);
    }
    match n {
        Some(n) if entries.len() > n => {
            entries.truncate(n);
            let next = entries.last().cloned().map(|last| (last, n));
            (entries, next)
        }
        _ => (entries, None),
    }
}

fn json(value: serde_json::Value) -> Result<Bytes, RegistryError> {
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| RegistryError::internal("cannot render the listing", e))
}

impl Projects {
    pub fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, RegistryError> {
        let index = &self.storage().index;
        let tags: Vec<String> = index
            .repo_tags(repo)
            .map_err(storage_error)?
            .into_iter()
            .map(|(tag, _)| tag.to_string())
            .collect();
        if tags.is_empty()
            && !index
                .repositories()
                .map_err(storage_error)?
                .iter()
                .any(|r| r == repo.as_str())
        {
            return Err(RegistryError::new(
                ErrorCode::NameUnknown,
                format!("repository {repo} is not known"),
            ));
        }
        let (tags, next) = paginate(tags, n, last);
        Ok(Page {
            body: json(serde_json::json!({ "name": repo.as_str(), "tags": tags }))?,
            next,
        })
    }

    /// The repositories for which `visible` says yes.
    pub fn catalog(
        &self,
        visible: impl Fn(&str) -> bool,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, RegistryError> {
        let repos: Vec<String> = self
            .storage()
            .index
            .repositories()
            .map_err(storage_error)?
            .into_iter()
            .filter(|r| visible(r))
            .collect();
        let (repos, next) = paginate(repos, n, last);
        Ok(Page {
            body: json(serde_json::json!({ "repositories": repos }))?,
            next,
        })
    }

    /// The referrers of `subject` as an OCI index, filtered by `artifact_type` when given.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, RegistryError> {
        let records = self
            .storage()
            .index
            .referrers(repo, subject)
            .map_err(storage_error)?;
        let manifests: Vec<_> = records
            .into_iter()
            .filter(|r| artifact_type.is_none() || r.artifact_type.as_deref() == artifact_type)
            .collect();
        json(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::paginate;

    #[test]
    fn pagination() {
        let all: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(paginate(all.clone(), None, None), (all.clone(), None));
        assert_eq!(
            paginate(all.clone(), Some(2), None),
            (vec!["a".into(), "b".into()], Some(("b".into(), 2)))
        );
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            (vec!["c".into(), "d".into()], None)
        );
        assert_eq!(paginate(all.clone(), Some(0), None).0, Vec::<String>::new());
        assert_eq!(paginate(all, None, Some("d")).0, Vec::<String>::new());
    }
}

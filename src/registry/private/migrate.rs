//! The private projects' records of a node, copied into the shared store after its blobs
//! (`storage::migrate`), in the records the shared projects read ([`super::shared`]): blob
//! links with their sizes, manifests with their media types and referrer records, tags, and
//! the catalog entries those write. Content first, then what names it: links, manifests, and
//! tags last, so that no record points at something not yet there, and none at a blob that
//! was not copied. Every record is an idempotent PUT, so a rerun rewrites what is there.
//!
//! Mirrored repositories' records (tags, guard marks, pins) stay with the node: they are a
//! cache of upstream, which every node fills for itself.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::shared::{PushedRecord, SharedRecords};
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, Manifest, RepoName};
use crate::storage::index::ReferrerRecord;
use crate::storage::migrate::{index_stream, Progress};
use crate::storage::shared::SharedStore;
use crate::storage::{Storage, StorageError};

/// Records written at once (each a small PUT).
const RECORDS_AT_ONCE: usize = 16;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordReport {
    pub links: u64,
    pub manifests: u64,
    pub referrers: u64,
    pub tags: u64,
    /// Records left out because what they name was not copied.
    pub skipped: u64,
}

impl RecordReport {
    pub fn written(&self) -> u64 {
        self.links + self.manifests + self.referrers + self.tags
    }
}

/// A manifest read back from this node, ready for the shared store.
struct LocalManifest {
    repo: RepoName,
    digest: Digest,
    media_type: String,
    body: Bytes,
    referrer: Option<(Digest, ReferrerRecord)>,
}

/// Copies the private projects' records. `not_copied`: blobs the blob copy left out.
pub async fn copy_records(
    storage: Arc<Storage>,
    store: &SharedStore,
    not_copied: HashSet<Digest>,
    progress: &dyn Progress,
) -> Result<RecordReport, StorageError> {
    let records = SharedRecords { store };
    let not_copied = Arc::new(not_copied);
    let mut report = RecordReport::default();

    // Links, with the sizes the index knows (a link without one would be unreadable).
    let unusable = Arc::clone(&not_copied);
    let links = index_stream(Arc::clone(&storage), move |index, send| {
        for link in index.repo_blob_links() {
            let sized = link.and_then(|(repo, digest)| {
                let size = match unusable.contains(&digest) {
                    true => None,
                    false => index.blob(&digest)?.map(|record| record.size),
                };
                Ok((repo, digest, size))
            });
            if !send(sized) {
                break;
            }
        }
    });
    let mut writes = links
        .map(|link| async {
            let (repo, digest, size) = link?;
            let Some(size) = size else {
                progress.warn(&format!(
                    "{repo}: link to {digest} left out: blob not copied"
                ));
                return Ok(false);
            };
            records.link_blob(&repo, &digest, size).await?;
            Ok::<_, StorageError>(true)
        })
        .buffer_unordered(RECORDS_AT_ONCE);
    while let Some(written) = writes.next().await {
        match written? {
            true => report.links += 1,
            false => report.skipped += 1,
        }
    }
    drop(writes);

    // Manifests: bytes read back and verified, referrer records from the index.
    let unusable = Arc::clone(&not_copied);
    let files = Arc::clone(&storage);
    let manifests = index_stream(Arc::clone(&storage), move |index, send| {
        for entry in index.repo_manifest_records() {
            let local = entry.map(|(repo, digest, media_type)| {
                if unusable.contains(&digest) {
                    return Err((repo, digest, "its bytes were not copied".to_owned()));
                }
                local_manifest(&files, index, repo, digest, media_type)
            });
            if !send(local) {
                break;
            }
        }
    });
    let mut manifests_left_out: HashSet<Digest> = HashSet::new();
    let mut writes = manifests
        .map(|entry| async {
            let local = match entry? {
                Ok(local) => local,
                Err((repo, digest, why)) => return Ok(Err((repo, digest, why))),
            };
            let pushed = PushedRecord {
                digest: &local.digest,
                media_type: &local.media_type,
                body: local.body.clone(),
                tag: None,
                referrer: local.referrer.as_ref().map(|(s, r)| (s, r)),
            };
            records.put_manifest(&local.repo, &pushed).await?;
            Ok::<_, StorageError>(Ok(local.referrer.is_some()))
        })
        .buffer_unordered(RECORDS_AT_ONCE);
    while let Some(written) = writes.next().await {
        match written? {
            Ok(referrer) => {
                report.manifests += 1;
                report.referrers += u64::from(referrer);
            }
            Err((repo, digest, why)) => {
                progress.warn(&format!("{repo}: manifest {digest} left out: {why}"));
                report.skipped += 1;
                manifests_left_out.insert(digest);
            }
        }
    }
    drop(writes);

    // Tags last: each names a manifest already recorded.
    let tags = index_stream(storage, |index, send| {
        for tag in index.repo_tag_records() {
            if !send(tag) {
                break;
            }
        }
    });
    let (left_out, not_copied) = (&manifests_left_out, &*not_copied);
    let mut writes = tags
        .map(|tag| async move {
            let (repo, tag, digest) = tag?;
            if left_out.contains(&digest) || not_copied.contains(&digest) {
                progress.warn(&format!(
                    "{repo}:{tag} left out: its manifest {digest} was not copied"
                ));
                return Ok(false);
            }
            SharedRecords { store }
                .put_tag(&repo, &tag, &digest)
                .await?;
            Ok::<_, StorageError>(true)
        })
        .buffer_unordered(RECORDS_AT_ONCE);
    while let Some(written) = writes.next().await {
        match written? {
            true => report.tags += 1,
            false => report.skipped += 1,
        }
    }
    Ok(report)
}

/// A manifest's bytes from this node's blob store, checked against its digest, with the
/// referrer record the index keeps for it (the subject is in the manifest itself). Blocks.
fn local_manifest(
    storage: &Storage,
    index: &crate::storage::index::Index,
    repo: RepoName,
    digest: Digest,
    media_type: String,
) -> Result<LocalManifest, (RepoName, Digest, String)> {
    let fail = |repo: RepoName, digest: Digest, why: String| Err((repo, digest, why));
    let path = storage.blobs.path(&digest);
    let body = match std::fs::metadata(&path) {
        Ok(meta) if meta.len() > MAX_MANIFEST_BYTES as u64 => {
            return fail(repo, digest, "its file is larger than a manifest".into())
        }
        Ok(_) => match std::fs::read(&path) {
            Ok(body) => Bytes::from(body),
            Err(e) => return fail(repo, digest, format!("cannot read its file: {e}")),
        },
        Err(e) => return fail(repo, digest, format!("cannot read its file: {e}")),
    };
    if Digest::of(&body) != digest {
        return fail(repo, digest, "its file does not match its digest".into());
    }
    let subject = Manifest::parse(&body, Some(&media_type))
        .ok()
        .and_then(|manifest| manifest.subject.map(|s| s.digest));
    let referrer = match subject {
        Some(subject) => match index.referrers(&repo, &subject) {
            Ok(records) => records
                .into_iter()
                .find(|record| record.digest == digest)
                .map(|record| (subject, record)),
            Err(e) => return fail(repo, digest, format!("its referrer record: {e}")),
        },
        None => None,
    };
    Ok(LocalManifest {
        repo,
        digest,
        media_type,
        body,
        referrer,
    })
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;

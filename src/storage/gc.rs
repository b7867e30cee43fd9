//! Offline garbage collection: removes blobs that no stored manifest references and no pin
//! holds, and leftovers in `tmp/`. It needs the index to itself (sled's lock guarantees that no berth is
//! serving from the same data directory meanwhile).
//!
//! What a manifest references is what the one manifest model ([`Manifest`]) reads in it; bytes
//! it cannot read (passed through from an upstream) reference nothing.

use std::collections::HashSet;

use super::index::BlobRecord;
use super::{Storage, StorageError};
use crate::oci::{Digest, Manifest};

/// Manifests are small; anything larger is not read as one.
const MAX_MANIFEST_BYTES: u64 = crate::oci::media::MAX_MANIFEST_BYTES as u64;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub manifests: usize,
    pub blobs_kept: usize,
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    pub temp_files_removed: usize,
    pub uploads_removed: usize,
}

pub fn collect(storage: &Storage) -> Result<GcReport, StorageError> {
    let mut report = GcReport {
        temp_files_removed: storage.blobs.sweep_tmp()?,
        uploads_removed: storage.expire_uploads(super::UPLOAD_EXPIRY)?.0,
        ..GcReport::default()
    };
    let entries: Vec<(Digest, BlobRecord)> = storage.index.blobs().collect::<Result<_, _>>()?;
    let mut referenced = HashSet::new();
    let mut manifests = HashSet::new();
    for (digest, record) in &entries {
        let is_manifest_sized = record.size <= MAX_MANIFEST_BYTES;
        if record.media_type.is_none() && !is_manifest_sized {
            continue;
        }
        let Some(body) = storage.blobs.read_small(digest, MAX_MANIFEST_BYTES)? else {
            continue;
        };
        let parsed = Manifest::parse(&body, record.media_type.as_deref()).ok();
        if record.media_type.is_none() {
            // Recovery indexes manifests without a media type: the body tells, or it is none.
            let Some(parsed) = &parsed else {
                continue;
            };
            let mut fixed = record.clone();
            fixed.media_type = Some(parsed.media_type.clone());
            storage.index.put_blob(digest, &fixed)?;
        }
        manifests.insert(digest.clone());
        if let Some(parsed) = parsed {
            referenced.extend(parsed.references().cloned());
        }
    }
    report.manifests = manifests.len();
    let pinned = storage.index.pinned_blobs()?;
    for (digest, record) in entries {
        if manifests.contains(&digest)
            || referenced.contains(&digest)
            || pinned.contains(&digest)
            || storage.index.is_private(&digest)?
        {
            report.blobs_kept += 1;
            continue;
        }
        storage.index.remove_blob(&digest)?;
        storage.blobs.remove(&digest)?;
        report.blobs_removed += 1;
        report.bytes_removed += record.size;
    }
    storage.index.flush()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media;

    #[test]
    fn removes_only_what_no_manifest_references() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let put = |data: &[u8], media_type: Option<&str>| {
            let digest = Digest::of(data);
            storage.blobs.write_verified(&digest, data).unwrap();
            storage
                .index
                .put_blob(
                    &digest,
                    &BlobRecord::new(data.len() as u64, media_type.map(str::to_owned)),
                )
                .unwrap();
            digest
        };
        let layer = put(b"layer", None);
        let config = put(b"{}", None);
        let orphan = put(b"orphan", None);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#,
            media::OCI_MANIFEST
        );
        // Indexed without a media type, as recovery leaves manifests: sniffed.
        let manifest = put(manifest.as_bytes(), None);
        std::fs::write(dir.path().join("tmp/blob-x"), b"partial").unwrap();

        let report = collect(&storage).unwrap();
        assert_eq!(
            report,
            GcReport {
                manifests: 1,
                blobs_kept: 3,
                blobs_removed: 1,
                bytes_removed: 6,
                temp_files_removed: 1,
                uploads_removed: 0,
            }
        );
        assert!(storage.index.blob(&orphan).unwrap().is_none());
        assert!(!storage.blobs.path(&orphan).exists());
        for kept in [&layer, &config, &manifest] {
            assert!(storage.index.blob(kept).unwrap().is_some());
        }
        assert_eq!(
            storage
                .index
                .blob(&manifest)
                .unwrap()
                .unwrap()
                .media_type
                .as_deref(),
            Some(media::OCI_MANIFEST)
        );
    }
}

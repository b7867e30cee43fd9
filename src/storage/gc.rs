//! What garbage collection and `berth cache rm` decide from: every stored manifest and what
//! it references ([`scan`]), and the clean-up of leftovers a stopped berth may sweep
//! ([`sweep`]). The removals themselves are the cache's (`cache::collect`), under each digest's
//! lock.
//!
//! What a manifest references is what the one manifest model ([`Manifest`]) reads in it; bytes
//! it cannot read (passed through from an upstream) reference nothing.
//!
//! The scan reads the blobs indexed as manifests (with a media type) first. A manifest-sized
//! blob indexed without one may be a manifest that recovery indexed, so it is read and sniffed
//! too, unless a manifest read first names it as its config or a layer: those are not
//! manifests, and on a store of small blobs they are most of what would be read for nothing.

use std::collections::{HashMap, HashSet};

use super::index::BlobRecord;
use super::{Storage, StorageError};
use crate::oci::{Digest, Manifest};

/// Manifests are small; anything larger is not read as one.
const MAX_MANIFEST_BYTES: u64 = crate::oci::media::MAX_MANIFEST_BYTES as u64;

/// Every stored manifest, with what it references.
#[derive(Debug, Default)]
pub struct Manifests {
    /// Manifest → its config, layers and index entries (what pulling it fetches).
    pub children: HashMap<Digest, Vec<Digest>>,
    /// Manifest → the manifest it refers to (`subject`), for a referrer.
    pub subjects: HashMap<Digest, Digest>,
    /// What some manifest names as its config or a layer (not as an index entry).
    leaves: HashSet<Digest>,
}

impl Manifests {
    /// Whether `digest` is a stored manifest.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.children.contains_key(digest)
    }

    /// Everything some manifest references, subjects included.
    pub fn referenced(&self) -> HashSet<Digest> {
        self.children
            .values()
            .flatten()
            .chain(self.subjects.values())
            .cloned()
            .collect()
    }

    /// `roots` and what they reference, transitively (an index, its manifests, their blobs);
    /// subjects are not followed (a signature does not hold its image).
    pub fn closure<'a>(&self, roots: impl IntoIterator<Item = &'a Digest>) -> HashSet<Digest> {
        let mut seen = HashSet::new();
        let mut next: Vec<Digest> = roots.into_iter().cloned().collect();
        while let Some(digest) = next.pop() {
            if let Some(children) = self.children.get(&digest) {
                next.extend(children.iter().filter(|c| !seen.contains(*c)).cloned());
            }
            seen.insert(digest);
        }
        seen
    }

    /// What `roots` keep: their [`closure`](Self::closure), and every referrer whose subject
    /// is in it with the referrer's own closure (a signature stays while its image stays).
    pub fn live<'a>(&self, roots: impl IntoIterator<Item = &'a Digest>) -> HashSet<Digest> {
        let mut live = self.closure(roots);
        loop {
            let referrers: Vec<&Digest> = self
                .subjects
                .iter()
                .filter(|(referrer, subject)| live.contains(*subject) && !live.contains(*referrer))
                .map(|(referrer, _)| referrer)
                .collect();
            if referrers.is_empty() {
                return live;
            }
            live.extend(self.closure(referrers));
        }
    }
}

/// Reads every stored manifest. A manifest indexed without a media type (as recovery leaves
/// them) gets the one its body names. Blocks, for one read per manifest, and per
/// manifest-sized blob indexed without a media type that no manifest names as a config or
/// layer.
pub fn scan(storage: &Storage) -> Result<Manifests, StorageError> {
    let mut found = Manifests::default();
    let mut untyped = Vec::new();
    for entry in storage.index.blobs() {
        let (digest, record) = entry?;
        match (&record.media_type, record.size <= MAX_MANIFEST_BYTES) {
            (Some(_), _) => found.read(storage, digest, &record)?,
            (None, true) => untyped.push((digest, record)),
            (None, false) => {}
        }
    }
    for (digest, record) in untyped {
        if !found.leaves.contains(&digest) {
            found.read(storage, digest, &record)?;
        }
    }
    Ok(found)
}

impl Manifests {
    /// Reads one more stored manifest (one pushed since the scan); nothing when `digest` is
    /// not stored or is not a manifest. Blocks.
    pub fn add(&mut self, storage: &Storage, digest: &Digest) -> Result<(), StorageError> {
        if self.contains(digest) {
            return Ok(());
        }
        match storage.index.blob(digest)? {
            Some(record) => self.read(storage, digest.clone(), &record),
            None => Ok(()),
        }
    }

    fn read(
        &mut self,
        storage: &Storage,
        digest: Digest,
        record: &BlobRecord,
    ) -> Result<(), StorageError> {
        let is_manifest_sized = record.size <= MAX_MANIFEST_BYTES;
        if record.media_type.is_none() && !is_manifest_sized {
            return Ok(());
        }
        let Some(body) = storage.blobs.read_small(&digest, MAX_MANIFEST_BYTES)? else {
            return Ok(());
        };
        let parsed = Manifest::parse(&body, record.media_type.as_deref()).ok();
        if record.media_type.is_none() {
            let Some(parsed) = &parsed else {
                return Ok(());
            };
            let mut fixed = record.clone();
            fixed.media_type = Some(parsed.media_type.clone());
            storage.index.put_blob(&digest, &fixed)?;
        }
        let Some(parsed) = parsed else {
            self.children.insert(digest, Vec::new());
            return Ok(());
        };
        if let Some(subject) = &parsed.subject {
            self.subjects.insert(digest.clone(), subject.digest.clone());
        }
        let leaves: Vec<Digest> = parsed
            .config
            .iter()
            .chain(&parsed.layers)
            .map(|d| d.digest.clone())
            .collect();
        let mut children = leaves.clone();
        children.extend(parsed.manifests.iter().map(|d| d.digest.clone()));
        self.leaves.extend(leaves);
        self.children.insert(digest, children);
        Ok(())
    }
}

/// Leftovers only a stopped berth may sweep at any time: temp files, and expired uploads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub temp_files_removed: usize,
    pub uploads_removed: usize,
}

/// Removes temp files and expired uploads. Only on a stopped berth (a running one's temp files
/// are fills in progress). Blocks.
pub fn sweep(storage: &Storage) -> Result<Swept, StorageError> {
    Ok(Swept {
        temp_files_removed: storage.blobs.sweep_tmp()?,
        uploads_removed: storage.expire_uploads(super::UPLOAD_EXPIRY)?.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media;

    #[test]
    fn finds_every_manifest_and_what_it_references() {
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
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"digest":"{manifest}"}}]}}"#,
            media::OCI_INDEX
        );
        let index = put(index.as_bytes(), Some(media::OCI_INDEX));
        std::fs::write(dir.path().join("tmp/blob-x"), b"partial").unwrap();

        let found = scan(&storage).unwrap();
        assert_eq!(found.children.len(), 2);
        assert!(found.contains(&manifest) && found.contains(&index));
        let referenced = found.referenced();
        assert!(referenced.contains(&layer) && referenced.contains(&config));
        assert!(!referenced.contains(&orphan));
        let closure = found.closure([&index]);
        assert_eq!(closure.len(), 4, "{closure:?}");
        assert!(!closure.contains(&orphan));
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
        assert_eq!(
            sweep(&storage).unwrap(),
            Swept {
                temp_files_removed: 1,
                uploads_removed: 0
            }
        );
    }
}

//! The `pins` tree: mirrored images the operator pinned, with every digest each one holds.
//!
//! | tree   | key                                | value          |
//! |--------|------------------------------------|----------------|
//! | `pins` | the pin as configured (`alpine:3.20`) | [`PinRecord`] |
//!
//! A record lists the whole closure of the pinned manifest (itself, child manifests, configs,
//! layers), so eviction and gc can spare those blobs without reading any manifest.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{decode, encode, text_keyed, Index, IndexError};
use crate::oci::Digest;

/// The key prefix of the records `berth import` writes (`imported:docker.io/library/alpine:3.20`):
/// pins that no configuration names, kept until the image is dropped.
pub const IMPORTED_PIN: &str = "imported:";

/// One pinned image as last fetched completely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// The manifest the pin's reference resolved to.
    pub digest: Digest,
    /// Every digest it holds, the manifest's own included.
    pub blobs: Vec<Digest>,
    pub seeded_ms: u64,
}

impl Index {
    pub fn put_pin(&self, pin: &str, record: &PinRecord) -> Result<(), IndexError> {
        self.pins.insert(pin.as_bytes(), encode(record))?;
        Ok(())
    }

    pub fn pin(&self, pin: &str) -> Result<Option<PinRecord>, IndexError> {
        self.pins
            .get(pin.as_bytes())?
            .map(|v| decode(pin.as_bytes(), &v))
            .transpose()
    }

    pub fn remove_pin(&self, pin: &str) -> Result<(), IndexError> {
        self.pins.remove(pin.as_bytes())?;
        Ok(())
    }

    /// Every pin with its record.
    pub fn pins(&self) -> Result<Vec<(String, PinRecord)>, IndexError> {
        text_keyed(&self.pins)
    }

    /// The digests no eviction or gc may remove, because a pin holds them.
    pub fn pinned_blobs(&self) -> Result<HashSet<Digest>, IndexError> {
        let mut pinned = HashSet::new();
        for (_, record) in self.pins()? {
            pinned.extend(record.blobs);
        }
        Ok(pinned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_blobs_are_the_union_of_every_pin() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let record = |blobs: &[&Digest]| PinRecord {
            digest: blobs[0].clone(),
            blobs: blobs.iter().map(|&d| d.clone()).collect(),
            seeded_ms: 1,
        };
        index.put_pin("alpine:3.20", &record(&[&a, &b])).unwrap();
        index.put_pin("ghcr.io/x/y:1", &record(&[&b, &c])).unwrap();
        assert_eq!(
            index.pinned_blobs().unwrap(),
            HashSet::from([a.clone(), b.clone(), c.clone()])
        );
        assert_eq!(index.pin("alpine:3.20").unwrap(), Some(record(&[&a, &b])));

        index.remove_pin("alpine:3.20").unwrap();
        assert_eq!(index.pinned_blobs().unwrap(), HashSet::from([b, c]));
        assert_eq!(index.pins().unwrap().len(), 1);
    }

    /// Records written when the digests were plain strings still read back.
    #[test]
    fn pin_records_keep_their_stored_form() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let old = format!(r#"{{"digest":"{a}","blobs":["{a}","{b}"],"seeded_ms":7}}"#);
        let record: PinRecord = decode(b"alpine:3.20", old.as_bytes()).unwrap();
        assert_eq!(record.blobs, [a.clone(), b]);
        assert_eq!(record.digest, a);
        assert_eq!(encode(&record), old.as_bytes());
    }
}

//! Stored blobs and bytes per kind — manifests (records with a media type) and every other
//! blob (layers, configs) — kept beside the overall [`Totals`] after the buckets, in the same
//! transaction as each blob record, so `/metrics` reads them and never scans.
//!
//! An index written before they were kept has no record; [`Index::count_kinds`] counts it
//! once, in the background while requests are served (after any legacy records have moved
//! into buckets), bucket by bucket in key order. The record remembers the last bucket
//! counted, so a count cut short resumes where it stopped, and a change to a blob in a bucket
//! at or before it adjusts the partial sums as it would the final ones (a change after it is
//! met by the count later). Every change to blob records holds [`Index`]'s `blob_writes`
//! lock, and so does each chunk, so no change falls between a chunk's listing and its record.

use std::ops::Bound;

use super::blobs::{BlobRecord, Totals};
use super::{Index, IndexError};

/// After every bucket and beside the overall totals.
pub(super) const KINDS_KEY: &[u8] = b"\xff\xff\xff\xff\xff\xff\xff\xffkinds";

/// Blobs per kind: manifests, and everything else.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindTotals {
    pub manifests: Totals,
    pub blobs: Totals,
}

impl KindTotals {
    pub(super) fn add(&mut self, record: &BlobRecord, sign: i64) {
        let kind = if record.media_type.is_some() {
            &mut self.manifests
        } else {
            &mut self.blobs
        };
        kind.blobs = kind.blobs.saturating_add_signed(sign);
        kind.bytes = kind.bytes.saturating_add_signed(sign * record.size as i64);
    }
}

/// The record: counted (`Present`), or being counted up to and including `after` (empty:
/// nothing counted yet; blob keys are never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Counting { after: Vec<u8>, sums: KindTotals },
    Present(KindTotals),
}

impl State {
    fn encode(&self) -> Vec<u8> {
        let (tag, sums, after) = match self {
            State::Counting { after, sums } => (0u8, sums, after.as_slice()),
            State::Present(sums) => (1u8, sums, &[][..]),
        };
        let mut value = vec![tag];
        for word in [
            sums.manifests.blobs,
            sums.manifests.bytes,
            sums.blobs.blobs,
            sums.blobs.bytes,
        ] {
            value.extend_from_slice(&word.to_be_bytes());
        }
        value.extend_from_slice(after);
        value
    }

    /// `None` for a record that does not parse: counted again, like a missing one.
    fn decode(value: &[u8]) -> Option<State> {
        let (&tag, rest) = value.split_first()?;
        let (words, after) = rest.split_at_checked(32)?;
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                words.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let sums = KindTotals {
            manifests: Totals {
                blobs: word(0)?,
                bytes: word(1)?,
            },
            blobs: Totals {
                blobs: word(2)?,
                bytes: word(3)?,
            },
        };
        match tag {
            0 => Some(State::Counting {
                after: after.to_vec(),
                sums,
            }),
            1 if after.is_empty() => Some(State::Present(sums)),
            _ => None,
        }
    }
}

/// Inside a blob entry's transaction: the entry at `key` went from `old` to `new`.
pub(super) fn adjust_kinds(
    digests: &sled::transaction::TransactionalTree,
    key: &[u8],
    old: Option<&BlobRecord>,
    new: Option<&BlobRecord>,
) -> sled::transaction::ConflictableTransactionResult<(), sled::Error> {
    let Some(mut state) = digests.get(KINDS_KEY)?.and_then(|v| State::decode(&v)) else {
        return Ok(());
    };
    let sums = match &mut state {
        State::Present(sums) => sums,
        State::Counting { after, sums } if !after.is_empty() && key <= after.as_slice() => sums,
        State::Counting { .. } => return Ok(()),
    };
    if let Some(old) = old {
        sums.add(old, -1);
    }
    if let Some(new) = new {
        sums.add(new, 1);
    }
    digests.insert(KINDS_KEY, state.encode())?;
    Ok(())
}

/// Whether a stored record is of counted totals (what an index from before buckets brings).
pub(super) fn is_present(value: &[u8]) -> bool {
    matches!(State::decode(value), Some(State::Present(_)))
}

impl Index {
    /// Blobs and bytes per kind: read, not counted. `None` until they have been counted once
    /// (an index from before they were kept).
    pub fn kind_totals(&self) -> Result<Option<KindTotals>, IndexError> {
        Ok(match self.kinds_state()? {
            Some(State::Present(sums)) => Some(sums),
            _ => None,
        })
    }

    fn kinds_state(&self) -> Result<Option<State>, IndexError> {
        Ok(self.blobs.get(KINDS_KEY)?.and_then(|v| State::decode(&v)))
    }

    /// On open: an index with no blobs has its per-kind totals at once (zero), so only an
    /// index from before they were kept is ever counted.
    pub(super) fn start_kinds_if_empty(&self) -> Result<(), IndexError> {
        let no_buckets = self.buckets(Bound::Unbounded).next().is_none();
        if self.kinds_state()?.is_none() && no_buckets && !self.has_legacy() {
            let _writes = self.blob_writes();
            self.blobs
                .insert(KINDS_KEY, State::Present(KindTotals::default()).encode())?;
        }
        Ok(())
    }

    /// Sets the per-kind totals outright, from a count made while nothing changes `blobs`.
    pub(super) fn set_kinds(&self, sums: KindTotals) -> Result<(), IndexError> {
        self.blobs
            .insert(KINDS_KEY, State::Present(sums).encode())?;
        Ok(())
    }

    /// Counts the per-kind totals while blobs come and go, `chunk` buckets at a time, calling
    /// `pace` between chunks; resumes a count cut short. Call once no legacy records are left
    /// ([`Index::migrate_legacy`]). Blocks for as long as a scan of the buckets takes, holding
    /// writes back only for one chunk at a time.
    pub fn count_kinds(
        &self,
        chunk: usize,
        mut pace: impl FnMut(),
    ) -> Result<KindTotals, IndexError> {
        loop {
            let writes = self.blob_writes();
            let (after, mut sums) = match self.kinds_state()? {
                Some(State::Present(sums)) => return Ok(sums),
                Some(State::Counting { after, sums }) => (after, sums),
                None => (Vec::new(), KindTotals::default()),
            };
            let start = if after.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Excluded(after)
            };
            let mut last = None;
            let mut seen = 0;
            for bucket in self.buckets(start) {
                let (key, bucket) = bucket?;
                seen += 1;
                for record in bucket.entries().iter().filter_map(|e| e.blob.as_ref()) {
                    sums.add(record, 1);
                }
                last = Some(key);
                if seen == chunk.max(1) {
                    break;
                }
            }
            let state = match last {
                Some(key) if seen == chunk.max(1) => State::Counting { after: key, sums },
                _ => State::Present(sums),
            };
            self.blobs.insert(KINDS_KEY, state.encode())?;
            drop(writes);
            pace();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_rejects_junk() {
        let sums = KindTotals {
            manifests: Totals { blobs: 1, bytes: 2 },
            blobs: Totals { blobs: 3, bytes: 4 },
        };
        for state in [
            State::Present(sums),
            State::Counting {
                after: b"sha256:ab".to_vec(),
                sums,
            },
            State::Counting {
                after: Vec::new(),
                sums,
            },
        ] {
            assert_eq!(State::decode(&state.encode()), Some(state));
        }
        assert_eq!(State::decode(b""), None);
        assert_eq!(State::decode(&[1; 20]), None);
        let mut present_with_tail = State::Present(sums).encode();
        present_with_tail.push(b'x');
        assert_eq!(State::decode(&present_with_tail), None);
    }
}

//! Stored blobs and bytes per kind — manifests (records with a media type) and every other
//! blob (layers, configs) — kept beside the overall [`Totals`] in `access`, in the same
//! transaction as each blob entry, so `/metrics` reads them and never scans.
//!
//! An index written before they were kept has no record; [`Index::count_kinds`] counts it
//! once, in the background while requests are served, chunk by chunk in key order. The
//! record remembers the last key counted, so a count cut short resumes where it stopped, and
//! a change to a blob at or before that key adjusts the partial sums as it would the final
//! ones (a change after it is met by the count later). Every change to `blobs` holds
//! [`Index`]'s `blob_writes` lock, and so does each chunk, so no change falls between a
//! chunk's listing and its record.

use std::ops::Bound;

use super::blobs::{BlobRecord, Totals};
use super::{decode, Index, IndexError};

/// After every stamp and beside the overall totals; no blob key parses from it.
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
    access: &sled::transaction::TransactionalTree,
    key: &[u8],
    old: Option<&BlobRecord>,
    new: Option<&BlobRecord>,
) -> sled::transaction::ConflictableTransactionResult<(), sled::Error> {
    let Some(mut state) = access.get(KINDS_KEY)?.and_then(|v| State::decode(&v)) else {
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
    access.insert(KINDS_KEY, state.encode())?;
    Ok(())
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
        Ok(self.access.get(KINDS_KEY)?.and_then(|v| State::decode(&v)))
    }

    /// On open: an index with no blobs has its per-kind totals at once (zero), so only an
    /// index from before they were kept is ever counted.
    pub(super) fn start_kinds_if_empty(&self) -> Result<(), IndexError> {
        if self.kinds_state()?.is_none() && self.blobs.is_empty() {
            let _writes = self.blob_writes();
            self.access
                .insert(KINDS_KEY, State::Present(KindTotals::default()).encode())?;
        }
        Ok(())
    }

    /// Sets the per-kind totals outright, from a count made while nothing changes `blobs`.
    pub(super) fn set_kinds(&self, sums: KindTotals) -> Result<(), IndexError> {
        self.access
            .insert(KINDS_KEY, State::Present(sums).encode())?;
        Ok(())
    }

    /// Counts the per-kind totals while blobs come and go, `chunk` entries at a time, calling
    /// `pace` between chunks; resumes a count cut short. Blocks for as long as a scan of
    /// `blobs` takes, holding writes back only for one chunk at a time.
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
                Bound::Excluded(after.as_slice())
            };
            let mut last = None;
            let mut seen = 0;
            for item in self.blobs.range::<&[u8], _>((start, Bound::Unbounded)) {
                let (key, value) = item?;
                seen += 1;
                // A record that does not parse counts as no blob, as everywhere else.
                if let Ok(record) = decode::<BlobRecord>(&key, &value) {
                    sums.add(&record, 1);
                }
                last = Some(key);
                if seen == chunk.max(1) {
                    break;
                }
            }
            let state = match last {
                Some(key) if seen == chunk.max(1) => State::Counting {
                    after: key.to_vec(),
                    sums,
                },
                _ => State::Present(sums),
            };
            self.access.insert(KINDS_KEY, state.encode())?;
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

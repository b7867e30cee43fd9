//! SHA-256 whose state can be written down and taken up again, by another node: an upload's
//! chunks may reach different nodes, and none of them should read the earlier chunks back
//! from the store to finish the digest. The block function is sha2's own (hardware
//! accelerated where the CPU has it); only the bookkeeping around it is here.

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

use crate::oci::Digest;

const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const BLOCK: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far.
    length: u64,
    /// The bytes of an incomplete block, as hex (fewer than 64 bytes).
    pending: String,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256 {
            state: INITIAL,
            length: 0,
            pending: String::new(),
        }
    }
}

impl ResumableSha256 {
    pub fn length(&self) -> u64 {
        self.length
    }

    /// A live hasher that continues from this state, or `None` when the state is malformed.
    pub fn resume(&self) -> Option<Hashing> {
        let pending = hex::decode(&self.pending).ok()?;
        if pending.len() >= BLOCK || (self.length % BLOCK as u64) as usize != pending.len() {
            return None;
        }
        Some(Hashing {
            state: self.state,
            length: self.length,
            pending,
        })
    }
}

/// A hasher being fed.
pub struct Hashing {
    state: [u32; 8],
    length: u64,
    pending: Vec<u8>,
}

impl Hashing {
    pub fn new() -> Self {
        Hashing {
            state: INITIAL,
            length: 0,
            pending: Vec::with_capacity(BLOCK),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < BLOCK {
                return;
            }
            let block = GenericArray::clone_from_slice(&self.pending);
            sha2::compress256(&mut self.state, &[block]);
            self.pending.clear();
        }
        // The blocks are hashed where they lie: no copy, no allocation per chunk.
        let blocks = data.chunks_exact(BLOCK);
        let rest = blocks.remainder();
        for block in blocks {
            sha2::compress256(
                &mut self.state,
                std::slice::from_ref(GenericArray::from_slice(block)),
            );
        }
        self.pending.extend_from_slice(rest);
    }

    /// The state to write down.
    pub fn snapshot(&self) -> ResumableSha256 {
        ResumableSha256 {
            state: self.state,
            length: self.length,
            pending: hex::encode(&self.pending),
        }
    }

    pub fn finish(mut self) -> Digest {
        let bits = self.length.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.pending);
        tail.push(0x80);
        while tail.len() % BLOCK != BLOCK - 8 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        let blocks: Vec<GenericArray<u8, _>> = tail
            .chunks_exact(BLOCK)
            .map(GenericArray::clone_from_slice)
            .collect();
        sha2::compress256(&mut self.state, &blocks);
        let mut out = [0u8; 32];
        for (word, bytes) in self.state.iter().zip(out.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        Digest::from_sha256_bytes(&out)
    }
}

impl Default for Hashing {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_answers() {
        assert_eq!(
            Hashing::new().finish().to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = Hashing::new();
        h.update(b"abc");
        assert_eq!(h.finish(), Digest::of(b"abc"));
    }

    proptest! {
        /// Any split of any input, with the state written down and taken up again between
        /// the pieces, gives sha2's digest.
        #[test]
        fn resuming_anywhere_gives_the_same_digest(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..5),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut state = ResumableSha256::default();
            let mut from = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                let mut hashing = state.resume().unwrap();
                hashing.update(&data[from..cut]);
                let text = serde_json::to_string(&hashing.snapshot()).unwrap();
                state = serde_json::from_str(&text).unwrap();
                from = cut;
            }
            prop_assert_eq!(state.length(), data.len() as u64);
            prop_assert_eq!(state.resume().unwrap().finish(), Digest::of(&data));
        }
    }

    #[test]
    fn a_malformed_state_is_refused() {
        let mut state = Hashing::new();
        state.update(b"abc");
        let mut snap = state.snapshot();
        snap.pending = "zz".into();
        assert!(snap.resume().is_none());
        let mut snap = state.snapshot();
        snap.length = 5;
        assert!(snap.resume().is_none());
    }
}

//! Hashing while copying: a blob's bytes are checked against the digest and size the bundle
//! names them by as they stream, never held whole.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use super::BundleError;
use crate::oci::Digest;

/// How much is read and written at a time.
pub const CHUNK: usize = 1 << 20;

/// Accumulates a blob's hash and length as its bytes go by.
pub struct Check {
    hasher: Sha256,
    length: u64,
}

impl Default for Check {
    fn default() -> Self {
        Check {
            hasher: Sha256::new(),
            length: 0,
        }
    }
}

impl Check {
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.length += bytes.len() as u64;
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    /// Whether what went by is `digest`, of `size` bytes; the error names the blob.
    pub fn finish(self, digest: &Digest, size: u64) -> Result<(), BundleError> {
        if self.length != size {
            return Err(BundleError::blob(
                digest,
                format!(
                    "is truncated or padded: {} bytes where {size} were expected",
                    self.length
                ),
            ));
        }
        let got = Digest::from_sha256_bytes(&self.hasher.finalize());
        if &got != digest {
            return Err(BundleError::blob(
                digest,
                format!("is corrupt: its bytes hash to {got}"),
            ));
        }
        Ok(())
    }
}

/// Copies `size` bytes of blob `digest` from `from` to `to`, checking them; `sent` hears of
/// every chunk written. Reads one byte past `size` to tell a longer blob from a right one.
pub fn copy_checked(
    mut from: impl Read,
    mut to: impl Write,
    digest: &Digest,
    size: u64,
    mut sent: impl FnMut(u64),
) -> Result<(), BundleError> {
    let mut check = Check::default();
    let mut buffer = vec![0; CHUNK];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::read(digest, e)),
        };
        check.update(&buffer[..n]);
        to.write_all(&buffer[..n]).map_err(BundleError::Write)?;
        sent(n as u64);
        if check.length() > size {
            break;
        }
    }
    check.finish(digest, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_checked_against_digest_and_size() {
        let data = b"layer bytes".to_vec();
        let digest = Digest::of(&data);
        let mut out = Vec::new();
        let mut sent = 0;
        copy_checked(&data[..], &mut out, &digest, 11, |n| sent += n).unwrap();
        assert_eq!((out, sent), (data.clone(), 11));

        let short = copy_checked(&data[..5], io::sink(), &digest, 11, |_| {}).unwrap_err();
        assert!(short.to_string().contains(&digest.to_string()), "{short}");
        assert!(short.to_string().contains("truncated"), "{short}");

        let mut flipped = data.clone();
        flipped[3] ^= 1;
        let corrupt = copy_checked(&flipped[..], io::sink(), &digest, 11, |_| {}).unwrap_err();
        assert!(corrupt.to_string().contains("corrupt"), "{corrupt}");
    }
}

//! Content digests: `sha256:<64 lowercase hex>`, the only algorithm berth stores.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{truncate_for_message, ParseError};

/// A content digest. Only `sha256` is supported for storage, which is what every registry uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// Lowercase hex of the sha256, 64 characters.
    hex: String,
}

impl Digest {
    pub fn from_sha256_bytes(bytes: &[u8]) -> Self {
        Digest {
            hex: hex::encode(bytes),
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Self::from_sha256_bytes(&sha2::Sha256::digest(data))
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The 32 bytes the hex spells (the index's compact form).
    pub fn sha256_bytes(&self) -> [u8; 32] {
        let mut bytes = [0; 32];
        // The hex was checked when the digest was made: 64 lowercase hex characters.
        let _ = hex::decode_to_slice(&self.hex, &mut bytes);
        bytes
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &'static str| ParseError::Digest {
            input: truncate_for_message(s),
            why,
        };
        let (algorithm, encoded) = s
            .split_once(':')
            .ok_or_else(|| invalid("expected <algorithm>:<hex>"))?;
        if algorithm != "sha256" {
            return Err(invalid("only sha256 digests are supported"));
        }
        if encoded.len() != 64
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid("sha256 needs 64 lowercase hex characters"));
        }
        Ok(Digest {
            hex: encoded.to_owned(),
        })
    }
}

/// As its text form, `sha256:<hex>`, which is how records that held it as a string stored it.
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::ErrorCode;

    #[test]
    fn digests() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(d.hex(), hex);
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        for bad in [
            "sha256:xyz",
            "sha256:",
            "sha256",
            &format!("sha256:{}", hex.to_uppercase()),
            &format!("sha512:{hex}"),
            &format!("sha256:{hex}0"),
        ] {
            assert_eq!(
                bad.parse::<Digest>().unwrap_err().code(),
                ErrorCode::DigestInvalid,
                "{bad}"
            );
        }
    }
}

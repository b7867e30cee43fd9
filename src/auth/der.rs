//! Just enough DER to move keys between the containers people have (SEC1, PKCS#1, PKCS#8,
//! X.509) and the ones ring and jsonwebtoken accept, and to build the SubjectPublicKeyInfo that
//! the libtrust key ID hashes.
//!
//! A full ASN.1 crate would be a dependency for a few dozen lines; everything read here comes
//! from the operator's own key files, and every length is checked against the input anyway.

pub const SEQUENCE: u8 = 0x30;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
/// `[0]` constructed: SEC1 curve parameters, X.509 version.
pub const CONTEXT_0: u8 = 0xa0;

/// 1.2.840.10045.2.1 (id-ecPublicKey)
pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7 (prime256v1 / P-256)
pub const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.2.840.113549.1.1.1 (rsaEncryption)
pub const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed DER: {0}")]
pub struct DerError(pub &'static str);

/// One tag-length-value element.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    /// The whole element, header included (what a signature or a hash covers).
    pub raw: &'a [u8],
}

/// A cursor over consecutive DER elements.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader { rest: input }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    pub fn next(&mut self) -> Result<Tlv<'a>, DerError> {
        let input = self.rest;
        let (&tag, after_tag) = input.split_first().ok_or(DerError("truncated"))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("multi-byte tags are not used by keys"));
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or(DerError("truncated"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            // 0x80 is BER's indefinite length; more than 4 bytes is not a key file.
            if count == 0 || count > 4 || after_len.len() < count {
                return Err(DerError("bad length"));
            }
            let (len_bytes, rest) = after_len.split_at(count);
            after_len = rest;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if after_len.len() < len {
            return Err(DerError("truncated"));
        }
        let header = input.len() - after_len.len();
        let (raw, rest) = input.split_at(header + len);
        self.rest = rest;
        Ok(Tlv {
            tag,
            value: &raw[header..],
            raw,
        })
    }

    /// The next element, which must carry `tag`.
    pub fn take(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>, DerError> {
        let tlv = self.next()?;
        if tlv.tag != tag {
            return Err(DerError(what));
        }
        Ok(tlv)
    }
}

/// Reads `input` as exactly one element with `tag` and returns a reader over its contents.
pub fn nested<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<Reader<'a>, DerError> {
    let mut outer = Reader::new(input);
    let tlv = outer.take(tag, what)?;
    if !outer.is_empty() {
        return Err(DerError("trailing data"));
    }
    Ok(Reader::new(tlv.value))
}

/// Encodes one element.
pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        // Fits in the short form by the check above.
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a SEQUENCE of already-encoded elements.
pub fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    encode(SEQUENCE, &parts.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_roundtrip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65535, 65536] {
            let content = vec![7u8; len];
            let encoded = encode(OCTET_STRING, &content);
            let mut reader = Reader::new(&encoded);
            let tlv = reader.next().unwrap();
            assert_eq!(tlv.tag, OCTET_STRING);
            assert_eq!(tlv.value.len(), len);
            assert_eq!(tlv.raw, &encoded[..]);
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn truncated_and_indefinite_inputs_are_errors() {
        assert!(Reader::new(&[0x30]).next().is_err());
        assert!(Reader::new(&[0x30, 0x05, 0x01]).next().is_err());
        assert!(Reader::new(&[0x30, 0x80, 0x00, 0x00]).next().is_err());
        assert!(Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).next().is_err());
        assert!(nested(&[0x30, 0x00, 0x00], SEQUENCE, "x").is_err());
    }
}

//! The OCI distribution spec's vocabulary: repository names, tags, digests, references and
//! image references as people write them (each with the parse error a client is answered
//! with), manifest media types and their size limit, `Accept` negotiation, the one manifest
//! model, and the spec's error codes.
//!
//! Layering rule: this is a leaf. It imports nothing from the rest of berth, and every other
//! module may import it; that is what keeps `storage`, `cache`, `upstream` and `config` from
//! reaching up into `registry` for the types they store and send.

mod digest;
mod error;
pub mod image;
mod manifest;
pub mod media;
mod name;

pub use self::digest::Digest;
pub use self::error::{ErrorCode, ParseError};
pub use self::image::ImageReference;
pub use self::manifest::{Descriptor, InvalidManifest, Manifest, Platform};
pub use self::name::{Reference, RepoName, Tag, MAX_NAME_LEN};

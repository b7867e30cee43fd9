//! The one manifest model: an image manifest or an index (OCI or Docker v2), parsed once from
//! its bytes by [`Manifest::parse`], with typed digests in its descriptors.
//!
//! Everything that reads a manifest goes through it: the private PUT's validation, the blob
//! walks of prefetch, seed and pins, gc's references, the referrers records, and telling what
//! a stored body is when its record does not say. A body it rejects is not a manifest berth
//! understands: the mirror still passes such bytes through (a schema 1 manifest, say), but
//! nothing walks them.

use std::fmt;

use serde::Deserialize;

use super::error::truncate_for_message;
use super::media::{self, MAX_MANIFEST_BYTES};
use super::{Digest, ParseError};

/// Why a body is not a manifest berth accepts; each is `MANIFEST_INVALID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidManifest {
    #[error("manifest is not valid JSON: {0}")]
    NotJson(String),
    #[error("only schemaVersion 2 manifests are accepted")]
    SchemaVersion,
    #[error("Content-Type {content_type} does not match the manifest's mediaType {media_type}")]
    MediaTypeMismatch {
        content_type: String,
        media_type: String,
    },
    #[error("no Content-Type and no mediaType")]
    NoMediaType,
    #[error("unsupported manifest media type {0}")]
    Unsupported(String),
    #[error("manifest references an invalid digest {0:?}")]
    Digest(String),
    #[error("an image manifest needs a config")]
    NoConfig,
}

/// A manifest or index, as far as berth reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// One of [`media::SUPPORTED`]: the declared `Content-Type`, else the body's `mediaType`,
    /// else what its shape says (OCI image manifests may leave `mediaType` out).
    pub media_type: String,
    /// Whether the body names its own `mediaType`.
    pub names_media_type: bool,
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    /// An index's entries.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<serde_json::Value>,
}

/// What a manifest says about content it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: Option<String>,
    pub digest: Digest,
    pub size: Option<u64>,
    /// For an index entry: the platform it is for, when it says (both `os` and `architecture`).
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// `os/architecture[/variant]`, as platforms are configured (`linux/arm64/v8`).
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) if !variant.is_empty() => write!(f, "/{variant}"),
            _ => Ok(()),
        }
    }
}

/// The body as JSON, before its digests are checked.
#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: String,
    size: Option<u64>,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

impl Manifest {
    /// Parses a manifest body. `content_type` is what its sender declared (a pusher's
    /// `Content-Type`; a type that names no manifest, such as `application/json`, should be
    /// left out by the caller when it is to be ignored): when both it and the body's
    /// `mediaType` are there, they must agree.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ParseError> {
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(ParseError::ManifestTooLarge(body.len()));
        }
        let raw: RawManifest = serde_json::from_slice(body)
            .map_err(|e| InvalidManifest::NotJson(truncate_for_message(&e.to_string())))?;
        if raw.schema_version != Some(2) {
            return Err(InvalidManifest::SchemaVersion.into());
        }
        let content_type = content_type.and_then(media::normalize_content_type);
        let media_type = match (content_type, &raw.media_type) {
            (Some(ct), Some(declared)) if &ct != declared => {
                return Err(InvalidManifest::MediaTypeMismatch {
                    content_type: truncate_for_message(&ct),
                    media_type: truncate_for_message(declared),
                }
                .into())
            }
            (Some(ct), _) => ct,
            (None, Some(declared)) => declared.clone(),
            (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_owned(),
            (None, None) if raw.config.is_some() && raw.layers.is_some() => {
                media::OCI_MANIFEST.to_owned()
            }
            (None, None) => return Err(InvalidManifest::NoMediaType.into()),
        };
        if !media::SUPPORTED.contains(&media_type.as_str()) {
            return Err(InvalidManifest::Unsupported(truncate_for_message(&media_type)).into());
        }
        let list = |raw: Option<Vec<RawDescriptor>>| -> Result<Vec<Descriptor>, InvalidManifest> {
            raw.into_iter()
                .flatten()
                .map(Descriptor::from_raw)
                .collect()
        };
        Ok(Manifest {
            media_type,
            names_media_type: raw.media_type.is_some(),
            artifact_type: raw.artifact_type,
            config: raw.config.map(Descriptor::from_raw).transpose()?,
            layers: list(raw.layers)?,
            manifests: list(raw.manifests)?,
            subject: raw.subject.map(Descriptor::from_raw).transpose()?,
            annotations: raw.annotations,
        })
    }

    pub fn is_index(&self) -> bool {
        media::is_index(&self.media_type)
    }

    /// Every digest it points at: config, subject, layers, index entries. What gc keeps.
    pub fn references(&self) -> impl Iterator<Item = &Digest> {
        self.config
            .iter()
            .chain(&self.subject)
            .chain(&self.layers)
            .chain(&self.manifests)
            .map(|d| &d.digest)
    }

    /// An image manifest's config, then its layers: what a push must have put in the
    /// repository first.
    pub fn config_and_layers(&self) -> Result<impl Iterator<Item = &Descriptor>, ParseError> {
        let config = self.config.as_ref().ok_or(InvalidManifest::NoConfig)?;
        Ok(std::iter::once(config).chain(&self.layers))
    }

    /// The blobs a client pulls from a registry for an image manifest: its config and its
    /// layers, less foreign (non-distributable) layers, which come from their own URLs.
    /// [`Manifest::references`] lists what a manifest references; this is what is worth
    /// fetching ahead of a client.
    pub fn pulled_blobs(&self) -> Vec<Digest> {
        let distributable = |layer: &&Descriptor| {
            !layer
                .media_type
                .as_deref()
                .is_some_and(|mt| mt.contains(".foreign.") || mt.contains(".nondistributable."))
        };
        self.config
            .iter()
            .chain(self.layers.iter().filter(distributable))
            .map(|d| d.digest.clone())
            .collect()
    }

    /// What the referrers API lists as its type: `artifactType`, else the config's media type.
    pub fn artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref()?.media_type.as_deref())
    }

    /// Roughly what this takes on the heap, for caches bounded in bytes.
    pub fn heap_bytes(&self) -> usize {
        let strings = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let descriptors = self
            .config
            .iter()
            .chain(&self.subject)
            .chain(&self.layers)
            .chain(&self.manifests)
            .map(|d| {
                std::mem::size_of::<Descriptor>()
                    + d.digest.hex().len()
                    + strings(&d.media_type)
                    + d.platform.as_ref().map_or(0, |p| {
                        p.os.len() + p.architecture.len() + strings(&p.variant)
                    })
            })
            .sum::<usize>();
        std::mem::size_of::<Manifest>()
            + self.media_type.len()
            + strings(&self.artifact_type)
            + descriptors
            + self.annotations.as_ref().map_or(0, json_heap_bytes)
    }
}

/// Roughly what a JSON value takes on the heap: its text, plus a node's bookkeeping each.
fn json_heap_bytes(value: &serde_json::Value) -> usize {
    const NODE: usize = 64;
    NODE + match value {
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Array(items) => items.iter().map(json_heap_bytes).sum(),
        serde_json::Value::Object(map) => {
            map.iter().map(|(k, v)| k.len() + json_heap_bytes(v)).sum()
        }
        _ => 0,
    }
}

impl Descriptor {
    fn from_raw(raw: RawDescriptor) -> Result<Descriptor, InvalidManifest> {
        let digest = raw
            .digest
            .parse()
            .map_err(|_| InvalidManifest::Digest(truncate_for_message(&raw.digest)))?;
        let platform = raw.platform.and_then(|p| {
            Some(Platform {
                os: p.os?,
                architecture: p.architecture?,
                variant: p.variant,
            })
        });
        Ok(Descriptor {
            media_type: raw.media_type,
            digest,
            size: raw.size,
            platform,
        })
    }
}

#[cfg(test)]
mod tests;

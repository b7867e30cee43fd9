//! Manifest media types, their size limit, and `Accept` negotiation.

/// Manifests are small; nothing buffers a larger one (the spec suggests 4 MiB as the limit).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Every manifest type berth caches, in the order it asks upstream for them.
pub const SUPPORTED: [&str; 4] = [
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// The `Accept` header berth sends upstream when it caches for every client.
pub fn accept_all() -> String {
    SUPPORTED.join(", ")
}

/// The media types a client listed in its `Accept` headers.
#[derive(Debug, Clone, Default)]
pub struct AcceptList {
    types: Vec<String>,
}

impl AcceptList {
    pub fn parse<'a>(headers: impl IntoIterator<Item = &'a str>) -> Self {
        let types = headers
            .into_iter()
            .flat_map(|h| h.split(','))
            .filter_map(|item| {
                let media = item.split(';').next()?.trim().to_ascii_lowercase();
                (!media.is_empty()).then_some(media)
            })
            .collect();
        AcceptList { types }
    }

    fn accepts_anything(&self) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == "*/*")
    }

    pub fn accepts(&self, media_type: &str) -> bool {
        self.accepts_anything() || self.types.iter().any(|t| t == media_type)
    }

    /// True when the client takes every type berth caches: the answer upstream gives to
    /// [`accept_all`] is the right answer for this client too, so it may be cached by tag.
    pub fn covers_all_supported(&self) -> bool {
        SUPPORTED.iter().all(|t| self.accepts(t))
    }

    /// The header to send upstream on this client's behalf.
    pub fn for_upstream(&self) -> String {
        if self.covers_all_supported() {
            accept_all()
        } else {
            self.types.join(", ")
        }
    }
}

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// A `Content-Type` header's media type: lowercase, without parameters; `None` when empty.
pub fn normalize_content_type(content_type: &str) -> Option<String> {
    let media_type = content_type.split(';').next()?.trim().to_ascii_lowercase();
    (!media_type.is_empty()).then_some(media_type)
}

/// An upstream's `Content-Type` for a manifest, unless it names no manifest type in particular
/// (`application/json`, `text/plain`): then the body has to tell.
pub fn upstream_content_type(content_type: Option<&str>) -> Option<String> {
    content_type
        .and_then(normalize_content_type)
        .filter(|ct| ct != "application/json" && ct != "text/plain")
}

/// The media type to pass upstream's manifest on with when [`super::Manifest::parse`] rejects
/// it (a schema 1 manifest, a type berth does not know): upstream's `Content-Type` when it
/// names a manifest type, else the body's own `mediaType` field, else a guess from its shape.
/// The mirror serves such bytes as they came; it does not read them any further.
pub fn passthrough_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    if let Some(declared) = upstream_content_type(content_type) {
        return declared;
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(Shape {
            media_type: Some(mt),
            ..
        }) => mt,
        Ok(Shape {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists() {
        let skopeo = AcceptList::parse([
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.index.v1+json; q=0.5",
        ]);
        assert!(skopeo.covers_all_supported());
        assert!(AcceptList::parse([]).covers_all_supported());
        assert!(AcceptList::parse(["*/*"]).covers_all_supported());
        let old = AcceptList::parse([DOCKER_MANIFEST]);
        assert!(!old.covers_all_supported());
        assert!(old.accepts(DOCKER_MANIFEST));
        assert!(!old.accepts(OCI_INDEX));
        assert_eq!(old.for_upstream(), DOCKER_MANIFEST);
    }

    #[test]
    fn media_type_resolution() {
        assert_eq!(passthrough_media_type(Some(OCI_INDEX), b"{}"), OCI_INDEX);
        assert_eq!(
            passthrough_media_type(Some("application/json"), br#"{"mediaType":"x/y"}"#),
            "x/y"
        );
        assert_eq!(
            passthrough_media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#),
            OCI_INDEX
        );
        assert_eq!(
            passthrough_media_type(None, br#"{"schemaVersion":2}"#),
            OCI_MANIFEST
        );
    }
}

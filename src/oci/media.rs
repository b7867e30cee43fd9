//! Manifest media types, their size limit, and `Accept` negotiation.

use super::Digest;

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

/// What a body says it is, if it is a manifest of a supported kind: its `mediaType`, or for
/// the (allowed) bodies without one, an index if it lists `manifests`, an image manifest if it
/// has `config` and `layers`.
pub fn sniff_manifest(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let shape: Shape = serde_json::from_slice(body).ok()?;
    if shape.schema_version != Some(2) {
        return None;
    }
    match shape.media_type {
        Some(mt) if SUPPORTED.contains(&mt.as_str()) => Some(mt),
        Some(_) => None,
        None if shape.manifests.is_some() => Some(OCI_INDEX.to_owned()),
        None if shape.config.is_some() && shape.layers.is_some() => Some(OCI_MANIFEST.to_owned()),
        None => None,
    }
}

/// Every digest a manifest or index body points at: config, layers, child manifests, subject.
pub fn references(body: &[u8]) -> Vec<Digest> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let digest_of = |d: &serde_json::Value| d.get("digest")?.as_str()?.parse().ok();
    let mut found: Vec<_> = ["config", "subject"]
        .iter()
        .filter_map(|k| value.get(k).and_then(digest_of))
        .collect();
    for list in ["layers", "manifests", "blobs"] {
        if let Some(items) = value.get(list).and_then(|v| v.as_array()) {
            found.extend(items.iter().filter_map(digest_of));
        }
    }
    found
}

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// What one image is made of, one level down: an index's child manifests, or an image
/// manifest's config and layers. A `subject` is another image, so it is not a part.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parts {
    pub manifests: Vec<ChildManifest>,
    pub blobs: Vec<Digest>,
}

/// An index entry: a manifest, and the platform it is for (`linux/arm64/v8`), if it says.
#[derive(Debug, PartialEq, Eq)]
pub struct ChildManifest {
    pub digest: Digest,
    pub platform: Option<String>,
}

/// `os/architecture[/variant]` of an index entry's `platform`.
fn platform_of(entry: &serde_json::Value) -> Option<String> {
    let platform = entry.get("platform")?;
    let field = |key: &str| platform.get(key).and_then(|v| v.as_str());
    let mut text = format!("{}/{}", field("os")?, field("architecture")?);
    if let Some(variant) = field("variant").filter(|v| !v.is_empty()) {
        text.push('/');
        text.push_str(variant);
    }
    Some(text)
}

pub fn parts(media_type: &str, body: &[u8]) -> Parts {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Parts::default();
    };
    if is_index(media_type) {
        let entries = value.get("manifests").and_then(|v| v.as_array());
        let manifests = entries
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                Some(ChildManifest {
                    digest: digest_of(entry)?,
                    platform: platform_of(entry),
                })
            })
            .collect();
        return Parts {
            manifests,
            blobs: Vec::new(),
        };
    }
    Parts {
        manifests: Vec::new(),
        blobs: image_blobs(&value, |_| true),
    }
}

/// The blobs a client pulls from a registry for an image manifest: its config and its layers,
/// less foreign (non-distributable) layers, which come from their own URLs. What `parts` lists
/// is what a manifest references; this is what is worth fetching ahead of a client.
pub fn pulled_blobs(media_type: &str, body: &[u8]) -> Vec<Digest> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) if !is_index(media_type) => image_blobs(&value, |layer| {
            !layer
                .get("mediaType")
                .and_then(|v| v.as_str())
                .is_some_and(|mt| mt.contains(".foreign.") || mt.contains(".nondistributable."))
        }),
        _ => Vec::new(),
    }
}

fn digest_of(descriptor: &serde_json::Value) -> Option<Digest> {
    descriptor.get("digest")?.as_str()?.parse().ok()
}

/// An image manifest's config, then the layers `keep` accepts, in manifest order.
fn image_blobs(
    manifest: &serde_json::Value,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Vec<Digest> {
    let layers = manifest.get("layers").and_then(|v| v.as_array());
    manifest
        .get("config")
        .and_then(digest_of)
        .into_iter()
        .chain(
            layers
                .into_iter()
                .flatten()
                .filter(|layer| keep(layer))
                .filter_map(digest_of),
        )
        .collect()
}

/// The media type of a manifest body: upstream's `Content-Type` when it names a manifest type,
/// else the body's own `mediaType` field, else a guess from its shape.
pub fn resolve_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    let declared = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .filter(|ct| !ct.is_empty() && ct != "application/json" && ct != "text/plain");
    if let Some(declared) = declared {
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
    fn parts_split_child_manifests_from_blobs_and_leave_the_subject_out() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let digest = |c: char| d(c).parse::<Digest>().unwrap();
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[{{"digest":"{}"}}],"subject":{{"digest":"{}"}}}}"#,
            d('a'),
            d('b'),
            d('c')
        );
        assert_eq!(
            parts(OCI_MANIFEST, image.as_bytes()),
            Parts {
                manifests: vec![],
                blobs: vec![digest('a'), digest('b')]
            }
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},{{"digest":"{}"}}]}}"#,
            d('d'),
            d('e')
        );
        assert_eq!(
            parts(DOCKER_MANIFEST_LIST, index.as_bytes()),
            Parts {
                manifests: vec![
                    ChildManifest {
                        digest: digest('d'),
                        platform: Some("linux/arm64/v8".into())
                    },
                    ChildManifest {
                        digest: digest('e'),
                        platform: None
                    }
                ],
                blobs: vec![]
            }
        );
        assert_eq!(parts(OCI_MANIFEST, b"not json"), Parts::default());
    }

    #[test]
    fn pulled_blobs_leave_foreign_layers_out() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[
                {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}"}},
                {{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{}"}},
                {{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}"}}]}}"#,
            d('a'),
            d('b'),
            d('c'),
            d('d')
        );
        let pulled: Vec<String> = pulled_blobs(OCI_MANIFEST, image.as_bytes())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(pulled, [d('a'), d('d')]);
        // What the manifest references still names all four (gc and eviction go by that).
        assert_eq!(parts(OCI_MANIFEST, image.as_bytes()).blobs.len(), 4);
    }

    #[test]
    fn references_of_manifests_and_indexes() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = format!("sha256:{}", "c".repeat(64));
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{a}"}},"layers":[{{"digest":"{b}"}},{{"digest":"bad"}}],"subject":{{"digest":"{c}"}}}}"#
        );
        let found: Vec<String> = references(image.as_bytes())
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(found, [a.clone(), c, b]);
        let index = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{a}"}}]}}"#);
        assert_eq!(references(index.as_bytes()).len(), 1);
        assert!(references(b"not json").is_empty());
    }

    #[test]
    fn sniffing() {
        assert_eq!(
            sniff_manifest(br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#).as_deref(),
            Some(DOCKER_MANIFEST)
        );
        assert_eq!(
            sniff_manifest(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(OCI_INDEX)
        );
        assert_eq!(
            sniff_manifest(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(
            sniff_manifest(br#"{"schemaVersion":1,"fsLayers":[]}"#),
            None
        );
        assert_eq!(
            sniff_manifest(br#"{"schemaVersion":2,"mediaType":"text/html"}"#),
            None
        );
        assert_eq!(sniff_manifest(b"\x1f\x8b binary layer"), None);
    }

    #[test]
    fn media_type_resolution() {
        assert_eq!(resolve_media_type(Some(OCI_INDEX), b"{}"), OCI_INDEX);
        assert_eq!(
            resolve_media_type(Some("application/json"), br#"{"mediaType":"x/y"}"#),
            "x/y"
        );
        assert_eq!(
            resolve_media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#),
            OCI_INDEX
        );
        assert_eq!(
            resolve_media_type(None, br#"{"schemaVersion":2}"#),
            OCI_MANIFEST
        );
    }
}

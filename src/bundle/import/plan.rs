//! What a bundle holds, checked: the images its `index.json` names, and every manifest and
//! blob they need.
//!
//! The same walk runs twice: in the CLI over the bundle (to refuse a broken one before copying
//! anything) and in the daemon over what was staged and stored (to trust no client).
//! `index.json` entries carry `org.opencontainers.image.ref.name` with an image's full name;
//! entries without one are referrers (signatures, SBOMs) of the images, found by their
//! `subject`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::BundleError;
use crate::oci::media;
use crate::oci::{Digest, Manifest};

/// The annotation naming an index entry.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where the walk reads blobs from: the bundle, or the staging and the store.
pub trait BlobSource {
    /// The blob's size, if the source holds it.
    fn size(&self, digest: &Digest) -> Option<u64>;
    /// A manifest's bytes, checked against its digest.
    fn read_manifest(&self, digest: &Digest) -> Result<Vec<u8>, BundleError>;
}

/// What `index.json` names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roots {
    pub images: Vec<Root>,
    /// Untagged entries: referrers of the images.
    pub referrers: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// The entry's `ref.name`, a full image name (`docker.io/library/alpine:3.20`).
    pub name: String,
    pub digest: Digest,
}

#[derive(Deserialize)]
struct LayoutIndex {
    manifests: Vec<LayoutEntry>,
}

#[derive(Deserialize)]
struct LayoutEntry {
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Reads `index.json`.
pub fn roots(index_json: &[u8]) -> Result<Roots, BundleError> {
    let index: LayoutIndex = serde_json::from_slice(index_json)
        .map_err(|e| BundleError::layout(format!("index.json is not an OCI index: {e}")))?;
    let mut roots = Roots::default();
    for entry in index.manifests {
        let digest: Digest = entry.digest.parse().map_err(|_| {
            BundleError::layout(format!(
                "index.json names an invalid digest {:?}",
                entry.digest
            ))
        })?;
        match entry.annotations.get(REF_NAME) {
            Some(name) => roots.images.push(Root {
                name: name.clone(),
                digest,
            }),
            None => roots.referrers.push(digest),
        }
    }
    if roots.images.is_empty() {
        return Err(BundleError::layout(format!(
            "index.json names no image (no entry has {REF_NAME})"
        )));
    }
    Ok(roots)
}

/// A checked bundle: what to store, in an order where children come before what names them.
#[derive(Debug, Default)]
pub struct Plan {
    pub images: Vec<Image>,
    pub manifests: Vec<PlannedManifest>,
    /// Configs and layers, each once, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Child manifests an index names that the bundle left out (platforms not exported).
    pub left_out: usize,
}

#[derive(Debug)]
pub struct Image {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    /// Every manifest and blob of the image, its referrers' included, `digest` first.
    pub holds: Vec<Digest>,
}

#[derive(Debug)]
pub struct PlannedManifest {
    pub digest: Digest,
    pub body: Vec<u8>,
    pub parsed: Arc<Manifest>,
}

impl Plan {
    /// Bytes of every manifest and blob.
    pub fn bytes(&self) -> u64 {
        let manifests: u64 = self.manifests.iter().map(|m| m.body.len() as u64).sum();
        manifests + self.blobs.iter().map(|(_, size)| size).sum::<u64>()
    }
}

/// Walks every image and referrer of `roots` over `source`.
pub fn walk(source: &impl BlobSource, roots: &Roots) -> Result<Plan, BundleError> {
    let mut walk = Walk {
        source,
        plan: Plan::default(),
        manifests: HashMap::new(),
        blobs: HashSet::new(),
    };
    for root in &roots.images {
        let mut holds = Vec::new();
        walk.manifest(&root.digest, None, &mut holds)?;
        let media_type = walk.plan.manifests[walk.manifests[&root.digest]]
            .parsed
            .media_type
            .clone();
        walk.plan.images.push(Image {
            name: root.name.clone(),
            digest: root.digest.clone(),
            media_type,
            holds,
        });
    }
    for referrer in &roots.referrers {
        let mut holds = Vec::new();
        walk.manifest(referrer, None, &mut holds)?;
        let parsed = &walk.plan.manifests[walk.manifests[referrer]].parsed;
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let mut attached = false;
        for image in &mut walk.plan.images {
            if subject.as_ref().is_some_and(|s| image.holds.contains(s)) {
                image.holds.extend(holds.iter().cloned());
                attached = true;
            }
        }
        if !attached {
            return Err(BundleError::layout(format!(
                "index.json entry {referrer} has no {REF_NAME} and is no referrer of an image of the bundle"
            )));
        }
    }
    Ok(walk.plan)
}

struct Walk<'a, S> {
    source: &'a S,
    plan: Plan,
    /// Manifests walked, by their place in `plan.manifests`.
    manifests: HashMap<Digest, usize>,
    blobs: HashSet<Digest>,
}

impl<S: BlobSource> Walk<'_, S> {
    /// Checks the size a descriptor declares against the blob's.
    fn sized(
        &self,
        digest: &Digest,
        declared: Option<u64>,
        named_by: &str,
    ) -> Result<u64, BundleError> {
        let size = self.source.size(digest).ok_or_else(|| {
            BundleError::blob(digest, format!("is missing ({named_by} names it)"))
        })?;
        match declared {
            Some(declared) if declared != size => Err(BundleError::blob(
                digest,
                format!("holds {size} bytes where {named_by} declares {declared}"),
            )),
            _ => Ok(size),
        }
    }

    /// Adds a manifest and what it holds to the plan (once), and its closure to `holds`.
    fn manifest(
        &mut self,
        digest: &Digest,
        declared: Option<u64>,
        holds: &mut Vec<Digest>,
    ) -> Result<(), BundleError> {
        self.sized(digest, declared, "the index")?;
        if let Some(&at) = self.manifests.get(digest) {
            // Walked for another image: its closure is recorded there; gather it again.
            let parsed = Arc::clone(&self.plan.manifests[at].parsed);
            holds.push(digest.clone());
            return self.children(digest, &parsed, holds, false);
        }
        let body = self.source.read_manifest(digest)?;
        let parsed = Manifest::parse(&body, None).map_err(|e| {
            BundleError::blob(digest, format!("is not a manifest berth reads: {e}"))
        })?;
        if !media::SUPPORTED.contains(&parsed.media_type.as_str()) {
            return Err(BundleError::blob(
                digest,
                format!("has unsupported media type {}", parsed.media_type),
            ));
        }
        let parsed = Arc::new(parsed);
        holds.push(digest.clone());
        self.children(digest, &parsed, holds, true)?;
        self.manifests
            .insert(digest.clone(), self.plan.manifests.len());
        self.plan.manifests.push(PlannedManifest {
            digest: digest.clone(),
            body,
            parsed,
        });
        Ok(())
    }

    fn children(
        &mut self,
        digest: &Digest,
        parsed: &Manifest,
        holds: &mut Vec<Digest>,
        first: bool,
    ) -> Result<(), BundleError> {
        if parsed.is_index() {
            for child in &parsed.manifests {
                if self.source.size(&child.digest).is_none() {
                    // A platform left out on purpose; nothing of it is imported.
                    if first {
                        self.plan.left_out += 1;
                    }
                    continue;
                }
                self.manifest(&child.digest, child.size, holds)?;
            }
            return Ok(());
        }
        let named_by = format!("manifest {digest}");
        let blobs = parsed
            .config_and_layers()
            .map_err(|e| BundleError::blob(digest, e.to_string()))?;
        for blob in blobs {
            let foreign = blob
                .media_type
                .as_deref()
                .is_some_and(|mt| mt.contains(".foreign.") || mt.contains(".nondistributable."));
            if foreign && self.source.size(&blob.digest).is_none() {
                // Clients fetch it from its own URLs; registries do not hold it.
                continue;
            }
            let size = self.sized(&blob.digest, blob.size, &named_by)?;
            holds.push(blob.digest.clone());
            if self.blobs.insert(blob.digest.clone()) {
                self.plan.blobs.push((blob.digest.clone(), size));
            }
        }
        Ok(())
    }
}

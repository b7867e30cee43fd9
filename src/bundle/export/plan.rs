//! What an export writes, found before a byte of it is: every image's manifest (an index
//! byte-identical, with only the platforms asked for below it), their configs and layers, and
//! the referrers of every exported manifest (signatures, SBOMs, attestations; and theirs).
//! A wrong name, a refused image or a platform no image has fails here, so nothing is written.

use std::collections::{BTreeSet, HashSet, VecDeque};

use bytes::Bytes;

use super::client::{Client, FetchedManifest};
use super::names::Named;
use super::{ExportError, Platforms};
use crate::oci::{media, Descriptor, Digest, Manifest, Reference};

/// How deep referrers of referrers are followed (a signature of an SBOM of an image is 2).
const REFERRER_DEPTH: usize = 3;

/// An entry of the layout's `index.json`.
#[derive(Debug, Clone)]
pub struct Root {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// The image's full name; `None` for a referrer, found through its `subject`.
    pub name: Option<String>,
    pub artifact_type: Option<String>,
}

/// A blob to copy, and the repository it is read from.
#[derive(Debug, Clone)]
pub struct PlannedBlob {
    pub repository: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub roots: Vec<Root>,
    /// Manifest bodies (small, held here), each once.
    pub manifests: Vec<(Digest, Bytes)>,
    /// Configs and layers, each once.
    pub blobs: Vec<PlannedBlob>,
    seen: HashSet<Digest>,
}

impl Plan {
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// Walks every image `names` lists on the berth `client` reads.
pub async fn plan(
    client: &Client,
    names: &[Named],
    platforms: &Platforms,
) -> Result<Plan, ExportError> {
    let mut plan = Plan::default();
    for named in names {
        let reference = match &named.reference {
            Reference::Tag(tag) => tag.to_string(),
            Reference::Digest(digest) => digest.to_string(),
        };
        let fetched = client
            .manifest(&named.repository, &reference)
            .await
            .map_err(|e| e.about(&named.written))?;
        let manifest = parse(&fetched, &named.written)?;
        plan.roots.push(Root {
            media_type: manifest.media_type.clone(),
            digest: fetched.digest.clone(),
            size: fetched.bytes.len() as u64,
            name: Some(named.full.clone()),
            artifact_type: None,
        });
        let mut exported = Vec::new();
        walk(
            client,
            &named.repository,
            fetched,
            manifest,
            platforms,
            &named.written,
            &mut plan,
            &mut exported,
        )
        .await?;
        referrers(client, &named.repository, exported, &mut plan).await?;
    }
    Ok(plan)
}

fn parse(fetched: &FetchedManifest, what: &str) -> Result<Manifest, ExportError> {
    let declared = media::upstream_content_type(Some(&fetched.media_type));
    Manifest::parse(&fetched.bytes, declared.as_deref()).map_err(|e| {
        ExportError::Invalid(format!(
            "{what}: {} is not an OCI or Docker v2 manifest berth can export: {e}",
            fetched.digest
        ))
    })
}

/// Adds a manifest (and, for an index, the children `platforms` selects) with their blobs;
/// the digest of every manifest added goes to `exported`, whose referrers are asked next.
#[allow(clippy::too_many_arguments)]
async fn walk(
    client: &Client,
    repository: &str,
    fetched: FetchedManifest,
    manifest: Manifest,
    platforms: &Platforms,
    what: &str,
    plan: &mut Plan,
    exported: &mut Vec<Digest>,
) -> Result<(), ExportError> {
    let mut queue = VecDeque::from([(fetched, manifest, true)]);
    while let Some((fetched, manifest, top)) = queue.pop_front() {
        if !plan.seen.insert(fetched.digest.clone()) {
            continue;
        }
        exported.push(fetched.digest.clone());
        plan.manifests.push((fetched.digest.clone(), fetched.bytes));
        if manifest.is_index() {
            let children: Vec<&Descriptor> = manifest
                .manifests
                .iter()
                .filter(|child| !top || platforms.selects(child.platform.as_ref()))
                .collect();
            if children.is_empty() && !manifest.manifests.is_empty() {
                return Err(ExportError::Platform(format!(
                    "{what} has none of the platforms asked for ({platforms}); it has {}",
                    offered(&manifest)
                )));
            }
            for child in children {
                let fetched = client
                    .manifest(repository, &child.digest.to_string())
                    .await
                    .map_err(|e| e.about(what))?;
                let parsed = parse(&fetched, what)?;
                queue.push_back((fetched, parsed, false));
            }
            continue;
        }
        let distributable = |layer: &&Descriptor| {
            !layer
                .media_type
                .as_deref()
                .is_some_and(|mt| mt.contains(".foreign.") || mt.contains(".nondistributable."))
        };
        for blob in manifest
            .config
            .iter()
            .chain(manifest.layers.iter().filter(distributable))
        {
            if !plan.seen.insert(blob.digest.clone()) {
                continue;
            }
            let size = blob.size.ok_or_else(|| {
                ExportError::Invalid(format!("{what}: blob {} has no size", blob.digest))
            })?;
            plan.blobs.push(PlannedBlob {
                repository: repository.to_owned(),
                digest: blob.digest.clone(),
                size,
            });
        }
    }
    Ok(())
}

/// The platforms an index lists, for the message when none was selected.
fn offered(index: &Manifest) -> String {
    let listed: BTreeSet<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
        .collect();
    listed.into_iter().collect::<Vec<_>>().join(", ")
}

/// Adds the referrers of every manifest in `subjects`, and theirs, to `REFERRER_DEPTH`.
async fn referrers(
    client: &Client,
    repository: &str,
    mut subjects: Vec<Digest>,
    plan: &mut Plan,
) -> Result<(), ExportError> {
    for _ in 0..REFERRER_DEPTH {
        let mut next = Vec::new();
        for subject in &subjects {
            for referrer in client.referrers(repository, subject).await? {
                if plan.seen.contains(&referrer.digest) {
                    continue;
                }
                let what = format!("referrer {} of {repository}@{subject}", referrer.digest);
                let fetched = client
                    .manifest(repository, &referrer.digest.to_string())
                    .await?;
                let manifest = parse(&fetched, &what)?;
                plan.roots.push(Root {
                    media_type: manifest.media_type.clone(),
                    digest: fetched.digest.clone(),
                    size: fetched.bytes.len() as u64,
                    name: None,
                    artifact_type: referrer
                        .artifact_type
                        .clone()
                        .or_else(|| manifest.artifact_type().map(str::to_owned)),
                });
                walk(
                    client,
                    repository,
                    fetched,
                    manifest,
                    &Platforms::All,
                    &what,
                    plan,
                    &mut next,
                )
                .await?;
            }
        }
        if next.is_empty() {
            break;
        }
        subjects = next;
    }
    Ok(())
}

//! `berth export IMAGE… -o FILE`: copies images from a running berth, through its registry API
//! as any client would, into an OCI image layout, a tar or a directory, for carrying across an
//! air gap.
//!
//! In order: every image is resolved and walked first (`plan`), so a wrong name writes
//! nothing; then each blob not already there from an interrupted run is streamed from the
//! berth into the layout, hashed as it is written and dropped if it is not the blob its digest
//! names (`layout`, `tar`); `index.json` goes last. The network side (an async task) and the
//! disk side (one blocking thread, hashing and writing) overlap through a bounded channel, so
//! no blob is ever held whole in memory.
//!
//! Referrers (signatures, SBOMs) of every exported manifest are exported too and listed in
//! `index.json` without a `ref.name` (as `oras copy --recursive` lays them out): tools that
//! look images up by name pass over them, and the importer finds them through their `subject`.

mod client;
mod layout;
mod names;
mod plan;
mod progress;
mod tar;

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::HumanBytes;
use serde_json::json;
use url::Url;

use self::client::{error_chain, Client};
use self::layout::{DirLayout, Layout};
use self::names::Naming;
use self::plan::Plan;
use self::progress::Progress;
use self::tar::TarLayout;
use crate::config::Settings;
use crate::oci::{media, Digest, ImageReference, ParseError, Platform};

/// Chunks in flight between the network task and the writing thread.
const CHANNEL_CHUNKS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{image}: {source}")]
    About {
        image: String,
        #[source]
        source: Box<ExportError>,
    },
    #[error("{0:?} is not an image name: {1}")]
    Name(String, #[source] ParseError),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("refused: {0}")]
    Denied(String),
    #[error("the registry answered {0}")]
    Registry(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("blob {digest} failed verification: its content hashes to {got}; it was not kept (run the export again)")]
    Digest { digest: Digest, got: Digest },
    #[error("blob {digest} failed verification: {got} bytes where its descriptor says {expected}; it was not kept (run the export again)")]
    Size {
        digest: Digest,
        expected: u64,
        got: u64,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Platform(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start: {0}")]
    Client(String),
}

impl ExportError {
    /// Says which image the error is about (once).
    fn about(self, image: &str) -> ExportError {
        match self {
            ExportError::About { .. } => self,
            source => ExportError::About {
                image: image.to_owned(),
                source: Box::new(source),
            },
        }
    }
}

/// Which platforms of a multi-platform image to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    All,
    Only(Vec<Platform>),
}

impl Platforms {
    /// Whether an index entry for `platform` is exported (one that names none is not,
    /// unless all are).
    pub fn selects(&self, platform: Option<&Platform>) -> bool {
        match self {
            Platforms::All => true,
            Platforms::Only(wanted) => platform.is_some_and(|p| {
                wanted.iter().any(|w| {
                    w.os == p.os
                        && w.architecture == p.architecture
                        && (w.variant.is_none() || w.variant == p.variant)
                })
            }),
        }
    }
}

impl FromStr for Platforms {
    type Err = String;

    /// `all`, or `os/arch[/variant]` separated by commas.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "all" {
            return Ok(Platforms::All);
        }
        let parse = |item: &str| {
            let parts: Vec<&str> = item.trim().split('/').collect();
            match parts[..] {
                [os, architecture] | [os, architecture, _]
                    if !os.is_empty() && !architecture.is_empty() =>
                {
                    Ok(Platform {
                        os: os.to_owned(),
                        architecture: architecture.to_owned(),
                        variant: parts.get(2).map(|v| (*v).to_owned()),
                    })
                }
                _ => Err(format!(
                    "{item:?} is not a platform (os/architecture[/variant], e.g. linux/arm64, or all)"
                )),
            }
        };
        let wanted = text
            .split(',')
            .filter(|item| !item.trim().is_empty())
            .map(parse)
            .collect::<Result<Vec<_>, _>>()?;
        if wanted.is_empty() {
            return Err("no platform given".into());
        }
        Ok(Platforms::Only(wanted))
    }
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Platforms::All => f.write_str("all"),
            Platforms::Only(list) => {
                let names: Vec<String> = list.iter().map(ToString::to_string).collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

/// A tar (`FILE.tar`, what `oci-archive:` reads) or a directory (what `oci:` reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    Dir,
}

impl Format {
    /// A name ending in `.tar` is a tar; anything else a directory.
    pub fn for_path(path: &Path) -> Format {
        if path.extension().is_some_and(|e| e == "tar") {
            Format::Tar
        } else {
            Format::Dir
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub images: Vec<String>,
    pub platforms: Platforms,
    pub output: PathBuf,
    pub format: Format,
    /// The berth to read; `None` for the one the configuration describes.
    pub from: Option<Url>,
    pub credentials: Option<(String, String)>,
}

#[derive(Debug)]
pub struct Summary {
    pub output: PathBuf,
    pub images: usize,
    pub referrers: usize,
    pub manifests: usize,
    pub blobs_written: usize,
    pub bytes_written: u64,
    pub blobs_kept: usize,
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64().max(0.001);
        writeln!(
            f,
            "exported {} image(s) and {} referrer(s) to {}",
            self.images,
            self.referrers,
            self.output.display()
        )?;
        writeln!(
            f,
            "manifests: {}; blobs fetched: {} ({}, {}/s); blobs already there: {}",
            self.manifests,
            self.blobs_written,
            HumanBytes(self.bytes_written),
            HumanBytes((self.bytes_written as f64 / seconds) as u64),
            self.blobs_kept
        )?;
        write!(f, "elapsed: {:.1?}", self.elapsed)
    }
}

/// The berth the configuration describes: its `external_url`, else its listen address (the
/// loopback when it listens on every address).
pub fn configured_berth(settings: &Settings) -> Result<Url, ExportError> {
    if let Some(url) = &settings.server.external_url {
        return Ok(url.clone());
    }
    let mut address = settings.server.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if settings.server.tls_enabled() {
        "https"
    } else {
        "http"
    };
    Url::parse(&format!("{scheme}://{address}/")).map_err(|e| ExportError::Invalid(e.to_string()))
}

/// Runs the export `options` describe. Blocks.
pub fn run(settings: &Settings, options: ExportOptions) -> Result<Summary, ExportError> {
    let mut from = match &options.from {
        Some(url) => url.clone(),
        None => configured_berth(settings)?,
    };
    if !from.path().ends_with('/') {
        from.set_path(&format!("{}/", from.path()));
    }
    let berth_host = match (from.host_str(), from.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(ExportError::Invalid(format!("{from}: no host"))),
    };
    let naming = Naming::new(settings.projects.iter().map(|p| p.name.clone()), berth_host);
    let names = options
        .images
        .iter()
        .map(|text| {
            text.parse::<ImageReference>()
                .map(|image| naming.name(&image))
                .map_err(|e| ExportError::Name(text.clone(), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = Client::new(from, options.credentials.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ExportError::Client(e.to_string()))?;
    runtime.block_on(async {
        let begin = Instant::now();
        let plan = plan::plan(&client, &names, &options.platforms).await?;
        let (output, format) = (options.output.clone(), options.format);
        let layout: Shared = tokio::task::spawn_blocking(move || open(&output, format))
            .await
            .map_err(|e| ExportError::Client(format!("the writer failed: {e}")))?
            .map(|layout| Arc::new(Mutex::new(layout)))?;
        let progress = Progress::new(std::io::stderr().is_terminal());
        let written = write(&client, &plan, &layout, &progress).await;
        progress.done();
        let written = written?;
        let index = index_json(&plan);
        on_layout(&layout, move |layout| layout.finish(&index)).await?;
        let referrers = plan.roots.iter().filter(|r| r.name.is_none()).count();
        Ok(Summary {
            output: options.output.clone(),
            images: plan.roots.len() - referrers,
            referrers,
            manifests: plan.manifests.len(),
            blobs_written: written.blobs,
            bytes_written: written.bytes,
            blobs_kept: written.kept,
            elapsed: begin.elapsed(),
        })
    })
}

/// The layout, used by one blocking step at a time.
type Shared = Arc<Mutex<Box<dyn Layout>>>;

fn open(output: &Path, format: Format) -> Result<Box<dyn Layout>, ExportError> {
    Ok(match format {
        Format::Tar => Box::new(TarLayout::open(output)?),
        Format::Dir => Box::new(DirLayout::open(output)?),
    })
}

/// Runs `work` on the layout on a blocking thread (file writes and hashing stay off the
/// async workers, which keep reading the network).
async fn on_layout<T, F>(layout: &Shared, work: F) -> Result<T, ExportError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Layout) -> Result<T, ExportError> + Send + 'static,
{
    let layout = Arc::clone(layout);
    tokio::task::spawn_blocking(move || {
        let mut guard = layout
            .lock()
            .map_err(|_| ExportError::Client("the writer failed earlier".into()))?;
        work(guard.as_mut())
    })
    .await
    .map_err(|e| ExportError::Client(format!("the writer failed: {e}")))?
}

/// What this run wrote, and what an earlier one had.
struct Written {
    blobs: usize,
    bytes: u64,
    kept: usize,
}

/// Writes the manifests and every blob not already in the layout.
async fn write(
    client: &Client,
    plan: &Plan,
    layout: &Shared,
    progress: &Progress,
) -> Result<Written, ExportError> {
    let manifests = plan.manifests.clone();
    on_layout(layout, move |layout| {
        for (digest, body) in manifests {
            if !layout.present(&digest, body.len() as u64)? {
                let size = body.len() as u64;
                let mut once = Some(body);
                layout.put(&digest, size, &mut || once.take())?;
            }
        }
        Ok(())
    })
    .await?;
    let wanted: Vec<(Digest, u64)> = plan
        .blobs
        .iter()
        .map(|b| (b.digest.clone(), b.size))
        .collect();
    let present = on_layout(layout, move |layout| {
        wanted
            .iter()
            .map(|(digest, size)| layout.present(digest, *size))
            .collect::<Result<Vec<bool>, _>>()
    })
    .await?;
    let missing: Vec<_> = plan
        .blobs
        .iter()
        .zip(&present)
        .filter(|(_, there)| !**there)
        .map(|(blob, _)| blob)
        .collect();
    let bytes: u64 = missing.iter().map(|b| b.size).sum();
    let kept = plan.blobs.len() - missing.len();
    progress.planned(missing.len(), bytes, kept, plan.blob_bytes() - bytes);
    for (number, blob) in missing.iter().enumerate() {
        progress.blob(format!("blob {}/{}", number + 1, missing.len()));
        copy_blob(client, blob, layout, progress).await?;
    }
    Ok(Written {
        blobs: missing.len(),
        bytes,
        kept,
    })
}

/// Streams one blob from the berth into the layout: the network read here, the hashing and
/// writing on a blocking thread, a bounded channel between them.
async fn copy_blob(
    client: &Client,
    blob: &plan::PlannedBlob,
    layout: &Shared,
    progress: &Progress,
) -> Result<(), ExportError> {
    let response = client.blob(&blob.repository, &blob.digest).await?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let (digest, size) = (blob.digest.clone(), blob.size);
    let writer = on_layout(layout, move |layout| {
        layout.put(&digest, size, &mut || receiver.blocking_recv())
    });
    let reader = async move {
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ExportError::Unreachable {
                url: format!(
                    "{}v2/{}/blobs/{}",
                    client.base(),
                    blob.repository,
                    blob.digest
                ),
                reason: error_chain(&e),
            })?;
            progress.fetched(chunk.len() as u64);
            if sender.send(chunk).await.is_err() {
                // The writer stopped (a wrong length); its error says why.
                break;
            }
        }
        Ok::<(), ExportError>(())
    };
    let (read, written) = tokio::join!(reader, writer);
    read.and(written)
}

/// The layout's `index.json`: each image under its full name (in both annotations tools look
/// for: `org.opencontainers.image.ref.name` for skopeo and the spec, `io.containerd.image.name`
/// for containerd), then the referrers, unnamed, with their artifact type.
fn index_json(plan: &Plan) -> Vec<u8> {
    let manifests: Vec<_> = plan
        .roots
        .iter()
        .map(|root| {
            let mut entry = json!({
                "mediaType": root.media_type,
                "digest": root.digest.to_string(),
                "size": root.size,
            });
            if let Some(name) = &root.name {
                entry["annotations"] = json!({
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name,
                });
            }
            if let Some(artifact_type) = &root.artifact_type {
                entry["artifactType"] = json!(artifact_type);
            }
            entry
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    serde_json::to_vec_pretty(&index).unwrap_or_default()
}

#[cfg(test)]
mod tests;

//! `berth cache stats|ls|rm` and `berth gc`: asked of the running berth through its admin
//! socket, or, when no berth answers there (no socket, or nobody listening), done here on the
//! stopped berth's data directory with the same registry code. Prints for humans.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::cache::collect::{Collected, Dropped};
use crate::cache::evict::Budget;
use crate::cache::inventory::{CacheStats, CachedImage, Count};
use crate::cache::Cache;
use crate::clock::Clock;
use crate::config::{Projects, Settings};
use crate::http::admin::{RemoveRepositoryRequest, RemoveRequest, RetentionRequest};
use crate::registry::Registry;
use crate::server::admin_lifecycle::{format_removed_repository, format_retention};
use crate::storage::{Recovery, Storage};
use crate::upstream::Upstreams;

/// One admin operation.
#[derive(Debug, Clone)]
pub enum Operation {
    Stats,
    List,
    Remove(String),
    Gc,
    /// `berth retention [--dry-run]`.
    Retention {
        dry_run: bool,
    },
    /// `berth repo rm NAME`.
    RemoveRepository(String),
}

/// Runs `op` against the running berth, else offline; what to print, or why it failed.
pub fn run(settings: &Settings, op: &Operation) -> Result<String, String> {
    let socket = settings.admin_socket();
    let mut text = match UnixStream::connect(&socket) {
        Ok(stream) => online(stream, op)?,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            offline(settings, op)?
        }
        Err(e) => {
            return Err(format!(
                "cannot reach the running berth at {}: {e} (run this as the user berth runs as, or root)",
                socket.display()
            ))
        }
    };
    let cache_only = !matches!(
        op,
        Operation::Retention { .. } | Operation::RemoveRepository(_)
    );
    if settings.storage.s3.is_some() && cache_only {
        text.push_str("(a shared store is configured: this is this node's local tier only)\n");
    }
    Ok(text)
}

fn online(stream: UnixStream, op: &Operation) -> Result<String, String> {
    Ok(match op {
        Operation::Stats => format_stats(&request(stream, "GET", "/admin/stats", None)?),
        Operation::List => {
            let images: Vec<CachedImage> = request(stream, "GET", "/admin/images", None)?;
            format_images(&images)
        }
        Operation::Remove(image) => {
            let body = serde_json::to_vec(&RemoveRequest {
                image: image.clone(),
            })
            .map_err(|e| e.to_string())?;
            format_dropped(
                image,
                &request(stream, "POST", "/admin/images/rm", Some(&body))?,
            )
        }
        Operation::Gc => format_collected(&request(stream, "POST", "/admin/gc", None)?, None),
        Operation::Retention { dry_run } => {
            let body = serde_json::to_vec(&RetentionRequest { dry_run: *dry_run })
                .map_err(|e| e.to_string())?;
            format_retention(&request(stream, "POST", "/admin/retention", Some(&body))?)
        }
        Operation::RemoveRepository(name) => {
            let body = serde_json::to_vec(&RemoveRepositoryRequest {
                repository: name.clone(),
            })
            .map_err(|e| e.to_string())?;
            let removed = request(stream, "POST", "/admin/repositories/rm", Some(&body))?;
            format_removed_repository(name, &removed)
        }
    })
}

/// One HTTP/1.0 exchange on the socket (the answer's length is known; no chunking).
fn request<T: DeserializeOwned>(
    mut stream: UnixStream,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<T, String> {
    let body = body.unwrap_or_default();
    let io_error = |e: io::Error| format!("admin socket: {e}");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .and_then(|()| stream.write_all(body))
    .map_err(io_error)?;
    read_answer(stream)
}

/// Reads an HTTP/1.0 answer from the admin socket: the value of a 200, else the error message
/// of its body.
pub(crate) fn read_answer<T: DeserializeOwned>(mut stream: UnixStream) -> Result<T, String> {
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("admin socket: {e}"))?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("admin socket: no complete answer")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let payload = &answer[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("admin socket: no status in the answer")?;
    if status != 200 {
        return Err(serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned()));
    }
    serde_json::from_slice(payload).map_err(|e| format!("admin socket: bad answer: {e}"))
}

fn offline(settings: &Settings, op: &Operation) -> Result<String, String> {
    // With a shared store these change what every node serves: they run through a running
    // node (its admin socket), as the tests drive them, not from a stopped node's CLI.
    if settings.storage.s3.is_some()
        && matches!(
            op,
            Operation::Retention { .. } | Operation::RemoveRepository(_)
        )
    {
        return Err("with [storage.s3], run this against a running berth (no berth answers on its admin socket)".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        // Changes need a consistent store (as a start makes it); reading does not.
        let recover = matches!(
            op,
            Operation::Remove(_)
                | Operation::Gc
                | Operation::Retention { dry_run: false }
                | Operation::RemoveRepository(_)
        );
        let (registry, recovery) = open_offline(settings, recover)?;
        let cache = registry.cache();
        let text = match op {
            Operation::Stats => format_stats(&registry.cache_stats().await.map_err(show)?),
            Operation::List => format_images(&registry.cached_images().await.map_err(show)?),
            Operation::Remove(image) => {
                format_dropped(image, &registry.drop_cached(image).await.map_err(show)?)
            }
            // Nothing is in progress on a stopped berth: no grace needed.
            Operation::Gc => format_collected(
                &registry
                    .collect_garbage(Duration::ZERO)
                    .await
                    .map_err(show)?,
                recovery.as_ref(),
            ),
            Operation::Retention { dry_run } => {
                format_retention(&registry.apply_retention(*dry_run).await.map_err(show)?)
            }
            Operation::RemoveRepository(name) => format_removed_repository(
                name,
                &registry.delete_repository(name).await.map_err(show)?,
            ),
        };
        if recover {
            cache.close().map_err(|e| e.to_string())?;
        }
        Ok(text)
    })
}

fn show(e: crate::registry::RegistryError) -> String {
    match e.is_server_fault() {
        true => e.chain().to_string(),
        false => e.message().to_owned(),
    }
}

/// The registry over the stopped berth's local storage, and the shared store when
/// `[storage.s3]` names one (an import writes there), recovered first when `recover`.
pub(crate) fn open_offline(
    settings: &Settings,
    recover: bool,
) -> Result<(Registry, Option<Recovery>), String> {
    let data_dir = &settings.storage.data_dir;
    let storage = Storage::open(data_dir).map_err(|e| {
        format!(
            "cannot open {} (is berth running on it, with its admin socket elsewhere?): {e}",
            data_dir.display()
        )
    })?;
    let recovery = match recover {
        true => Some(storage.recover().map_err(|e| e.to_string())?),
        false => None,
    };
    let stored = storage.total_size().map_err(|e| e.to_string())?;
    let budget = Budget {
        max_bytes: settings.storage.max_size.0,
        ..Budget::unlimited()
    };
    let cache = Cache::new(Arc::new(storage), Arc::default(), 8 << 20, budget, stored);
    // What a running node would write to the shared store goes there offline too.
    let cache = super::shared::with_shared_store(cache, settings).map_err(|e| e.to_string())?;
    let clock = Clock::system();
    let upstreams = Upstreams::new(&settings.upstreams, true, &clock).map_err(|e| e.to_string())?;
    let projects = Projects::new(&settings.projects);
    let registry = Registry::new(
        upstreams,
        Arc::new(cache),
        projects,
        &settings.mirror,
        clock,
    );
    Ok((registry, recovery))
}

/// `12.3 GiB`: binary units, one decimal past KiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `4,512`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn count(c: &Count, what: &str) -> String {
    let plural = if c.blobs == 1 { "" } else { "s" };
    format!(
        "{} in {} {what}{plural}",
        human_bytes(c.bytes),
        thousands(c.blobs)
    )
}

fn format_stats(stats: &CacheStats) -> String {
    let mut out = format!("cached: {}\n", count(&stats.total, "blob"));
    out += &format!("  manifests: {}\n", count(&stats.manifests, "blob"));
    out += &format!("  configs and layers: {}\n", count(&stats.layers, "blob"));
    out += &format!("uploads in progress: {}\n", count(&stats.uploads, "upload"));
    out += &format!("cached mirror tags: {}\n", thousands(stats.mirror_tags));
    out += &format!(
        "project repositories: {}\n",
        thousands(stats.project_repositories)
    );
    out += &match stats.max_bytes {
        Some(max) => format!(
            "budget: {} ({:.1}% used)\n",
            human_bytes(max),
            (stats.total.bytes + stats.uploads.bytes) as f64 * 100.0 / max.max(1) as f64
        ),
        None => "budget: unlimited\n".to_owned(),
    };
    out += &format!("pinned images: {}\n", stats.pins.len());
    for pin in &stats.pins {
        out += &format!("  {} -> {} ({} blobs)\n", pin.image, pin.digest, pin.blobs);
    }
    out
}

fn format_images(images: &[CachedImage]) -> String {
    if images.is_empty() {
        return "no cached images\n".to_owned();
    }
    let now = crate::storage::index::now_ms();
    let mut out = String::new();
    for image in images {
        let age = Duration::from_secs(now.saturating_sub(image.checked_at_ms) / 1000);
        let size = match image.manifest_stored {
            true => human_bytes(image.stored_bytes),
            false => "manifest not stored".to_owned(),
        };
        out += &format!(
            "{}/{}:{} -> {}  checked {} ago  {size}\n",
            image.upstream,
            image.repository,
            image.tag,
            image.digest,
            humantime::format_duration(age)
        );
    }
    out
}

fn format_dropped(image: &str, dropped: &Dropped) -> String {
    let digest = dropped
        .digest
        .as_ref()
        .map_or(String::new(), |d| format!(" ({d})"));
    format!(
        "removed {image}{digest}: {} tag record(s), freed {} in {} blobs; {} blobs kept (shared or in use)\n",
        dropped.tags_removed,
        human_bytes(dropped.bytes_removed),
        thousands(dropped.blobs_removed as u64),
        thousands(dropped.blobs_shared as u64),
    )
}

fn format_collected(done: &Collected, recovery: Option<&Recovery>) -> String {
    let mut out = format!(
        "freed {} in {} manifests and {} blobs\n",
        human_bytes(done.bytes_removed),
        thousands(done.manifests_removed as u64),
        thousands(done.blobs_removed as u64),
    );
    if done.local_tier_only {
        out += "shared store: only this node's local tier was collected\n";
    }
    out += &format!(
        "manifests: {}\nmanifests removed: {}\nrepository links removed: {}\nblobs kept: {}\nkept as recent or in use: {}\nblobs removed: {}\nbytes removed: {}\n",
        done.manifests,
        done.manifests_removed,
        done.links_removed,
        done.blobs_kept,
        done.recent_kept,
        done.blobs_removed,
        done.bytes_removed,
    );
    if let Some(recovery) = recovery {
        out += &format!(
            "temp files removed: {}\nexpired uploads removed: {}\n",
            recovery.temp_files_removed, recovery.uploads_removed
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(13_207_024_435), "12.3 GiB");
        assert_eq!(thousands(4512), "4,512");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}

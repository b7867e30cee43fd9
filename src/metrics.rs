//! Process-wide counters, rendered in the Prometheus text format at `/metrics`.
//!
//! Atomics need no metrics framework: every label berth uses takes a few fixed values (or names
//! a configured upstream), so each series is an atomic in a struct or a fixed array, counted
//! without a lock or a hash. Each counter and gauge is named once, where it is rendered.

pub mod requests;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One upstream's health, as its breaker and not-found memory report it.
#[derive(Debug)]
pub struct UpstreamHealth {
    pub upstream: String,
    /// 0 closed (upstream answers), 1 open (considered down), 2 half-open (a probe is out).
    pub state: AtomicU64,
    pub trips: AtomicU64,
    pub rejected: AtomicU64,
    pub not_found_hits: AtomicU64,
    /// Requests sent that upstream answered with what was asked for.
    pub requests_ok: AtomicU64,
    /// Requests sent that failed (an error status, a timeout, a broken connection).
    pub requests_failed: AtomicU64,
}

impl UpstreamHealth {
    pub fn new(upstream: &str) -> Self {
        UpstreamHealth {
            upstream: upstream.to_owned(),
            state: AtomicU64::new(0),
            trips: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            not_found_hits: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// Each upstream's health, labelled by upstream.
    pub upstreams: Mutex<Vec<Arc<UpstreamHealth>>>,
    pub blob_hits: AtomicU64,
    pub blob_misses: AtomicU64,
    pub blob_coalesced: AtomicU64,
    pub manifest_hits: AtomicU64,
    pub manifest_misses: AtomicU64,
    pub manifest_coalesced: AtomicU64,
    pub stale_serves: AtomicU64,
    pub upstream_blob_gets: AtomicU64,
    pub shared_blob_gets: AtomicU64,
    pub shared_blob_passes: AtomicU64,
    pub shared_blob_puts: AtomicU64,
    pub upstream_manifest_gets: AtomicU64,
    pub upstream_manifest_heads: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub upstream_bytes: AtomicU64,
    pub blob_bytes_served: AtomicU64,
    pub fills_failed: AtomicU64,
    pub evictions: AtomicU64,
    /// `berth gc` runs, and what they removed.
    pub gc_runs: AtomicU64,
    pub gc_blobs_removed: AtomicU64,
    pub gc_manifests_removed: AtomicU64,
    pub gc_bytes_removed: AtomicU64,
    pub pin_seeds: AtomicU64,
    pub pin_failures: AtomicU64,
    pub prefetched_blobs: AtomicU64,
    pub prefetch_failures: AtomicU64,
    /// Gauge: bytes counted against `storage.max_size` (stored blobs and uploads), kept by
    /// the cache's usage accounting itself.
    pub storage_used_bytes: Arc<AtomicU64>,
    /// Gauge: blob fills running (fetching, verifying or committing).
    pub fills_in_flight: AtomicU64,
    /// Requests by endpoint and status, their durations, and what they did.
    pub requests: requests::RequestMetrics,
}

/// What the store holds, read when `/metrics` is asked (the index keeps running totals, so
/// this costs a read, never a scan).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stored {
    pub blobs: u64,
    pub bytes: u64,
    /// Uploads in progress on this node.
    pub uploads: u64,
    /// Blobs and bytes of manifests and of every other blob, in that order; `None` until an
    /// index from before they were kept has been counted once.
    pub by_kind: Option<[StoredKind; 2]>,
}

/// The blobs of one kind in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKind {
    /// The `kind` label: `manifest` or `blob`.
    pub kind: &'static str,
    pub blobs: u64,
    pub bytes: u64,
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Every series, with `stored` as the store's gauges.
    pub fn render(&self, stored: Option<Stored>) -> String {
        let rows: &[(&str, &str, &AtomicU64)] = &[
            (
                "berth_blob_cache_hits_total",
                "Blob requests served from the cache.",
                &self.blob_hits,
            ),
            (
                "berth_blob_cache_misses_total",
                "Blob requests that started an upstream fetch.",
                &self.blob_misses,
            ),
            (
                "berth_blob_coalesced_total",
                "Blob requests that joined a fetch already in flight.",
                &self.blob_coalesced,
            ),
            (
                "berth_manifest_cache_hits_total",
                "Manifest requests served from the cache.",
                &self.manifest_hits,
            ),
            (
                "berth_manifest_cache_misses_total",
                "Manifest requests fetched from upstream.",
                &self.manifest_misses,
            ),
            (
                "berth_manifest_coalesced_total",
                "Manifest requests that joined an upstream request already in flight.",
                &self.manifest_coalesced,
            ),
            (
                "berth_stale_serves_total",
                "Tags served from cache because upstream could not confirm them.",
                &self.stale_serves,
            ),
            (
                "berth_upstream_blob_gets_total",
                "Blob GET requests sent upstream.",
                &self.upstream_blob_gets,
            ),
            (
                "berth_shared_blob_gets_total",
                "Blobs filled into this node's tier from the shared store.",
                &self.shared_blob_gets,
            ),
            (
                "berth_shared_blob_passes_total",
                "Blobs read from the shared store straight to a client, not kept (a first read).",
                &self.shared_blob_passes,
            ),
            (
                "berth_shared_blob_puts_total",
                "Blobs from upstream written to the shared store once verified.",
                &self.shared_blob_puts,
            ),
            (
                "berth_upstream_manifest_gets_total",
                "Manifest GET requests sent upstream.",
                &self.upstream_manifest_gets,
            ),
            (
                "berth_upstream_manifest_heads_total",
                "Manifest HEAD requests sent upstream (tag revalidation).",
                &self.upstream_manifest_heads,
            ),
            (
                "berth_upstream_errors_total",
                "Upstream requests that failed.",
                &self.upstream_errors,
            ),
            (
                "berth_upstream_bytes_total",
                "Blob bytes received from upstream.",
                &self.upstream_bytes,
            ),
            (
                "berth_blob_fills_failed_total",
                "Blob fetches discarded (cut off, wrong digest, storage error).",
                &self.fills_failed,
            ),
            (
                "berth_blob_bytes_served_total",
                "Blob bytes handed to clients, from the cache and from fills in flight.",
                &self.blob_bytes_served,
            ),
            (
                "berth_evictions_total",
                "Blobs evicted to keep the cache within storage.max_size.",
                &self.evictions,
            ),
            (
                "berth_gc_runs_total",
                "Garbage collections run (berth gc).",
                &self.gc_runs,
            ),
            (
                "berth_gc_blobs_removed_total",
                "Blobs removed by garbage collection.",
                &self.gc_blobs_removed,
            ),
            (
                "berth_gc_manifests_removed_total",
                "Manifests removed by garbage collection.",
                &self.gc_manifests_removed,
            ),
            (
                "berth_gc_bytes_removed_total",
                "Bytes removed by garbage collection.",
                &self.gc_bytes_removed,
            ),
            (
                "berth_pin_seeds_total",
                "Times a pinned image was found or made complete in the cache.",
                &self.pin_seeds,
            ),
            (
                "berth_pin_failures_total",
                "Times a pinned image could not be made complete (retried).",
                &self.pin_failures,
            ),
            (
                "berth_prefetched_blobs_total",
                "Blobs fetched into the cache ahead of a client's request, after it got the manifest.",
                &self.prefetched_blobs,
            ),
            (
                "berth_prefetch_failures_total",
                "Blobs prefetch could not fetch (the client's own request tries again).",
                &self.prefetch_failures,
            ),
        ];
        let gauges: &[(&str, &str, &AtomicU64)] = &[
            (
                "berth_storage_used_bytes",
                "Bytes on disk counted against storage.max_size: stored blobs (each digest once) and uploads in progress.",
                &self.storage_used_bytes,
            ),
            (
                "berth_fills_in_flight",
                "Blob fills running: fetching from upstream, verifying or committing.",
                &self.fills_in_flight,
            ),
        ];
        let mut out = String::new();
        for (kind, rows) in [("counter", rows), ("gauge", gauges)] {
            for &(name, help, value) in rows {
                out.push_str(&format!(
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                    value.load(Ordering::Relaxed)
                ));
            }
        }
        self.render_cache_results(&mut out);
        if let Some(stored) = stored {
            for (name, help, value) in [
                (
                    "berth_stored_blobs",
                    "Blobs in this node's store: layers, configs and manifests, mirrored and pushed alike (the index counts them together).",
                    stored.blobs,
                ),
                (
                    "berth_stored_bytes",
                    "Bytes of the blobs in this node's store.",
                    stored.bytes,
                ),
                (
                    "berth_uploads_open",
                    "Uploads (blob pushes) in progress on this node.",
                    stored.uploads,
                ),
            ] {
                requests::header(&mut out, name, "gauge", help);
                let _ = writeln!(out, "{name} {value}");
            }
            if let Some(kinds) = &stored.by_kind {
                render_kinds(&mut out, kinds);
            }
        }
        self.requests.render(&mut out);
        self.render_upstreams(&mut out);
        out
    }

    /// The cache's answers as one labelled family, from the same counters as the unlabelled
    /// series above (kept for dashboards that use them).
    fn render_cache_results(&self, out: &mut String) {
        let name = "berth_cache_requests_total";
        requests::header(
            out,
            name,
            "counter",
            "Blob and manifest requests by cache result: hit (served from the cache), miss (fetched), coalesced (joined a fetch in flight).",
        );
        for (kind, hit, miss, coalesced) in [
            (
                "blob",
                &self.blob_hits,
                &self.blob_misses,
                &self.blob_coalesced,
            ),
            (
                "manifest",
                &self.manifest_hits,
                &self.manifest_misses,
                &self.manifest_coalesced,
            ),
        ] {
            for (result, counter) in [("hit", hit), ("miss", miss), ("coalesced", coalesced)] {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{kind}\",result=\"{result}\"}} {}",
                    counter.load(Ordering::Relaxed)
                );
            }
        }
    }

    /// Makes `health` part of `/metrics`.
    pub fn watch_upstream(&self, health: Arc<UpstreamHealth>) {
        self.upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(health);
    }

    fn render_upstreams(&self, out: &mut String) {
        let upstreams = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        if upstreams.is_empty() {
            return;
        }
        type Field = fn(&UpstreamHealth) -> &AtomicU64;
        let rows: [(&str, &str, &str, Field); 4] = [
            (
                "berth_upstream_breaker_state",
                "gauge",
                "Upstream breaker: 0 closed (answering), 1 open (considered down), 2 half-open (probing).",
                |h| &h.state,
            ),
            (
                "berth_upstream_breaker_trips_total",
                "counter",
                "Times an upstream was considered down after failures in a row.",
                |h| &h.trips,
            ),
            (
                "berth_upstream_breaker_rejections_total",
                "counter",
                "Upstream requests failed at once because the upstream was considered down.",
                |h| &h.rejected,
            ),
            (
                "berth_upstream_not_found_remembered_total",
                "counter",
                "Upstream requests answered from a remembered 404 instead of asking again.",
                |h| &h.not_found_hits,
            ),
        ];
        let name = "berth_upstream_requests_total";
        requests::header(
            out,
            name,
            "counter",
            "Requests sent to each upstream, by result: ok, or error (an error status, a timeout, a broken connection).",
        );
        for health in upstreams.iter() {
            for (result, counter) in [
                ("ok", &health.requests_ok),
                ("error", &health.requests_failed),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",result=\"{result}\"}} {}",
                    health.upstream,
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        for (name, kind, help, field) in rows {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for health in upstreams.iter() {
                out.push_str(&format!(
                    "{name}{{upstream=\"{}\"}} {}\n",
                    health.upstream,
                    field(health).load(Ordering::Relaxed)
                ));
            }
        }
    }
}

/// The store's gauges by kind, in families of their own, so that a sum over a family never
/// counts a blob twice (the unlabelled `berth_stored_*` series hold the overall totals).
fn render_kinds(out: &mut String, kinds: &[StoredKind; 2]) {
    for (name, help, value) in [
        (
            "berth_stored_blobs_by_kind",
            "Blobs in this node's store by kind: manifest, or blob (layers, configs and everything else); they add up to berth_stored_blobs.",
            (|k: &StoredKind| k.blobs) as fn(&StoredKind) -> u64,
        ),
        (
            "berth_stored_bytes_by_kind",
            "Bytes of the blobs in this node's store by kind; they add up to berth_stored_bytes.",
            |k: &StoredKind| k.bytes,
        ),
    ] {
        requests::header(out, name, "gauge", help);
        for kind in kinds {
            let _ = writeln!(out, "{name}{{kind=\"{}\"}} {}", kind.kind, value(kind));
        }
    }
}

//! Per-request series: requests by endpoint kind and status class, their durations as
//! histograms, and the counters of what requests did (pushes, deletes, logins, tokens).
//!
//! Every label here takes one of a few fixed values, so each series is an atomic in a fixed
//! array: recording a request takes no lock and no hash, and every series is shown from the
//! start (at 0), which keeps `rate()` honest after a restart.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a request was for, as the `endpoint` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    Manifest,
    Blob,
    Upload,
    Token,
    /// Tags, the catalog and referrers: listings.
    Listing,
    /// Everything else: `/v2/`, `/healthz`, `/readyz`, `/metrics`, unknown paths.
    Other,
}

impl EndpointKind {
    pub const ALL: [EndpointKind; 6] = [
        EndpointKind::Manifest,
        EndpointKind::Blob,
        EndpointKind::Upload,
        EndpointKind::Token,
        EndpointKind::Listing,
        EndpointKind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EndpointKind::Manifest => "manifest",
            EndpointKind::Blob => "blob",
            EndpointKind::Upload => "upload",
            EndpointKind::Token => "token",
            EndpointKind::Listing => "listing",
            EndpointKind::Other => "other",
        }
    }
}

/// `1xx` … `5xx`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds of the duration buckets, in seconds: from a cached manifest (milliseconds) to
/// a large layer fetched from a slow upstream (minutes).
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// One histogram: a count per bucket (not cumulative: summed when rendered), the sum in
/// microseconds, and the count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&bound| secs <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a login ended, as the `result` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Success,
    Failure,
}

/// How a client asked for a token, as the `grant` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenGrant {
    Anonymous,
    Password,
    Refresh,
}

/// What was deleted, as the `kind` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteKind {
    Manifest,
    Tag,
    Blob,
}

#[derive(Debug, Default)]
pub struct RequestMetrics {
    /// `[endpoint][status class]`
    requests: [[AtomicU64; STATUS_CLASSES.len()]; EndpointKind::ALL.len()],
    durations: [Histogram; EndpointKind::ALL.len()],
    pushes: AtomicU64,
    /// `[manifest, tag, blob]`
    deletes: [AtomicU64; 3],
    /// `[success, failure]`
    logins: [AtomicU64; 2],
    /// `[anonymous, password, refresh]`
    tokens: [AtomicU64; 3],
}

impl RequestMetrics {
    /// Counts a request answered with `status` after `elapsed` (its body sent, or given up).
    pub fn observe(&self, endpoint: EndpointKind, status: u16, elapsed: Duration) {
        let e = endpoint as usize;
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[e][class].fetch_add(1, Ordering::Relaxed);
        self.durations[e].observe(elapsed);
    }

    /// A manifest was pushed (a PUT accepted).
    pub fn pushed(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn deleted(&self, kind: DeleteKind) {
        self.deletes[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn login(&self, result: LoginResult) {
        self.logins[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn token_request(&self, grant: TokenGrant) {
        self.tokens[grant as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(
            out,
            "berth_http_requests_total",
            "counter",
            "HTTP requests answered, by endpoint kind and status class.",
        );
        for kind in EndpointKind::ALL {
            for (class, label) in STATUS_CLASSES.iter().enumerate() {
                let value = load(&self.requests[kind as usize][class]);
                let _ = writeln!(
                    out,
                    "berth_http_requests_total{{endpoint=\"{}\",status=\"{label}\"}} {value}",
                    kind.label()
                );
            }
        }
        let name = "berth_http_request_duration_seconds";
        header(
            out,
            name,
            "histogram",
            "Time from a request's arrival to the last byte of its answer, by endpoint kind.",
        );
        for kind in EndpointKind::ALL {
            let histogram = &self.durations[kind as usize];
            let endpoint = kind.label();
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&histogram.buckets) {
                cumulative += load(bucket);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{endpoint=\"{endpoint}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = load(&histogram.count);
            let sum = load(&histogram.sum_micros) as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {count}\n{name}_sum{{endpoint=\"{endpoint}\"}} {sum}\n{name}_count{{endpoint=\"{endpoint}\"}} {count}"
            );
        }
        header(
            out,
            "berth_pushes_total",
            "counter",
            "Manifests pushed into private projects.",
        );
        let _ = writeln!(out, "berth_pushes_total {}", load(&self.pushes));
        labelled(
            out,
            "berth_deletes_total",
            "Deletes in private projects, by what was deleted.",
            "kind",
            &["manifest", "tag", "blob"],
            &self.deletes,
        );
        labelled(
            out,
            "berth_logins_total",
            "Logins (token requests with credentials), by result.",
            "result",
            &["success", "failure"],
            &self.logins,
        );
        labelled(
            out,
            "berth_token_requests_total",
            "Requests to the token endpoint, by how the client asked.",
            "grant",
            &["anonymous", "password", "refresh"],
            &self.tokens,
        );
    }
}

pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A counter with one label, one series per value.
pub(super) fn labelled(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
    counters: &[AtomicU64],
) {
    header(out, name, "counter", help);
    for (value, counter) in values.iter().zip(counters) {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{value}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_class_and_buckets() {
        let metrics = RequestMetrics::default();
        metrics.observe(EndpointKind::Blob, 200, Duration::from_millis(30));
        metrics.observe(EndpointKind::Blob, 206, Duration::from_secs(3));
        metrics.observe(EndpointKind::Manifest, 404, Duration::from_secs(500));
        metrics.login(LoginResult::Failure);
        let mut out = String::new();
        metrics.render(&mut out);
        for line in [
            "berth_http_requests_total{endpoint=\"blob\",status=\"2xx\"} 2",
            "berth_http_requests_total{endpoint=\"manifest\",status=\"4xx\"} 1",
            "berth_http_request_duration_seconds_bucket{endpoint=\"blob\",le=\"0.025\"} 0",
            "berth_http_request_duration_seconds_bucket{endpoint=\"blob\",le=\"0.05\"} 1",
            "berth_http_request_duration_seconds_bucket{endpoint=\"blob\",le=\"5\"} 2",
            "berth_http_request_duration_seconds_bucket{endpoint=\"manifest\",le=\"120\"} 0",
            "berth_http_request_duration_seconds_bucket{endpoint=\"manifest\",le=\"+Inf\"} 1",
            "berth_http_request_duration_seconds_sum{endpoint=\"blob\"} 3.03",
            "berth_http_request_duration_seconds_count{endpoint=\"blob\"} 2",
            "berth_logins_total{result=\"failure\"} 1",
            "berth_logins_total{result=\"success\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}

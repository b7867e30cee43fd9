//! `berth storage migrate --to-s3`: moves a single node's store into the shared store its
//! `[storage.s3]` names, so that it (and more nodes) can run over it. Runs on a stopped node:
//! it opens the node's index, which a running berth holds locked. Blobs first
//! (`storage::migrate`), then the private projects' records (`registry::private::migrate`);
//! a rerun skips what is already there, so an interrupted migration is simply run again.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::Settings;
use crate::registry::private::migrate::{copy_records, RecordReport};
use crate::storage::migrate::{copy_blobs, BlobReport, Progress};
use crate::storage::shared::SharedError;
use crate::storage::{Storage, StorageError};

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("no [storage.s3] in the configuration: nothing to migrate to (set [storage.s3], or BERTH__STORAGE__S3__ENDPOINT and the rest)")]
    NoTarget,
    #[error("{0} holds no berth store (no index): nothing to migrate")]
    NoSource(String),
    #[error("the index in {0} is locked: a berth is running on this data directory; stop it first (migration runs on a stopped node)")]
    Locked(String),
    #[error("cannot open the store in {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: StorageError,
    },
    #[error("the shared store: {0}")]
    Target(#[from] SharedError),
    #[error("migration interrupted (run it again: it continues where it stopped): {0}")]
    Interrupted(#[from] StorageError),
    #[error("cannot start: {0}")]
    Runtime(#[from] std::io::Error),
}

#[derive(Debug)]
pub struct Summary {
    pub blobs: BlobReport,
    pub records: RecordReport,
    pub elapsed: Duration,
}

impl Summary {
    /// True when something the node held is not in the shared store.
    pub fn left_out(&self) -> bool {
        self.blobs.corrupt > 0 || self.records.skipped > 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (b, r) = (&self.blobs, &self.records);
        writeln!(
            f,
            "blobs copied: {} ({})",
            b.copied,
            HumanBytes(b.bytes_copied)
        )?;
        writeln!(f, "blobs already in the store: {}", b.skipped)?;
        writeln!(f, "blobs corrupt or missing, not copied: {}", b.corrupt)?;
        writeln!(
            f,
            "records written: {} (blob links {}, manifests {}, referrers {}, tags {})",
            r.written(),
            r.links,
            r.manifests,
            r.referrers,
            r.tags
        )?;
        writeln!(f, "records left out: {}", r.skipped)?;
        write!(f, "elapsed: {:.1?}", self.elapsed)
    }
}

/// Runs the migration `settings` describe: `[storage] data_dir` into `[storage.s3]`. Blocks.
pub fn run(settings: &Settings) -> Result<Summary, MigrateError> {
    let data_dir = &settings.storage.data_dir;
    let shown = data_dir.display().to_string();
    let store = super::shared::shared_store(settings)?.ok_or(MigrateError::NoTarget)?;
    if !data_dir.join("index").is_dir() {
        return Err(MigrateError::NoSource(shown));
    }
    let storage = match Storage::open(data_dir) {
        Ok(storage) => Arc::new(storage),
        Err(e) if e.to_string().contains("could not acquire lock") => {
            return Err(MigrateError::Locked(shown))
        }
        Err(source) => {
            return Err(MigrateError::Open {
                path: shown,
                source,
            })
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let progress = Bar::new(std::io::stderr().is_terminal());
    runtime.block_on(async {
        let begin = Instant::now();
        // A store that cannot be reached (or refuses the key) says so before anything starts.
        store.check().await?;
        let ticker = (!progress.terminal).then(|| tokio::spawn(progress.log_lines()));
        let blobs = copy_blobs(Arc::clone(&storage), &store, &progress).await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        progress.bar.finish_and_clear();
        let blobs = blobs?;
        eprintln!("berth: blobs done; copying the private projects' records");
        let not_copied = blobs.not_copied.clone();
        let records = copy_records(storage, &store, not_copied, &progress).await?;
        Ok(Summary {
            blobs,
            records,
            elapsed: begin.elapsed(),
        })
    })
}

/// A bar with bytes, rate and ETA on a terminal; otherwise the same numbers as periodic lines.
struct Bar {
    bar: ProgressBar,
    terminal: bool,
}

impl Bar {
    fn new(terminal: bool) -> Self {
        // Drawn once the work is known (see `planned`); before, there is nothing to show.
        let bar = ProgressBar::hidden();
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Bar { bar, terminal }
    }

    /// Logs progress every [`LOG_EVERY`] until aborted.
    fn log_lines(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let bar = self.bar.clone();
        async move {
            let mut every = tokio::time::interval(LOG_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                let (done, total) = (bar.position(), bar.length().unwrap_or(0));
                eprintln!(
                    "berth: migrate: {} of {} sent ({}%), {}/s, eta {}",
                    HumanBytes(done),
                    HumanBytes(total),
                    (done * 100).checked_div(total).unwrap_or(100),
                    HumanBytes(bar.per_sec() as u64),
                    HumanDuration(bar.eta())
                );
            }
        }
    }
}

impl Progress for Bar {
    fn planned(&self, blobs: u64, bytes: u64) {
        self.bar
            .suspend(|| eprintln!("berth: migrating {blobs} blobs ({})", HumanBytes(bytes)));
        self.bar.set_message(format!("({blobs} blobs)"));
        self.bar.set_length(bytes);
        if self.terminal {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn sent(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn skipped(&self, bytes: u64) {
        // What is there already is no work: the bar, rate and ETA count only what is sent.
        let length = self.bar.length().unwrap_or(0);
        self.bar.set_length(length.saturating_sub(bytes));
    }

    fn warn(&self, message: &str) {
        self.bar.suspend(|| eprintln!("berth: {message}"));
    }
}

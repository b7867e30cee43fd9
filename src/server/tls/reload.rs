//! Reloading the served key pair: on SIGHUP, and when either file changes (polled, so it works
//! with editors, `cp`, certbot hooks and Kubernetes' symlink swaps alike, without inotify). A
//! pair that does not load is logged and the one being served stays.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::Signal;

use super::{fingerprint, load_pair, CertResolver, PairFiles};

/// How often the files' metadata is looked at.
pub const POLL: Duration = Duration::from_secs(3);

/// What tells a changed file: modification time, size and inode (an atomic rename within the
/// same second changes the inode).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamps(files: &PairFiles) -> [Stamp; 2] {
    use std::os::unix::fs::MetadataExt;
    [&files.cert, &files.key].map(|path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len(), meta.ino()))
    })
}

/// Runs until the server stops: reloads `files` into `resolver` on each `hangup` signal and
/// whenever the files' stamps change.
pub async fn keep_fresh(resolver: Arc<CertResolver>, files: PairFiles, mut hangup: Signal) {
    let mut seen = stamped(&files).await;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reason = tokio::select! {
            _ = hangup.recv() => "SIGHUP",
            _ = poll.tick() => "files changed",
        };
        let now = stamped(&files).await;
        if reason != "SIGHUP" && now == seen {
            continue;
        }
        seen = now;
        let loaded = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || load_pair(&files)).await
        };
        match loaded {
            Ok(Ok(pair)) => {
                let sha256 = fingerprint(&pair);
                let changed = sha256 != fingerprint(&resolver.current());
                resolver.replace(pair);
                tracing::info!(
                    reason,
                    certificate = %files.cert.display(),
                    %sha256,
                    changed,
                    "TLS certificate reloaded; new connections get it, open ones keep theirs"
                );
            }
            Ok(Err(e)) => tracing::error!(
                reason,
                error = %e,
                "TLS certificate not reloaded; still serving the previous one"
            ),
            Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
        }
    }
}

async fn stamped(files: &PairFiles) -> [Stamp; 2] {
    let files = files.clone();
    tokio::task::spawn_blocking(move || stamps(&files))
        .await
        .unwrap_or([None, None])
}

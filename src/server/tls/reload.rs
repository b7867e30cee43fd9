//! Reloading the served key pair and the client CA (`server.tls_client_ca`): on SIGHUP, and
//! when a file changes (polled, so it works with editors, `cp`, certbot hooks and Kubernetes'
//! symlink swaps alike, without inotify). A pair or CA file that does not load is logged and
//! the one in use stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::Signal;

use super::{fingerprint, load_pair, CertResolver, ClientCa, PairFiles};

/// How often the files' metadata is looked at.
pub const POLL: Duration = Duration::from_secs(3);

/// What tells a changed file: modification time, size and inode (an atomic rename within the
/// same second changes the inode).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// Runs until the server stops: reloads `files` into `resolver`, and the client CA, on each
/// `hangup` signal and whenever the files' stamps change.
pub async fn keep_fresh(
    resolver: Arc<CertResolver>,
    files: PairFiles,
    client_ca: Option<Arc<ClientCa>>,
    mut hangup: Signal,
) {
    let mut watched = vec![files.cert.clone(), files.key.clone()];
    watched.extend(client_ca.as_ref().map(|ca| ca.path().to_owned()));
    let mut seen = stamped(&watched).await;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reason = tokio::select! {
            _ = hangup.recv() => "SIGHUP",
            _ = poll.tick() => "files changed",
        };
        let now = stamped(&watched).await;
        // SIGHUP reloads everything; a poll only what changed (the pair's two files first).
        let hangup = reason == "SIGHUP";
        let pair_changed = hangup || now[..2] != seen[..2];
        let ca_changed = hangup || now[2..] != seen[2..];
        seen = now;
        if pair_changed {
            reload_pair(reason, &resolver, &files).await;
        }
        if let Some(client_ca) = client_ca.as_ref().filter(|_| ca_changed) {
            reload_client_ca(reason, client_ca).await;
        }
    }
}

async fn reload_pair(reason: &str, resolver: &CertResolver, files: &PairFiles) {
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

async fn reload_client_ca(reason: &str, client_ca: &Arc<ClientCa>) {
    let ca = Arc::clone(client_ca);
    match tokio::task::spawn_blocking(move || ca.reload()).await {
        Ok(Ok(())) => tracing::info!(
            reason,
            client_ca = %client_ca.path().display(),
            "TLS client CA reloaded; new connections are checked against it"
        ),
        Ok(Err(e)) => tracing::error!(
            reason,
            error = %e,
            "TLS client CA not reloaded; still checking against the previous one"
        ),
        Err(e) => tracing::error!(error = %e, "TLS client CA reload task failed"),
    }
}

async fn stamped(paths: &[PathBuf]) -> Vec<Stamp> {
    let paths = paths.to_vec();
    let count = paths.len();
    tokio::task::spawn_blocking(move || paths.iter().map(|p| stamp(p)).collect())
        .await
        .unwrap_or_else(|_| vec![None; count])
}

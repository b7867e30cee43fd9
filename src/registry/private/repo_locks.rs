//! One read-write lock per private repository, between garbage collection and the writes that
//! rely on what a repository links.
//!
//! A manifest PUT checks that everything it references is linked to the repository and then
//! stores the manifest; gc reads the repository's manifests and then unlinks what they do not
//! reach. Interleaved, gc could read the manifests, the PUT could check a blob gc is about to
//! unlink, and the PUT would be acknowledged for a blob that is then removed. So a PUT, an
//! upload's finish and a mount hold their repository's lock shared while they check and write;
//! gc holds it exclusively while it re-reads the repository's manifests and unlinks. Every
//! write therefore lands wholly before gc's read (and is in its live set) or wholly after its
//! unlinking (and sees what is gone). Pushes to one repository never wait for one another, and
//! wait for gc only while it handles that repository.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::oci::RepoName;

#[derive(Default)]
pub struct RepoLocks {
    locks: Mutex<HashMap<RepoName, Arc<RwLock<()>>>>,
}

impl RepoLocks {
    fn lock(&self, repo: &RepoName) -> Arc<RwLock<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Locks nobody holds or waits for are dropped as others are made: the map stays as
        // small as the set of repositories being written to.
        if locks.len() >= 1024 {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Arc::clone(locks.entry(repo.clone()).or_default())
    }

    /// Held by a write that relies on the repository's links (async; owned, so it can move to
    /// the blocking pool with the work it covers).
    pub async fn shared(&self, repo: &RepoName) -> OwnedRwLockReadGuard<()> {
        self.lock(repo).read_owned().await
    }

    /// Held by gc while it handles the repository. Blocks: only for the blocking pool or a
    /// thread outside the runtime, never an async worker.
    pub fn exclusive_blocking(&self, repo: &RepoName) -> OwnedRwLockWriteGuard<()> {
        let lock = self.lock(repo);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.block_on(lock.write_owned()),
            // No runtime (the offline CLI's threads, unit tests): nothing async holds it for
            // long, so polling is enough.
            Err(_) => loop {
                match Arc::clone(&lock).try_write_owned() {
                    Ok(guard) => return guard,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            },
        }
    }
}

//! Memory maps of stored blobs, shared: every reader of a blob reads the same mapping.
//!
//! A cache hit is served as slices of one read-only map of the blob file. Mapping it per
//! request made 64 concurrent readers of a 300 MiB blob map it 64 times (each mapping counts
//! in the process's resident set: 11 GB of file pages). Here a blob has at most one mapping at
//! a time: readers find it among the mappings in use (a weak map, so it lives exactly as long
//! as some reader holds it), or among the recently used ones kept for reuse, and concurrent
//! misses share one run of the mapping. Mapped pages are page cache, not heap; the recent set is
//! still bounded in mapped bytes and in count, because a mapping kept open also keeps an
//! evicted (unlinked) file's disk space allocated until it is dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use memmap2::Mmap;

use super::flight::Flights;
use crate::oci::Digest;

/// At most this many recently used mappings are kept for reuse.
const RECENT_MAPPINGS: u64 = 64;
/// A recently used mapping nobody reads is closed after this long.
const RECENT_IDLE: Duration = Duration::from_secs(60);

type Live = Arc<Mutex<HashMap<Digest, Weak<Mapping>>>>;

/// One map of one blob file; leaves the live set when its last reader drops it.
struct Mapping {
    map: Mmap,
    digest: Digest,
    live: Weak<Mutex<HashMap<Digest, Weak<Mapping>>>>,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let Some(live) = self.live.upgrade() else {
            return;
        };
        let mut live = live.lock().unwrap_or_else(|p| p.into_inner());
        // A newer mapping of the same blob may have taken the slot; leave that one.
        if live
            .get(&self.digest)
            .is_some_and(|w| w.strong_count() == 0)
        {
            live.remove(&self.digest);
        }
    }
}

/// The owner a reader's `Bytes` keep alive.
struct Held(Arc<Mapping>);

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}

fn bytes_of(mapping: Arc<Mapping>) -> Bytes {
    Bytes::from_owner(Held(mapping))
}

type MapResult = Result<Option<Bytes>, Arc<io::Error>>;

pub struct Mappings {
    live: Live,
    recent: moka::sync::Cache<Digest, Bytes>,
    flights: Flights<Digest, MapResult>,
}

impl Mappings {
    /// `budget` bounds the bytes mapped by the recently used mappings kept for reuse (those
    /// being read are shared whatever their size).
    pub fn new(budget: u64) -> Self {
        let budget_kib = (budget / 1024).max(1);
        // Every entry weighs at least a 64th of the budget: at most 64 entries.
        let floor = (budget_kib / RECENT_MAPPINGS).max(1);
        Mappings {
            live: Arc::default(),
            recent: moka::sync::Cache::builder()
                .max_capacity(budget_kib)
                .weigher(move |_, bytes: &Bytes| {
                    u32::try_from((bytes.len() as u64 / 1024).max(floor)).unwrap_or(u32::MAX)
                })
                .time_to_idle(RECENT_IDLE)
                .build(),
            flights: Flights::default(),
        }
    }

    /// Forgets the kept mapping of `digest` (before its file is unlinked). Readers holding it
    /// finish with it; the next one maps the file again, if it is still there.
    pub fn invalidate(&self, digest: &Digest) {
        self.recent.invalidate(digest);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
    }

    /// The mapping of `digest`: the one in use or kept, else a new one of the file `open`
    /// returns (`None` when there is no file). Runs blocking work on the blocking pool.
    pub async fn get_or_map<F>(&self, digest: &Digest, open: F) -> io::Result<Option<Bytes>>
    where
        F: FnOnce() -> io::Result<Option<(File, u64)>> + Send + 'static,
    {
        if let Some(bytes) = self.recent.get(digest) {
            return Ok(Some(bytes));
        }
        if let Some(bytes) = self.shared(digest) {
            return Ok(Some(bytes));
        }
        let live = Arc::clone(&self.live);
        let recent = self.recent.clone();
        let d = digest.clone();
        let (result, _joined) = self
            .flights
            .run(digest.clone(), async move {
                let work = move || map_file(&live, &recent, d, open);
                match tokio::task::spawn_blocking(work).await {
                    Ok(result) => result.map_err(Arc::new),
                    Err(e) => Err(Arc::new(io::Error::other(e))),
                }
            })
            .await;
        result.map_err(|e| io::Error::new(e.kind(), e.to_string()))
    }

    /// A mapping some reader still holds.
    fn shared(&self, digest: &Digest) -> Option<Bytes> {
        let mapping = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)?
            .upgrade()?;
        let bytes = bytes_of(mapping);
        self.recent.insert(digest.clone(), bytes.clone());
        Some(bytes)
    }

    #[cfg(test)]
    fn live_count(&self) -> usize {
        self.live.lock().unwrap().len()
    }
}

/// Maps the file (unless a mapping appeared meanwhile) and registers it as live and recent.
fn map_file(
    live: &Live,
    recent: &moka::sync::Cache<Digest, Bytes>,
    digest: Digest,
    open: impl FnOnce() -> io::Result<Option<(File, u64)>>,
) -> io::Result<Option<Bytes>> {
    let existing = live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&digest)
        .and_then(Weak::upgrade);
    if let Some(mapping) = existing {
        return Ok(Some(bytes_of(mapping)));
    }
    let Some((file, len)) = open()? else {
        return Ok(None);
    };
    if len == 0 {
        return Ok(Some(Bytes::new()));
    }
    // SAFETY: blob files are immutable once renamed into place: nothing writes to or truncates
    // them, and eviction unlinks (an existing mapping stays valid).
    // Populating maps the page cache in one go instead of one fault per page.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
    let mapping = Arc::new(Mapping {
        map,
        digest: digest.clone(),
        live: Arc::downgrade(live),
    });
    live.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(digest.clone(), Arc::downgrade(&mapping));
    let bytes = bytes_of(mapping);
    recent.insert(digest, bytes.clone());
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn blob_file(len: usize) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&vec![7u8; len]).unwrap();
        file
    }

    fn opener(
        path: std::path::PathBuf,
        opens: &Arc<AtomicUsize>,
    ) -> impl FnOnce() -> io::Result<Option<(File, u64)>> + Send + 'static {
        let opens = Arc::clone(opens);
        move || {
            opens.fetch_add(1, Ordering::SeqCst);
            // Slow enough that the concurrent callers all miss at once.
            std::thread::sleep(Duration::from_millis(50));
            let file = File::open(&path)?;
            let len = file.metadata()?.len();
            Ok(Some((file, len)))
        }
    }

    /// moka drops what it evicted over a few maintenance runs.
    fn settle(mappings: &Mappings) {
        for _ in 0..4 {
            mappings.recent.run_pending_tasks();
        }
    }

    /// Runs moka's maintenance until `done` holds (2 s at most: under load its cleanup of
    /// evicted entries may take more than a few runs), and says whether it did.
    fn settle_until(mappings: &Mappings, done: impl Fn(&Mappings) -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            settle(mappings);
            if done(mappings) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_readers_share_one_mapping() {
        let file = blob_file(3 * 1024 * 1024);
        let mappings = Arc::new(Mappings::new(1 << 30));
        let digest = Digest::of(b"blob");
        let opens = Arc::new(AtomicUsize::new(0));
        let readers = (0..32).map(|_| {
            let mappings = Arc::clone(&mappings);
            let open = opener(file.path().to_owned(), &opens);
            let digest = digest.clone();
            tokio::spawn(async move { mappings.get_or_map(&digest, open).await.unwrap() })
        });
        let all: Vec<Bytes> = futures_util::future::join_all(readers)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap())
            .collect();
        assert_eq!(
            opens.load(Ordering::SeqCst),
            1,
            "the file was mapped more than once"
        );
        assert!(all.iter().all(|b| b.as_ptr() == all[0].as_ptr()));
        assert_eq!(all[0].len(), 3 * 1024 * 1024);
    }

    #[tokio::test]
    async fn a_mapping_in_use_is_shared_even_when_too_large_to_keep() {
        // A 1 KiB budget keeps nothing; the mapping is still shared while a reader holds it.
        let file = blob_file(256 * 1024);
        let mappings = Mappings::new(1024);
        let digest = Digest::of(b"big");
        let opens = Arc::new(AtomicUsize::new(0));
        let first = mappings
            .get_or_map(&digest, opener(file.path().to_owned(), &opens))
            .await
            .unwrap()
            .unwrap();
        settle(&mappings);
        let second = mappings
            .get_or_map(&digest, opener(file.path().to_owned(), &opens))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr());
        assert_eq!(opens.load(Ordering::SeqCst), 1);

        // Once every reader let go (and nothing keeps it), the mapping is gone.
        drop((first, second));
        mappings.recent.invalidate(&digest);
        assert!(
            settle_until(&mappings, |m| m.live_count() == 0),
            "{} mappings still open",
            mappings.live_count()
        );
        let third = mappings
            .get_or_map(&digest, opener(file.path().to_owned(), &opens))
            .await
            .unwrap();
        assert!(third.is_some());
        assert_eq!(opens.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn kept_mappings_are_bounded_in_bytes() {
        let files: Vec<_> = (0..8).map(|_| blob_file(512 * 1024)).collect();
        // Room for 2 MiB of idle mappings: 4 of the 8 at most.
        let mappings = Mappings::new(2 << 20);
        let opens = Arc::new(AtomicUsize::new(0));
        for (i, file) in files.iter().enumerate() {
            let digest = Digest::of(&[i as u8]);
            let bytes = mappings
                .get_or_map(&digest, opener(file.path().to_owned(), &opens))
                .await
                .unwrap();
            drop(bytes);
        }
        let within = |m: &Mappings| {
            m.recent.weighted_size() <= 2048 && m.recent.entry_count() <= 4 && m.live_count() <= 4
        };
        assert!(
            settle_until(&mappings, within),
            "{} KiB in {} kept mappings, {} open",
            mappings.recent.weighted_size(),
            mappings.recent.entry_count(),
            mappings.live_count()
        );
    }

    #[tokio::test]
    async fn a_missing_file_is_none_and_not_remembered() {
        let mappings = Mappings::new(1 << 20);
        let digest = Digest::of(b"gone");
        let none = mappings.get_or_map(&digest, || Ok(None)).await.unwrap();
        assert!(none.is_none());
        assert_eq!(mappings.live_count(), 0);
    }
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures_util::TryStreamExt;

use super::*;
use crate::storage::index::BlobRecord;
use crate::storage::shared::blobs::PART_SIZE;
use crate::storage::shared::in_memory;

#[derive(Default)]
pub(crate) struct Counted {
    pub planned: AtomicU64,
    pub sent: AtomicU64,
    pub skipped: AtomicU64,
    pub warnings: Mutex<Vec<String>>,
}

impl Progress for Counted {
    fn planned(&self, _blobs: u64, bytes: u64) {
        self.planned.store(bytes, Ordering::Relaxed);
    }
    fn sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }
    fn skipped(&self, bytes: u64) {
        self.skipped.fetch_add(bytes, Ordering::Relaxed);
    }
    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_owned());
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn put(storage: &Storage, data: &[u8]) -> Digest {
    let digest = Digest::of(data);
    storage.blobs.write_verified(&digest, data).unwrap();
    storage
        .index
        .put_blob(&digest, &BlobRecord::new(data.len() as u64, None))
        .unwrap();
    digest
}

/// Indexes `claimed` but leaves a file with other bytes at its path (bit rot, a bad disk).
fn put_rotten(storage: &Storage, claimed: &[u8], on_disk: &[u8]) -> Digest {
    let digest = Digest::of(claimed);
    let path = storage.blobs.path(&digest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, on_disk).unwrap();
    storage
        .index
        .put_blob(&digest, &BlobRecord::new(claimed.len() as u64, None))
        .unwrap();
    digest
}

async fn stored(store: &SharedStore, digest: &Digest) -> Option<Vec<u8>> {
    let blob = store.blob(digest, None).await.unwrap()?;
    let chunks: Vec<bytes::Bytes> = blob.body.try_collect().await.unwrap();
    Some(chunks.concat())
}

/// Good blobs (one in a single PUT, one in multipart parts) are copied byte for byte; a file
/// that no longer matches its digest (small, or found out only after parts were sent) or is
/// gone is reported and never becomes visible; a rerun sends nothing; a blob lost from the
/// store (a run cut short) is sent again, and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_verified_blobs_skips_corrupt_ones_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::open(dir.path()).unwrap());
    let small = data(1000, 1);
    let large = data(PART_SIZE * 2 + 777, 2);
    let small_digest = put(&storage, &small);
    let large_digest = put(&storage, &large);
    let mut flipped = data(PART_SIZE + 10, 3);
    let rotten_large = put_rotten(&storage, &data(PART_SIZE + 10, 3), &{
        flipped[PART_SIZE + 5] ^= 1;
        flipped
    });
    let rotten_small = put_rotten(&storage, b"what the index says", b"what the disk says!");
    let truncated = put_rotten(&storage, b"a longer blob than its file", b"a longer");
    let gone = put(&storage, b"a file deleted behind berth's back");
    std::fs::remove_file(storage.blobs.path(&gone)).unwrap();

    let store = in_memory();
    let progress = Counted::default();
    let report = copy_blobs(Arc::clone(&storage), &store, &progress)
        .await
        .unwrap();
    assert_eq!((report.copied, report.skipped, report.corrupt), (2, 0, 4));
    assert_eq!(report.bytes_copied, (small.len() + large.len()) as u64);
    let bad: HashSet<Digest> = [&rotten_large, &rotten_small, &truncated, &gone]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(report.not_copied, bad);
    assert_eq!(stored(&store, &small_digest).await.unwrap(), small);
    assert_eq!(stored(&store, &large_digest).await.unwrap(), large);
    for digest in &bad {
        assert_eq!(store.blob_size(digest).await.unwrap(), None, "{digest}");
    }
    let warnings = progress.warnings.lock().unwrap().join("\n");
    assert!(
        warnings.contains(&format!("{rotten_small} not copied: its file hashes to")),
        "{warnings}"
    );
    assert!(warnings.contains(&format!("{truncated} not copied: its file has 8 bytes")));
    assert!(warnings.contains(&format!("{gone} not copied: cannot open its file")));

    // Everything again: nothing sent.
    let again = Counted::default();
    let report = copy_blobs(Arc::clone(&storage), &store, &again)
        .await
        .unwrap();
    assert_eq!((report.copied, report.skipped, report.corrupt), (0, 2, 4));
    assert_eq!(
        again.skipped.load(Ordering::Relaxed),
        report_bytes(&[&small, &large])
    );

    // A run cut short: the large blob never made it (or only part of it: the wrong size).
    store
        .put(
            &blob_name(&large_digest),
            bytes::Bytes::from_static(b"part"),
        )
        .await
        .unwrap();
    let resumed = Counted::default();
    let report = copy_blobs(Arc::clone(&storage), &store, &resumed)
        .await
        .unwrap();
    assert_eq!((report.copied, report.skipped), (1, 1));
    assert_eq!(report.bytes_copied, large.len() as u64);
    assert_eq!(stored(&store, &large_digest).await.unwrap(), large);
}

fn report_bytes(blobs: &[&Vec<u8>]) -> u64 {
    blobs.iter().map(|b| b.len() as u64).sum()
}

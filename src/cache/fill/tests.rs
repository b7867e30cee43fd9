use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tempfile::NamedTempFile;

use super::reader::read_cached_at;
use super::*;

/// Runs a fill of `data`, arriving in chunks of `chunk` bytes, into a temp file in `dir`;
/// the commit fsyncs it and keeps it as `dir/blob`. The fill and the bytes it wrote.
async fn fill_from(data: &[u8], chunk: usize, dir: &std::path::Path) -> (Arc<Fill>, u64) {
    let temp = NamedTempFile::new_in(dir).unwrap();
    let (fill, writer) = Fill::new(Digest::of(data), temp).unwrap();
    let chunks: Vec<Result<Bytes, SourceError>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let response = FillSource {
        content_length: Some(data.len() as u64),
        body: futures_util::stream::iter(chunks).boxed(),
    };
    let kept = dir.join("blob");
    let written = writer
        .run(Ok(response), move |temp, _| {
            temp.as_file().sync_all()?;
            temp.persist(kept).map(|_| ()).map_err(|e| e.error.into())
        })
        .await
        .expect("the fill verifies");
    (fill, written)
}

/// Every chunk a new reader from `start` hands out, each kept to the end.
async fn read_all(fill: &Arc<Fill>, start: u64) -> Vec<Bytes> {
    fill.reader(start, None)
        .into_stream()
        .map(Result::unwrap)
        .collect()
        .await
}

/// A reader arriving after the fill has moved past what is kept in memory reads the
/// start back from the temp file, chunk after chunk through its one buffer.
#[tokio::test]
async fn a_late_reader_gets_every_byte_back_from_the_file() {
    let data: Vec<u8> = (0..3 * RECENT_BYTES + 12_345)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (fill, written) = fill_from(&data, 100_000, dir.path()).await;
    assert_eq!(written, data.len() as u64);
    assert_eq!(
        fill.recent_slice(0, 1),
        None,
        "the start is no longer in memory"
    );

    // Every chunk is held to the end: a reused buffer must never change one handed out.
    let chunks = read_all(&fill, 0).await;
    assert!(chunks.len() > 3 * RECENT_BYTES / READ_CHUNK as usize);
    assert!(chunks.concat() == data, "the late reader got other bytes");
}

/// A reader far enough behind that the kernel has dropped its bytes from the page cache
/// cannot read them without blocking: it reads them on a blocking thread instead, and gets
/// the same bytes.
#[tokio::test]
async fn a_reader_reads_bytes_gone_from_the_page_cache_on_a_blocking_thread() {
    let data: Vec<u8> = (0..RECENT_BYTES + 3 * READ_CHUNK as usize + 99)
        .map(|i| (i * 13 % 241) as u8)
        .collect();
    // A disk-backed directory: on tmpfs the pages could never leave memory.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let (fill, _) = fill_from(&data, data.len(), dir.path()).await;
    // One chunk was written: drop it from memory too, so every byte comes from the file.
    fill.recent.lock().unwrap().chunks.clear();
    // Dirty pages are not dropped: write them back first (under load they may not be yet).
    // The kernel may keep a page a moment longer (writeback still ending, readahead): ask
    // again until it is gone.
    let mut probe = vec![0; 4096];
    let mut dropped = false;
    for _ in 0..100 {
        fill.temp.sync_data().unwrap();
        rustix::fs::fadvise(&*fill.temp, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        if read_cached_at(&fill.temp, &mut probe, 0).is_none() {
            dropped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(dropped, "the kernel still had the page cached");

    let body = read_all(&fill, 5).await.concat();
    assert!(body == data[5..], "the reader got other bytes");
}

/// Upstream chunks can be tiny: a batch then holds more chunks than one `writev` takes
/// (IOV_MAX, 1024), and the rest must follow in order.
#[tokio::test]
async fn a_batch_of_more_chunks_than_one_writev_takes_is_written_whole() {
    let data: Vec<u8> = (0..2 * WRITE_BLOCK + 777)
        .map(|i| (i % 253) as u8)
        .collect();
    // Batches of well over 1024 chunks.
    const { assert!(WRITE_BLOCK / 100 > 2 * 1024) };
    let dir = tempfile::tempdir().unwrap();
    // The fill verifies only if every byte was written, in order.
    let (fill, _) = fill_from(&data, 100, dir.path()).await;
    assert!(std::fs::read(dir.path().join("blob")).unwrap() == data);
    assert!(read_all(&fill, 0).await.concat() == data);
}

/// A wait for verification ends with the blob's size once the last byte is checked, with
/// the failure when the digest is wrong, and as stalled when nothing arrives.
#[tokio::test]
async fn verified_waits_for_the_digest_check() {
    let data: Vec<u8> = (0..3 * WRITE_BLOCK).map(|i| (i % 249) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let stall = std::time::Duration::from_secs(5);
    let (fill, written) = fill_from(&data, 4096, dir.path()).await;
    assert_eq!(fill.verified(stall).await.unwrap(), written);

    let temp = NamedTempFile::new_in(dir.path()).unwrap();
    let (fill, writer) = Fill::new(Digest::of(b"something else"), temp).unwrap();
    let waiting = tokio::spawn({
        let fill = Arc::clone(&fill);
        async move { fill.verified(stall).await }
    });
    let response = FillSource {
        content_length: Some(data.len() as u64),
        body: futures_util::stream::iter(vec![Ok(Bytes::from(data))]).boxed(),
    };
    assert!(writer.run(Ok(response), |_, _| Ok(())).await.is_err());
    assert!(matches!(
        waiting.await.unwrap(),
        Err(NotVerified::Failed(e)) if matches!(*e, FillError::DigestMismatch { .. })
    ));

    let temp = NamedTempFile::new_in(dir.path()).unwrap();
    let (fill, _writer) = Fill::new(Digest::of(b"never"), temp).unwrap();
    let short = std::time::Duration::from_millis(50);
    assert!(matches!(
        fill.verified(short).await,
        Err(NotVerified::Stalled(_))
    ));
}

#[test]
fn recent_chunks_serve_slices_up_to_the_limit_and_forget_the_oldest() {
    let temp = NamedTempFile::new().unwrap();
    let (fill, _writer) = Fill::new(Digest::of(b"x"), temp).unwrap();
    let chunk = |byte: u8, len: usize| Bytes::from(vec![byte; len]);
    fill.keep_recent(0, chunk(1, 100));
    fill.keep_recent(100, chunk(2, 50));
    assert_eq!(fill.recent_slice(10, 1000), Some(chunk(1, 90)));
    assert_eq!(fill.recent_slice(120, 140), Some(chunk(2, 20)));
    assert_eq!(fill.recent_slice(149, 149), None, "nothing up to the limit");
    assert_eq!(fill.recent_slice(150, 1000), None, "not written yet");

    // Past RECENT_BYTES the oldest chunks go; reading them falls back to the file.
    fill.keep_recent(150, chunk(3, RECENT_BYTES));
    assert_eq!(fill.recent_slice(0, 1000), None);
    assert_eq!(fill.recent_slice(150, 151), Some(chunk(3, 1)));
}

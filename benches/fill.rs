//! The cold path's tee on its own: one upstream body, held in memory and handed over in 64 KiB
//! chunks as an HTTP client would, streamed through a [`Fill`] into a temp file on disk while
//! 0, 1 or 8 readers drain it. Beside it, what sha256 alone and writing the file alone cost,
//! the two things a verifying tee cannot skip. CPU time covers every thread of the process, so
//! the numbers are berth's cost per GiB without a client or an upstream sharing the CPUs.
//!
//! Readers count the bytes they get and drop them: sending them to a client (and actix's copy
//! into its write buffer) is not measured. The commit renames the verified file without fsync,
//! which would time the disk.
//!
//! `cargo bench --bench fill`; `FILL_MIB` (default 256), `FILL_CHUNK_KIB` (default 64) and
//! `ROUNDS` (default 5, the median is reported) set the size, the chunks and the repetitions.

use std::time::{Duration, Instant};

use berth::cache::fill::{Fill, FillSource, SourceError};
use berth::oci::Digest;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::Digest as _;
use tempfile::NamedTempFile;

// The tests' image generator, for its deterministic incompressible bytes.
#[allow(dead_code)]
#[path = "../tests/common/images.rs"]
mod images;

fn main() {
    let mib = env_number("FILL_MIB", 256);
    let rounds = env_number("ROUNDS", 5).max(1);
    let chunk = env_number("FILL_CHUNK_KIB", 64).max(1) * 1024;
    let data = Bytes::from(images::random_bytes(1, mib * 1024 * 1024));
    let digest = Digest::of(&data);
    // A disk-backed directory next to the build, not a tmpfs /tmp.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&base).expect("create target/");
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    println!(
        "# fill bench: {mib} MiB in {} KiB chunks, median of {rounds} rounds, 2 runtime workers",
        chunk / 1024
    );
    println!(
        "{:<22} {:>9} {:>10} {:>14}",
        "case", "wall (s)", "MB/s", "CPU ms per GiB"
    );
    let cases = [
        ("sha256 only", Case::Hash),
        ("write file only", Case::Write),
        ("fill, no reader", Case::Fill(0)),
        ("fill, 1 reader", Case::Fill(1)),
        ("fill, 8 readers", Case::Fill(8)),
    ];
    for (name, case) in cases {
        let mut samples: Vec<(Duration, Duration)> = (0..rounds)
            .map(|_| {
                measure(|| match case {
                    Case::Hash => hash_only(&data, chunk),
                    Case::Write => write_only(&data, chunk, dir.path()),
                    Case::Fill(readers) => {
                        runtime.block_on(fill(&data, chunk, &digest, readers, dir.path()))
                    }
                })
            })
            .collect();
        samples.sort();
        let (wall, cpu) = samples[samples.len() / 2];
        let bytes = data.len() as f64;
        println!(
            "{name:<22} {:>9.3} {:>10.0} {:>14.0}",
            wall.as_secs_f64(),
            bytes / wall.as_secs_f64() / 1e6,
            cpu.as_secs_f64() * 1e3 * (1u64 << 30) as f64 / bytes,
        );
    }
}

#[derive(Clone, Copy)]
enum Case {
    Hash,
    Write,
    /// A fill with this many readers.
    Fill(usize),
}

/// Wall time and process CPU time (all threads) of `work`.
fn measure(work: impl FnOnce()) -> (Duration, Duration) {
    let (cpu0, wall0) = (process_cpu(), Instant::now());
    work();
    (wall0.elapsed(), process_cpu().saturating_sub(cpu0))
}

fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn hash_only(data: &Bytes, chunk: usize) {
    let mut hasher = sha2::Sha256::new();
    for piece in data.chunks(chunk) {
        hasher.update(piece);
    }
    std::hint::black_box(hasher.finalize());
}

fn write_only(data: &Bytes, chunk: usize, dir: &std::path::Path) {
    use std::io::Write;
    let mut temp = NamedTempFile::new_in(dir).expect("temp file");
    for piece in data.chunks(chunk) {
        temp.write_all(piece).expect("write");
    }
}

async fn fill(data: &Bytes, chunk: usize, digest: &Digest, readers: usize, dir: &std::path::Path) {
    let temp = NamedTempFile::new_in(dir).expect("temp file");
    let (fill, writer) = Fill::new(digest.clone(), temp).expect("fill");
    let readers: Vec<_> = (0..readers)
        .map(|_| {
            let stream = fill.reader(0, None).into_stream();
            tokio::spawn(stream.fold(0usize, |n, chunk| async move {
                n + chunk.expect("reader failed").len()
            }))
        })
        .collect();
    let chunks: Vec<Result<Bytes, SourceError>> = (0..data.len())
        .step_by(chunk)
        .map(|at| Ok(data.slice(at..(at + chunk).min(data.len()))))
        .collect();
    let source = FillSource {
        content_length: Some(data.len() as u64),
        body: futures_util::stream::iter(chunks).boxed(),
    };
    let kept = dir.join("blob");
    writer
        .run(Ok(source), move |temp, _| {
            temp.persist(kept).map(|_| ()).map_err(|e| e.error.into())
        })
        .await
        .expect("the fill failed");
    for reader in readers {
        let got = reader.await.expect("reader task");
        assert_eq!(got, data.len(), "a reader got a short body");
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

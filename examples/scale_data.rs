//! Builds a berth data directory of many blobs for `bench/scale.sh`, through berth's own
//! storage API but without the HTTP path (a million pushes would take hours): each blob file is
//! written in place (no fsync: the benchmark syncs once at the end) and indexed and linked to a
//! mirrored repository as a fill would, with last-access stamps one millisecond apart so that
//! the LRU order is the order of creation.
//!
//! `cargo run --release --example scale_data -- DATA_DIR SMALL LARGE LARGE_MIB`
//!
//! Small blob `i` holds `berth scale blob <i>` padded to 200 bytes (`bench/scale.sh` recomputes
//! digests from that). Also stores one image manifest (config: small blob 0, layer: large blob
//! 0) and prints, one per line: `manifest <digest>`, `large <digest>`, `small <digest>` for a
//! sample of small blobs, which the benchmark requests.

use std::io::Write;
use std::path::PathBuf;

use berth::oci::{Digest, RepoName};
use berth::storage::index::BlobRecord;
use berth::storage::Storage;

const UPSTREAM: &str = "docker.io";
const REPO: &str = "library/scale";
const SMALL_BYTES: usize = 200;
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn small_blob(i: u64) -> Vec<u8> {
    let mut data = format!("berth scale blob {i}").into_bytes();
    data.resize(SMALL_BYTES, b'.');
    data
}

/// Pseudo-random bytes (xorshift), so large blobs do not compress or dedupe.
fn large_blob(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, small, large, large_mib] = args.as_slice() else {
        return Err("usage: scale_data DATA_DIR SMALL LARGE LARGE_MIB".into());
    };
    let (small, large, large_mib): (u64, u64, usize) =
        (small.parse()?, large.parse()?, large_mib.parse()?);
    let storage = Storage::open(&PathBuf::from(dir))?;
    let repo: RepoName = REPO.parse()?;
    let start_ms = berth::storage::index::now_ms() - small - large - 10_000;
    let out = std::io::stdout();
    let mut out = out.lock();
    let store = |data: &[u8],
                 stamp: u64,
                 media_type: Option<&str>|
     -> Result<Digest, Box<dyn std::error::Error>> {
        let digest = Digest::of(data);
        let path = storage.blobs.path(&digest);
        if let Some(shard) = path.parent() {
            std::fs::create_dir_all(shard)?;
        }
        std::fs::write(&path, data)?;
        let mut record = BlobRecord::new(data.len() as u64, media_type.map(str::to_owned));
        record.last_access_ms = stamp;
        storage.index.put_blob(&digest, &record)?;
        storage
            .index
            .link(UPSTREAM, &repo, &digest, media_type.unwrap_or(""))?;
        Ok(digest)
    };
    let sample_every = (small / 2000).max(1);
    let mut config = None;
    for i in 0..small {
        let digest = store(&small_blob(i), start_ms + i, None)?;
        if i == 0 {
            config = Some(digest.clone());
        }
        if i % sample_every == 0 {
            writeln!(out, "small {digest}")?;
        }
        if i % 100_000 == 99_999 {
            eprintln!("scale_data: {} small blobs", i + 1);
        }
    }
    let mut layer = None;
    for j in 0..large {
        let data = large_blob(j + 1, large_mib << 20);
        let digest = store(&data, start_ms + small + j, None)?;
        writeln!(out, "large {digest}")?;
        layer.get_or_insert((digest, data.len()));
    }
    if let (Some(config), Some((layer, layer_len))) = (config, layer) {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{SMALL_BYTES}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_len}}}]}}"#
        );
        let stamp = start_ms + small + large;
        let digest = store(manifest.as_bytes(), stamp, Some(MANIFEST_TYPE))?;
        writeln!(out, "manifest {digest}")?;
    }
    storage.index.flush()?;
    Ok(())
}

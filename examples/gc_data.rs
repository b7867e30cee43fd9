//! Builds a berth data directory for `bench/gc.sh`, through berth's own storage API (the
//! index entries, repository links, tag records and files a push or a pull would leave): MANIFESTS
//! image manifests, each with a config and four layers of its own (BLOBS = 5 × MANIFESTS small
//! blobs), half of them garbage, all last used an hour ago:
//!
//! - a quarter pushed to the public project `bench` (repositories `bench/app<k>`), tagged;
//! - a quarter pushed there too, then deleted by digest (their blobs still linked: garbage);
//! - a quarter cached from the mirror (`library/app<k>`), tagged;
//! - a quarter cached from the mirror by digest only, older than the grace period (garbage).
//!
//! `cargo run --release --example gc_data -- DATA_DIR MANIFESTS`
//!
//! Prints the tags the load generator requests, one per line: `<repository> <tag>`; then on
//! stderr the expected garbage (manifests, blobs, bytes).

use std::io::Write;
use std::path::PathBuf;

use berth::oci::{Digest, RepoName, Tag};
use berth::storage::index::{BlobRecord, PushedManifest, TagRecord};
use berth::storage::Storage;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const REPOS: u64 = 50;
const BLOB_BYTES: usize = 300;
const HOUR_MS: u64 = 3_600_000;

fn blob(i: u64, j: u64) -> Vec<u8> {
    let mut data = format!("berth gc bench image {i} blob {j}").into_bytes();
    data.resize(BLOB_BYTES, b'.');
    data
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, manifests] = args.as_slice() else {
        return Err("usage: gc_data DATA_DIR MANIFESTS".into());
    };
    let manifests: u64 = manifests.parse()?;
    let storage = Storage::open(&PathBuf::from(dir))?;
    let old = berth::storage::index::now_ms() - HOUR_MS;
    let out = std::io::stdout();
    let mut out = out.lock();
    let write = |data: &[u8],
                 media_type: Option<&str>|
     -> Result<(Digest, BlobRecord), Box<dyn std::error::Error>> {
        let digest = Digest::of(data);
        let path = storage.blobs.path(&digest);
        if let Some(shard) = path.parent() {
            std::fs::create_dir_all(shard)?;
        }
        std::fs::write(&path, data)?;
        let mut record = BlobRecord::new(data.len() as u64, media_type.map(str::to_owned));
        record.last_access_ms = old;
        Ok((digest, record))
    };
    let (mut garbage_manifests, mut garbage_blobs, mut garbage_bytes) = (0u64, 0u64, 0u64);
    for i in 0..manifests {
        let kind = i % 4;
        let private = kind < 2;
        let repo: RepoName = match private {
            true => format!("bench/app{}", i % REPOS),
            false => format!("library/app{}", i % REPOS),
        }
        .parse()?;
        let mut descriptors = Vec::new();
        for j in 0..5 {
            let data = blob(i, j);
            let (digest, record) = write(&data, None)?;
            match private {
                true => {
                    storage.index.put_private_blob(&repo, &digest, &record)?;
                    storage.index.age_link(&repo, &digest, old)?;
                }
                false => storage.index.put_blob(&digest, &record)?,
            }
            descriptors.push(format!(
                r#"{{"mediaType":"application/octet-stream","digest":"{digest}","size":{BLOB_BYTES}}}"#
            ));
        }
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{},"layers":[{}]}}"#,
            descriptors[0],
            descriptors[1..].join(",")
        );
        let (digest, record) = write(body.as_bytes(), Some(MANIFEST_TYPE))?;
        let tag: Tag = format!("v{i}").parse()?;
        match kind {
            0 | 1 => {
                let pushed = PushedManifest {
                    repo: &repo,
                    digest: &digest,
                    media_type: MANIFEST_TYPE,
                    size: body.len() as u64,
                    tag: Some(&tag),
                    referrer: None,
                };
                storage.index.put_private_manifest(&pushed, &record)?;
                if kind == 1 {
                    storage.index.remove_repo_manifest(&repo, &digest)?;
                }
            }
            _ => {
                storage.index.put_blob(&digest, &record)?;
                if kind == 2 {
                    let cached = TagRecord {
                        digest: digest.clone(),
                        media_type: MANIFEST_TYPE.into(),
                        checked_at_ms: berth::storage::index::now_ms(),
                    };
                    storage.index.put_tag("docker.io", &repo, &tag, &cached)?;
                }
            }
        }
        if kind == 1 || kind == 3 {
            garbage_manifests += 1;
            garbage_blobs += 5;
            garbage_bytes += body.len() as u64 + 5 * BLOB_BYTES as u64;
        } else {
            writeln!(out, "{repo} {tag}")?;
        }
    }
    storage.index.flush()?;
    eprintln!(
        "garbage: {garbage_manifests} manifests, {garbage_blobs} blobs, {garbage_bytes} bytes"
    );
    Ok(())
}

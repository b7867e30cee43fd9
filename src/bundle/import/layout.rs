//! Reading an OCI image layout: `oci-layout`, `index.json` and `blobs/sha256/<hex>`, from a
//! directory or from a tar of one.
//!
//! A tar is read once, header by header (seeking past the data), to learn where each blob's
//! bytes start; blobs are then read in place, in whatever order the plan needs them, as from
//! a directory. Nothing of a layer is held in memory. A tar cut short shows as a blob that
//! ends past the end of the file, or one that is not there at all.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::plan::BlobSource;
use super::verify::Check;
use super::BundleError;
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::Digest;

/// `index.json` is an index: bounded like one.
const MAX_INDEX_BYTES: u64 = MAX_MANIFEST_BYTES as u64;

/// An opened bundle.
pub struct Bundle {
    kind: Kind,
    index_json: Vec<u8>,
    blobs: HashMap<Digest, Entry>,
}

enum Kind {
    Dir(PathBuf),
    Tar(PathBuf),
}

/// Where a blob's bytes are: at `offset` of the tar, or the whole file of a directory.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    size: u64,
}

impl Bundle {
    /// Opens a layout directory, or a tar of one. Blocks.
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| BundleError::layout(format!("cannot open {}: {e}", path.display())))?;
        if meta.is_dir() {
            open_dir(path)
        } else {
            open_tar(path, meta.len())
        }
    }

    pub fn index_json(&self) -> &[u8] {
        &self.index_json
    }

    /// The blob's bytes as they are in the bundle (unchecked: see [`super::verify`]).
    pub fn reader(&self, digest: &Digest) -> Result<(impl Read, u64), BundleError> {
        let entry = self
            .blobs
            .get(digest)
            .ok_or_else(|| BundleError::blob(digest, "is not in the bundle"))?;
        let (path, offset) = match &self.kind {
            Kind::Dir(dir) => (blob_path(dir, digest), 0),
            Kind::Tar(tar) => (tar.clone(), entry.offset),
        };
        let mut file = File::open(&path).map_err(|e| BundleError::read(digest, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| BundleError::read(digest, e))?;
        Ok((file.take(entry.size), entry.size))
    }
}

impl BlobSource for Bundle {
    fn size(&self, digest: &Digest) -> Option<u64> {
        self.blobs.get(digest).map(|e| e.size)
    }

    fn read_manifest(&self, digest: &Digest) -> Result<Vec<u8>, BundleError> {
        let (mut reader, size) = self.reader(digest)?;
        if size > MAX_MANIFEST_BYTES as u64 {
            return Err(BundleError::blob(
                digest,
                format!("is named as a manifest but holds {size} bytes"),
            ));
        }
        let mut body = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut body)
            .map_err(|e| BundleError::read(digest, e))?;
        let mut check = Check::default();
        check.update(&body);
        check.finish(digest, size)?;
        Ok(body)
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// `blobs/sha256/<hex>` → the digest; another algorithm is refused, other paths are `None`.
fn blob_name(path: &str) -> Result<Option<Digest>, BundleError> {
    let path = path.trim_start_matches("./");
    let Some(rest) = path.strip_prefix("blobs/") else {
        return Ok(None);
    };
    let Some((algorithm, hex)) = rest.split_once('/') else {
        return Ok(None);
    };
    if hex.is_empty() {
        return Ok(None);
    }
    if algorithm != "sha256" {
        return Err(BundleError::layout(format!(
            "blob {path}: only sha256 digests are supported"
        )));
    }
    format!("sha256:{hex}")
        .parse()
        .map(Some)
        .map_err(|_| BundleError::layout(format!("{path} is not named by a sha256 digest")))
}

fn layout_error(path: &Path, e: impl std::fmt::Display) -> BundleError {
    BundleError::layout(format!("{}: {e}", path.display()))
}

fn open_dir(dir: &Path) -> Result<Bundle, BundleError> {
    check_layout_file(
        &std::fs::read(dir.join("oci-layout"))
            .map_err(|e| layout_error(dir, format!("not an OCI image layout (oci-layout: {e})")))?,
    )?;
    let index_json = read_bounded(&dir.join("index.json"))?;
    let mut blobs = HashMap::new();
    let sha256 = dir.join("blobs").join("sha256");
    let listing = std::fs::read_dir(&sha256).map_err(|e| layout_error(&sha256, e))?;
    for item in listing {
        let item = item.map_err(|e| layout_error(&sha256, e))?;
        let name = format!("blobs/sha256/{}", item.file_name().to_string_lossy());
        if let Some(digest) = blob_name(&name)? {
            let size = item.metadata().map_err(|e| layout_error(&sha256, e))?.len();
            blobs.insert(digest, Entry { offset: 0, size });
        }
    }
    Ok(Bundle {
        kind: Kind::Dir(dir.to_owned()),
        index_json,
        blobs,
    })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, BundleError> {
    let file = File::open(path).map_err(|e| layout_error(path, e))?;
    let mut body = Vec::new();
    file.take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| layout_error(path, e))?;
    if body.len() as u64 > MAX_INDEX_BYTES {
        return Err(layout_error(path, "too large for an index"));
    }
    Ok(body)
}

fn check_layout_file(body: &[u8]) -> Result<(), BundleError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| BundleError::layout(format!("oci-layout is not JSON: {e}")))?;
    match value["imageLayoutVersion"].as_str() {
        Some(version) if version.starts_with("1.") => Ok(()),
        other => Err(BundleError::layout(format!(
            "oci-layout: unsupported imageLayoutVersion {other:?}"
        ))),
    }
}

fn open_tar(path: &Path, length: u64) -> Result<Bundle, BundleError> {
    let not_tar = |e: io::Error| {
        layout_error(
            path,
            format!("not a readable tar of an OCI image layout (cut short?): {e}"),
        )
    };
    let file = File::open(path).map_err(|e| layout_error(path, e))?;
    let mut archive = tar::Archive::new(file);
    let mut index_json = None;
    let mut layout = None;
    let mut blobs = HashMap::new();
    for entry in archive.entries_with_seek().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(not_tar)?
            .to_string_lossy()
            .into_owned();
        let (offset, size) = (entry.raw_file_position(), entry.size());
        let name = name.trim_start_matches("./");
        let digest = blob_name(name)?;
        if offset + size > length {
            return Err(match digest {
                Some(digest) => BundleError::blob(
                    &digest,
                    format!(
                        "is truncated: the bundle ends {} bytes into its {size}",
                        length.saturating_sub(offset)
                    ),
                ),
                None => layout_error(path, format!("{name} is cut short")),
            });
        }
        match (name, digest) {
            (_, Some(digest)) => {
                blobs.insert(digest, Entry { offset, size });
            }
            ("index.json" | "oci-layout", None) if size <= MAX_INDEX_BYTES => {
                let mut body = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut body).map_err(not_tar)?;
                match name {
                    "index.json" => index_json = Some(body),
                    _ => layout = Some(body),
                }
            }
            _ => {}
        }
    }
    check_layout_file(
        &layout.ok_or_else(|| layout_error(path, "no oci-layout file: not an OCI image layout"))?,
    )?;
    Ok(Bundle {
        kind: Kind::Tar(path.to_owned()),
        index_json: index_json.ok_or_else(|| layout_error(path, "no index.json"))?,
        blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names() {
        let hex = "a".repeat(64);
        let digest: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(
            blob_name(&format!("./blobs/sha256/{hex}")).unwrap(),
            Some(digest)
        );
        assert_eq!(blob_name("blobs/sha256/").unwrap(), None);
        assert_eq!(blob_name("index.json").unwrap(), None);
        assert!(blob_name("blobs/sha256/xyz").is_err());
        assert!(blob_name(&format!("blobs/sha512/{hex}")).is_err());
    }

    /// A tar cut inside a blob names that blob.
    #[test]
    fn a_truncated_tar_names_the_blob_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 4096];
        let digest = Digest::of(&data);
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |name: &str, body: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, body).unwrap();
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", br#"{"schemaVersion":2,"manifests":[]}"#);
        add(&format!("blobs/sha256/{}", digest.hex()), &data);
        let tar = builder.into_inner().unwrap();
        let path = dir.path().join("b.tar");

        std::fs::write(&path, &tar).unwrap();
        let bundle = Bundle::open(&path).unwrap();
        assert_eq!(bundle.size(&digest), Some(4096));

        std::fs::write(&path, &tar[..3000]).unwrap();
        let error = Bundle::open(&path).err().unwrap().to_string();
        assert!(error.contains(&digest.to_string()), "{error}");
        assert!(error.contains("truncated"), "{error}");
    }
}

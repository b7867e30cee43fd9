//! Content-addressed blob files on the local filesystem.
//!
//! ```text
//! <data_dir>/blobs/sha256/ab/abcdef…   immutable, verified before they get here
//! <data_dir>/tmp/                      in-flight writes; anything here at startup is garbage
//! ```
//! A blob reaches `blobs/` only by rename of a fully written, fsynced temp file, so a reader
//! never sees a partial blob. Files are never truncated or rewritten in place, which is what
//! makes serving them from a memory map safe; removal is an unlink.
//! Every method here blocks: call them from `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use tempfile::NamedTempFile;

use crate::registry::name::Digest;

pub struct BlobStore {
    blobs_dir: PathBuf,
    tmp_dir: PathBuf,
}

impl BlobStore {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let store = BlobStore {
            blobs_dir: data_dir.join("blobs").join("sha256"),
            tmp_dir: data_dir.join("tmp"),
        };
        fs::create_dir_all(&store.blobs_dir)?;
        fs::create_dir_all(&store.tmp_dir)?;
        Ok(store)
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir.join(&hex[..2]).join(hex)
    }

    /// A new temp file in `tmp/`, deleted when dropped unless committed.
    pub fn temp_file(&self) -> io::Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp_dir)
    }

    /// Makes a fully written and verified temp file the blob `digest`: fsync, rename, fsync the
    /// directory. If the blob already exists the temp file is simply dropped.
    pub fn commit(&self, temp: NamedTempFile, digest: &Digest) -> io::Result<()> {
        temp.as_file().sync_all()?;
        let target = self.path(digest);
        let shard = target
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        fs::create_dir_all(shard)?;
        temp.persist(&target).map_err(|e| e.error)?;
        File::open(shard)?.sync_all()?;
        Ok(())
    }

    /// Writes a small blob (a manifest) whose digest the caller has verified.
    pub fn write_verified(&self, digest: &Digest, data: &[u8]) -> io::Result<()> {
        let mut temp = self.temp_file()?;
        temp.write_all(data)?;
        self.commit(temp, digest)
    }

    /// Opens a stored blob with its length, or `None` when there is no such file.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<Option<(File, u64)>> {
        match File::open(self.path(digest)) {
            Ok(file) => {
                let len = file.metadata()?.len();
                Ok(Some((file, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn read_small(&self, digest: &Digest, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Some((file, len)) = self.open_blob(digest)? else {
            return Ok(None);
        };
        if len > limit {
            return Err(io::Error::other(format!(
                "{digest} is {len} bytes, more than {limit}"
            )));
        }
        let mut data = Vec::with_capacity(len as usize);
        file.take(limit).read_to_end(&mut data)?;
        Ok(Some(data))
    }

    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes everything left in `tmp/` by a previous run; returns how many entries went.
    pub fn sweep_tmp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp_dir)? {
            let path = entry?.path();
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match result {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Every file under `blobs/`, with what its name says its digest is (`None` for a stray
    /// file whose name is not a digest).
    pub fn list(&self) -> io::Result<Vec<(PathBuf, Option<Digest>)>> {
        let mut found = Vec::new();
        for shard in fs::read_dir(&self.blobs_dir)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                found.push((shard, None));
                continue;
            }
            for entry in fs::read_dir(&shard)? {
                let path = entry?.path();
                let digest = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
                    .filter(|d| shard.file_name().and_then(|s| s.to_str()) == Some(&d.hex()[..2]));
                found.push((path, digest));
            }
        }
        Ok(found)
    }
}

/// The sha256 of a file's content, read in large chunks.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((Digest::from_sha256_bytes(&hasher.finalize()), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_places_the_file_by_digest_and_temp_files_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"hello blob";
        let digest = Digest::of(data);
        let mut temp = store.temp_file().unwrap();
        temp.write_all(data).unwrap();
        store.commit(temp, &digest).unwrap();
        let path = store.path(&digest);
        assert!(path.ends_with(format!("sha256/{}/{}", &digest.hex()[..2], digest.hex())));
        assert_eq!(fs::read(&path).unwrap(), data);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(
            hash_file(&path).unwrap(),
            (digest.clone(), data.len() as u64)
        );

        // A dropped temp file leaves nothing behind.
        drop(store.temp_file().unwrap());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        let listed = store.list().unwrap();
        assert_eq!(listed, vec![(path, Some(digest))]);
    }

    #[test]
    fn sweep_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("tmp/blob-abc"), b"partial").unwrap();
        fs::create_dir(dir.path().join("tmp/upload-x")).unwrap();
        assert_eq!(store.sweep_tmp().unwrap(), 2);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}

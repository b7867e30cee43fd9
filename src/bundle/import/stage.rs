//! The staging directory of an import session, `<data_dir>/import/<session>/`: blobs that
//! were checked but are not part of the store yet. Each is written as `<hex>.part`, hashed on
//! the way, and renamed to `<hex>` only when it is the blob its name says, so a file named by
//! its digest is always a verified copy (an interrupted run leaves only `.part` files, which
//! the next run starts over). Nothing here counts as stored until the commit moves it.
//! Every method blocks.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::plan::BlobSource;
use super::verify::Check;
use super::{is_session, BundleError};
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::Digest;
use crate::storage::Storage;

pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// The staging of `session` under `data_dir` (created when missing).
    pub fn open(data_dir: &Path, session: &str) -> io::Result<Staging> {
        if !is_session(session) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{session:?} is not an import session"),
            ));
        }
        let dir = data_dir.join("import").join(session);
        fs::create_dir_all(&dir)?;
        Ok(Staging { dir })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// The size of the verified staged copy, if there is one.
    pub fn staged(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Starts writing blob `digest`.
    pub fn writer(&self, digest: &Digest) -> io::Result<StagedWriter> {
        let part = self.dir.join(format!("{}.part", digest.hex()));
        Ok(StagedWriter {
            file: Some(File::create(&part)?),
            part,
            target: self.path(digest),
            check: Check::default(),
        })
    }

    /// Removes the session and what it staged.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// One blob being staged; its `.part` file goes when it is dropped unfinished.
pub struct StagedWriter {
    file: Option<File>,
    part: PathBuf,
    target: PathBuf,
    check: Check,
}

impl StagedWriter {
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check.update(bytes);
        match &mut self.file {
            Some(file) => file.write_all(bytes),
            None => Err(io::Error::other("staged blob already finished")),
        }
    }

    pub fn written(&self) -> u64 {
        self.check.length()
    }

    /// Checks what was written is `digest` of `size` bytes, then makes it the staged copy.
    pub fn finish(mut self, digest: &Digest, size: u64) -> Result<(), BundleError> {
        let file = self.file.take();
        let check = std::mem::take(&mut self.check);
        check.finish(digest, size)?;
        if let Some(file) = file {
            file.sync_all().map_err(BundleError::Write)?;
        }
        fs::rename(&self.part, &self.target).map_err(BundleError::Write)
    }
}

impl Drop for StagedWriter {
    fn drop(&mut self) {
        if self.file.is_some() || !self.target.exists() {
            let _ = fs::remove_file(&self.part);
        }
    }
}

/// What the daemon checks a commit against: the staged copies, and what the store holds.
pub struct Staged<'a> {
    pub staging: &'a Staging,
    /// The node's store when it is the store of record; `None` with a shared store, where
    /// this node's tier is only a cache and every blob is staged.
    pub stored: Option<&'a Storage>,
}

impl Staged<'_> {
    /// The stored blob's size, when the store holds it (indexed, file in place).
    pub fn stored(&self, digest: &Digest) -> Option<u64> {
        let storage = self.stored?;
        let record = storage.index.blob(digest).ok()??;
        let on_disk = storage.blobs.file_len(digest).ok()??;
        (on_disk == record.size).then_some(record.size)
    }
}

impl BlobSource for Staged<'_> {
    fn size(&self, digest: &Digest) -> Option<u64> {
        self.staging.staged(digest).or_else(|| self.stored(digest))
    }

    fn read_manifest(&self, digest: &Digest) -> Result<Vec<u8>, BundleError> {
        let path = match (self.staging.staged(digest), self.stored) {
            (Some(_), _) => self.staging.path(digest),
            (None, Some(storage)) => storage.blobs.path(digest),
            (None, None) => {
                return Err(BundleError::blob(digest, "is neither staged nor stored"));
            }
        };
        let mut body = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(MAX_MANIFEST_BYTES as u64 + 1).read_to_end(&mut body))
            .map_err(|e| BundleError::read(digest, e))?;
        let mut check = Check::default();
        check.update(&body);
        check.finish(digest, body.len() as u64)?;
        Ok(body)
    }
}

//! Where an export goes: an OCI image layout as a directory or a tar, written blob by blob,
//! each verified as it is written. `index.json` is written last, by [`Layout::finish`], so a
//! layout without it is an unfinished export, never mistaken for a complete one.
//!
//! Both forms resume: what an interrupted run wrote completely and correctly is kept and
//! skipped (see [`DirLayout`] and [`super::tar::TarLayout`] for how each knows).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::ExportError;
use crate::oci::Digest;

/// The `oci-layout` file's content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Write buffer of a blob file or the tar.
pub const WRITE_BUFFER: usize = 1 << 20;

/// A layout being written. Called from one blocking thread at a time.
pub trait Layout: Send {
    /// Whether the blob is already there, complete and verified (from an earlier run).
    fn present(&mut self, digest: &Digest, size: u64) -> Result<bool, ExportError>;
    /// Writes one blob of `size` bytes from the chunks `next` hands out until `None`; the
    /// blob is kept only when its length and digest are right.
    fn put(
        &mut self,
        digest: &Digest,
        size: u64,
        next: &mut dyn FnMut() -> Option<Bytes>,
    ) -> Result<(), ExportError>;
    /// Writes `index.json` (last), makes everything durable and the layout complete.
    fn finish(&mut self, index: &[u8]) -> Result<(), ExportError>;
}

/// Counts and hashes a blob as it is written, and says at the end whether it is the one
/// asked for.
pub struct Check {
    hasher: Sha256,
    expected: Digest,
    size: u64,
    seen: u64,
}

impl Check {
    pub fn new(expected: &Digest, size: u64) -> Self {
        Check {
            hasher: Sha256::new(),
            expected: expected.clone(),
            size,
            seen: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) -> Result<(), ExportError> {
        self.seen += chunk.len() as u64;
        if self.seen > self.size {
            return Err(self.wrong_size());
        }
        self.hasher.update(chunk);
        Ok(())
    }

    pub fn finish(self) -> Result<(), ExportError> {
        if self.seen != self.size {
            return Err(self.wrong_size());
        }
        let got = Digest::from_sha256_bytes(&self.hasher.finalize());
        if got != self.expected {
            return Err(ExportError::Digest {
                digest: self.expected,
                got,
            });
        }
        Ok(())
    }

    fn wrong_size(&self) -> ExportError {
        ExportError::Size {
            digest: self.expected.clone(),
            expected: self.size,
            got: self.seen,
        }
    }
}

/// Whether `reader` holds exactly the blob `digest` of `size` bytes.
pub fn verify_reader(reader: &mut dyn Read, digest: &Digest, size: u64) -> Result<bool, io::Error> {
    let mut check = Check::new(digest, size);
    let mut buffer = vec![0; WRITE_BUFFER];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok(check.finish().is_ok());
        }
        if check.update(&buffer[..n]).is_err() {
            return Ok(false);
        }
    }
}

pub fn io_error(path: &Path, source: io::Error) -> ExportError {
    ExportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The layout as a directory. A blob is written to `blobs/sha256/<hex>.partial` and renamed
/// once verified, so a blob file under its own name is whole as far as this run knows; on a
/// rerun each one planned is hashed again before it is skipped (and rewritten if it does not
/// match), which also catches one a crash left renamed but not on disk. So blob files are
/// synced once, all together, when the layout is finished, not one by one.
pub struct DirLayout {
    root: PathBuf,
    blobs: PathBuf,
    /// Blob files written by this run, to sync at the end.
    written: Vec<PathBuf>,
}

impl DirLayout {
    /// Opens (or creates) the directory and removes an old `index.json`: the layout is
    /// unfinished until this export finishes it.
    pub fn open(root: &Path) -> Result<Self, ExportError> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| io_error(&blobs, e))?;
        let index = root.join("index.json");
        match fs::remove_file(&index) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&index, e)),
        }
        write_atomically(&root.join("oci-layout"), OCI_LAYOUT)?;
        Ok(DirLayout {
            root: root.to_owned(),
            blobs,
            written: Vec::new(),
        })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }
}

impl Layout for DirLayout {
    fn present(&mut self, digest: &Digest, size: u64) -> Result<bool, ExportError> {
        let path = self.path(digest);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(&path, e)),
        };
        if verify_reader(&mut file, digest, size).map_err(|e| io_error(&path, e))? {
            return Ok(true);
        }
        fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        Ok(false)
    }

    fn put(
        &mut self,
        digest: &Digest,
        size: u64,
        next: &mut dyn FnMut() -> Option<Bytes>,
    ) -> Result<(), ExportError> {
        let path = self.path(digest);
        let partial = path.with_extension("partial");
        let result = (|| {
            let file = File::create(&partial).map_err(|e| io_error(&partial, e))?;
            let mut out = io::BufWriter::with_capacity(WRITE_BUFFER, file);
            let mut check = Check::new(digest, size);
            while let Some(chunk) = next() {
                check.update(&chunk)?;
                out.write_all(&chunk).map_err(|e| io_error(&partial, e))?;
            }
            check.finish()?;
            out.flush().map_err(|e| io_error(&partial, e))?;
            fs::rename(&partial, &path).map_err(|e| io_error(&path, e))
        })();
        match result {
            Ok(()) => self.written.push(path),
            Err(_) => {
                let _ = fs::remove_file(&partial);
            }
        }
        result
    }

    fn finish(&mut self, index: &[u8]) -> Result<(), ExportError> {
        for path in &self.written {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_error(path, e))?;
        }
        sync_dir(&self.blobs)?;
        write_atomically(&self.root.join("index.json"), index)?;
        sync_dir(&self.root)
    }
}

/// Writes `path` through a temporary file beside it, synced, then renamed over it.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), ExportError> {
    let temporary = path.with_extension("partial");
    let result = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    result.map_err(|e| io_error(path, e))
}

pub fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

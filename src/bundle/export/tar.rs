//! The layout as one tar (what `skopeo copy oci-archive:` and `ctr import` read), written as
//! `FILE.partial` and renamed to `FILE` once `index.json` and the end-of-archive blocks are in.
//!
//! Resuming: a `FILE.partial` left by an interrupted run is read from the start; every entry
//! that is there in full (header, data and padding) and, for a blob, hashes to its name is
//! kept, and the file is cut after the last such entry. The export appends what is missing.
//! So a kill at any point loses at most the entry being written.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::layout::{io_error, sync_dir, verify_reader, Check, Layout, OCI_LAYOUT, WRITE_BUFFER};
use super::ExportError;
use crate::oci::Digest;

const BLOCK: u64 = 512;
const BLOB_PREFIX: &str = "blobs/sha256/";
/// Directory entries first, so tools that extract do not have to invent them.
const DIRECTORIES: [&str; 2] = ["blobs/", "blobs/sha256/"];

pub struct TarLayout {
    target: PathBuf,
    partial: PathBuf,
    out: BufWriter<File>,
    /// Where the next entry starts.
    end: u64,
    /// Entries already in the file (their names).
    present: HashSet<String>,
}

impl TarLayout {
    /// Opens `FILE.partial` for `target`, keeping the good entries an earlier run left.
    pub fn open(target: &Path) -> Result<Self, ExportError> {
        let mut name = target.as_os_str().to_owned();
        name.push(".partial");
        let partial = PathBuf::from(name);
        let (end, present) = match File::open(&partial) {
            Ok(file) => scan(file).map_err(|e| io_error(&partial, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, HashSet::new()),
            Err(e) => return Err(io_error(&partial, e)),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&partial)
            .map_err(|e| io_error(&partial, e))?;
        file.set_len(end).map_err(|e| io_error(&partial, e))?;
        file.seek(SeekFrom::Start(end))
            .map_err(|e| io_error(&partial, e))?;
        let mut layout = TarLayout {
            target: target.to_owned(),
            partial,
            out: BufWriter::with_capacity(WRITE_BUFFER, file),
            end,
            present,
        };
        for directory in DIRECTORIES {
            if !layout.present.contains(directory) {
                layout.entry(directory, 0, tar::EntryType::Directory)?;
                layout.present.insert(directory.to_owned());
            }
        }
        if !layout.present.contains("oci-layout") {
            layout.file("oci-layout", OCI_LAYOUT)?;
        }
        Ok(layout)
    }

    /// Writes a header; the data follows.
    fn entry(&mut self, path: &str, size: u64, kind: tar::EntryType) -> Result<(), ExportError> {
        let mut header = tar::Header::new_ustar();
        header
            .set_path(path)
            .map_err(|e| io_error(Path::new(path), e))?;
        header.set_size(size);
        header.set_entry_type(kind);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_cksum();
        self.write(header.as_bytes())
    }

    /// A small file, whole.
    fn file(&mut self, path: &str, data: &[u8]) -> Result<(), ExportError> {
        self.entry(path, data.len() as u64, tar::EntryType::Regular)?;
        self.write(data)?;
        self.pad()?;
        self.present.insert(path.to_owned());
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), ExportError> {
        self.out
            .write_all(data)
            .map_err(|e| io_error(&self.partial, e))?;
        self.end += data.len() as u64;
        Ok(())
    }

    /// Zeroes up to the next block boundary.
    fn pad(&mut self) -> Result<(), ExportError> {
        let short = (BLOCK - self.end % BLOCK) % BLOCK;
        self.write(&[0; BLOCK as usize][..short as usize])
    }

    /// Cuts the file back to `at` (an entry that failed).
    fn truncate(&mut self, at: u64) -> Result<(), ExportError> {
        let partial = self.partial.clone();
        let result = (|| {
            self.out.flush()?;
            let file = self.out.get_mut();
            file.set_len(at)?;
            file.seek(SeekFrom::Start(at))?;
            Ok(())
        })();
        self.end = at;
        result.map_err(|e| io_error(&partial, e))
    }
}

impl Layout for TarLayout {
    fn present(&mut self, digest: &Digest, _size: u64) -> Result<bool, ExportError> {
        // Verified by `scan` when the file was opened, or written (and verified) by this run.
        Ok(self.present.contains(&blob_path(digest)))
    }

    fn put(
        &mut self,
        digest: &Digest,
        size: u64,
        next: &mut dyn FnMut() -> Option<Bytes>,
    ) -> Result<(), ExportError> {
        let start = self.end;
        let path = blob_path(digest);
        let result = (|| {
            self.entry(&path, size, tar::EntryType::Regular)?;
            let mut check = Check::new(digest, size);
            while let Some(chunk) = next() {
                check.update(&chunk)?;
                self.write(&chunk)?;
            }
            check.finish()?;
            self.pad()
        })();
        match result {
            Ok(()) => {
                self.present.insert(path);
                Ok(())
            }
            Err(e) => {
                // What was written of it goes; the error (naming the blob) is what counts.
                let _ = self.truncate(start);
                Err(e)
            }
        }
    }

    fn finish(&mut self, index: &[u8]) -> Result<(), ExportError> {
        self.file("index.json", index)?;
        self.write(&[0; 2 * BLOCK as usize])?;
        let partial = self.partial.clone();
        self.out.flush().map_err(|e| io_error(&partial, e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| io_error(&partial, e))?;
        fs::rename(&self.partial, &self.target).map_err(|e| io_error(&self.target, e))?;
        match self.target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
            _ => sync_dir(Path::new(".")),
        }
    }
}

fn blob_path(digest: &Digest) -> String {
    format!("{BLOB_PREFIX}{}", digest.hex())
}

/// The end of the last good entry of a partial tar, and the names of the good entries.
fn scan(file: File) -> io::Result<(u64, HashSet<String>)> {
    let length = file.metadata()?.len();
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(WRITE_BUFFER, file));
    let mut end = 0;
    let mut present = HashSet::new();
    let Ok(entries) = archive.entries() else {
        return Ok((0, present));
    };
    for entry in entries {
        let Ok(mut entry) = entry else { break };
        let size = entry.header().entry_size()?;
        let entry_end = entry.raw_file_position() + size.div_ceil(BLOCK) * BLOCK;
        if entry_end > length {
            break;
        }
        let Ok(path) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
            break;
        };
        let good = match path.strip_prefix(BLOB_PREFIX) {
            Some("") => true,
            Some(hex) => match format!("sha256:{hex}").parse::<Digest>() {
                Ok(digest) => verify_reader(&mut entry, &digest, size)?,
                Err(_) => false,
            },
            // `index.json` is never in a partial file: a run that wrote it also renamed it.
            None => DIRECTORIES.contains(&path.as_str()) || path == "oci-layout",
        };
        if !good {
            break;
        }
        end = entry_end;
        present.insert(path);
    }
    Ok((end, present))
}

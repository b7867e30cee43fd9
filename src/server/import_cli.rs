//! `berth import FILE [--into PROJECT]`: checks a bundle, streams what the berth does not
//! hold yet, and commits it, through the running berth's admin socket or, when none answers
//! there, on the stopped berth's data directory (the same code the daemon runs). A bundle
//! that fails a check imports nothing: the session's staging is removed. An interrupted
//! run leaves it, and the next run of the same bundle skips what it holds.

use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::admin_cli::{human_bytes, open_offline};
use crate::bundle::import::commit::{self, Begun, ImportRequest, Imported};
use crate::bundle::import::layout::Bundle;
use crate::bundle::import::plan;
use crate::bundle::import::stage::Staging;
use crate::bundle::import::verify::{copy_checked, CHUNK};
use crate::bundle::import::{session_of, BundleError};
use crate::config::Settings;
use crate::oci::Digest;

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Imports `file`; what to print, or why nothing was imported.
pub fn run(settings: &Settings, file: &Path, into: Option<&str>) -> Result<String, String> {
    let refused = |e: BundleError| format!("{}: {e}; nothing was imported", file.display());
    let bundle = Bundle::open(file).map_err(refused)?;
    let roots = plan::roots(bundle.index_json()).map_err(refused)?;
    let plan = plan::walk(&bundle, &roots).map_err(refused)?;
    let session = session_of(bundle.index_json());
    let mut digests: Vec<(Digest, u64)> = plan
        .manifests
        .iter()
        .map(|m| (m.digest.clone(), m.body.len() as u64))
        .collect();
    digests.extend(plan.blobs.iter().cloned());
    let request = ImportRequest {
        into: into.map(str::to_owned),
        roots,
        digests: digests.iter().map(|(d, _)| d.clone()).collect(),
    };
    let socket = settings.admin_socket();
    let mut target = match UnixStream::connect(&socket) {
        Ok(_) => Target::Online(socket),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            Target::offline(settings)?
        }
        Err(e) => {
            return Err(format!(
                "cannot reach the running berth at {}: {e} (run this as the user berth runs as, or root)",
                socket.display()
            ))
        }
    };
    let begun = match target.begin(&session, &request) {
        Ok(begun) => begun,
        Err(e) => {
            target.close();
            return Err(format!("{}: {e}; nothing was imported", file.display()));
        }
    };
    let bar = Bar::new(std::io::stderr().is_terminal(), &digests, &begun);
    for (digest, size) in &digests {
        let present = begun.present.contains(digest);
        let copied = copy_blob(&bundle, &mut target, &session, digest, *size, present, &bar);
        if let Err(e) = copied {
            bar.bar.finish_and_clear();
            if let Err(abort) = target.abort(&session) {
                eprintln!("berth: cannot remove the staged blobs: {abort}");
            }
            return Err(format!("{}: {e}; nothing was imported", file.display()));
        }
    }
    bar.bar.finish_and_clear();
    let imported = target.commit(&session, &request)?;
    Ok(format_imported(&imported, bar.begin.elapsed()))
}

fn copy_blob(
    bundle: &Bundle,
    target: &mut Target,
    session: &str,
    digest: &Digest,
    size: u64,
    present: bool,
    bar: &Bar,
) -> Result<(), String> {
    let (reader, _) = bundle.reader(digest).map_err(|e| e.to_string())?;
    if present {
        // Held already: the bundle's copy is still checked.
        return copy_checked(reader, io::sink(), digest, size, |n| bar.inc(n))
            .map_err(|e| e.to_string());
    }
    target.stage(session, digest, size, reader, bar)
}

enum Target {
    Online(PathBuf),
    Offline(Box<Offline>),
}

/// The stopped berth's registry, opened on its data directory.
struct Offline {
    runtime: tokio::runtime::Runtime,
    registry: crate::registry::Registry,
    data_dir: PathBuf,
}

impl Target {
    fn offline(settings: &Settings) -> Result<Target, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (registry, _) = runtime.block_on(async { open_offline(settings, true) })?;
        Ok(Target::Offline(Box::new(Offline {
            runtime,
            registry,
            data_dir: settings.storage.data_dir.clone(),
        })))
    }

    fn begin(&mut self, session: &str, request: &ImportRequest) -> Result<Begun, String> {
        match self {
            Target::Online(socket) => {
                post(socket, &format!("/admin/import/{session}/begin"), request)
            }
            Target::Offline(offline) => offline
                .runtime
                .block_on(commit::begin(&offline.registry, session, request.clone()))
                .map_err(show),
        }
    }

    fn stage(
        &mut self,
        session: &str,
        digest: &Digest,
        size: u64,
        mut reader: impl Read,
        bar: &Bar,
    ) -> Result<(), String> {
        let data_dir = match self {
            Target::Online(socket) => {
                let path = format!("/admin/import/{session}/blobs/{digest}?size={size}");
                let mut stream = connect(socket)?;
                write!(
                    stream,
                    "PUT {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
                )
                .map_err(socket_error)?;
                let mut buffer = vec![0; CHUNK];
                loop {
                    let n = reader
                        .read(&mut buffer)
                        .map_err(|e| format!("blob {digest} cannot be read: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    // The daemon checks the bytes; a write it cut short is answered below.
                    if stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    bar.inc(n as u64);
                }
                return super::admin_cli::read_answer::<serde_json::Value>(stream).map(drop);
            }
            Target::Offline(offline) => offline.data_dir.clone(),
        };
        let staging = Staging::open(&data_dir, session).map_err(|e| e.to_string())?;
        let mut writer = staging.writer(digest).map_err(|e| e.to_string())?;
        let mut buffer = vec![0; CHUNK];
        loop {
            let n = reader
                .read(&mut buffer)
                .map_err(|e| format!("blob {digest} cannot be read: {e}"))?;
            if n == 0 || writer.written() > size {
                break;
            }
            writer.write(&buffer[..n]).map_err(|e| e.to_string())?;
            bar.inc(n as u64);
        }
        writer.finish(digest, size).map_err(|e| e.to_string())
    }

    fn commit(&mut self, session: &str, request: &ImportRequest) -> Result<Imported, String> {
        match self {
            Target::Online(socket) => {
                post(socket, &format!("/admin/import/{session}/commit"), request)
            }
            Target::Offline(offline) => offline.runtime.block_on(async {
                let registry = &offline.registry;
                let imported = commit::commit(registry, session, request.clone()).await;
                registry.cache().close().map_err(|e| e.to_string())?;
                imported.map_err(show)
            }),
        }
    }

    /// Closes a stopped berth's store cleanly (its next start needs no reconciliation).
    fn close(&mut self) {
        if let Target::Offline(offline) = self {
            if let Err(e) = offline.registry.cache().close() {
                eprintln!("berth: cannot close the store cleanly: {e}");
            }
        }
    }

    fn abort(&mut self, session: &str) -> Result<(), String> {
        match self {
            Target::Online(socket) => post::<serde_json::Value, _>(
                socket,
                &format!("/admin/import/{session}/abort"),
                &serde_json::json!({}),
            )
            .map(drop),
            Target::Offline(offline) => offline.runtime.block_on(async {
                let registry = &offline.registry;
                let aborted = commit::abort(registry, session).await;
                registry.cache().close().map_err(|e| e.to_string())?;
                aborted.map_err(show)
            }),
        }
    }
}

fn show(e: crate::registry::RegistryError) -> String {
    match e.is_server_fault() {
        true => e.chain().to_string(),
        false => e.message().to_owned(),
    }
}

fn socket_error(e: io::Error) -> String {
    format!("admin socket: {e}")
}

fn connect(socket: &Path) -> Result<UnixStream, String> {
    UnixStream::connect(socket).map_err(socket_error)
}

fn post<T: DeserializeOwned, B: Serialize>(
    socket: &Path,
    path: &str,
    body: &B,
) -> Result<T, String> {
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut stream = connect(socket)?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .and_then(|()| stream.write_all(&body))
    .map_err(socket_error)?;
    super::admin_cli::read_answer(stream)
}

/// Bytes, rate and time left on a terminal; the same numbers as a line every few seconds
/// in a log.
struct Bar {
    bar: ProgressBar,
    terminal: bool,
    begin: Instant,
    logged: std::cell::Cell<Instant>,
}

impl Bar {
    fn new(terminal: bool, digests: &[(Digest, u64)], begun: &Begun) -> Self {
        let total: u64 = digests.iter().map(|(_, size)| size).sum();
        let held: u64 = digests
            .iter()
            .filter(|(d, _)| begun.present.contains(d))
            .map(|(_, size)| size)
            .sum();
        eprintln!(
            "berth: importing {} blobs ({}); {} held already are checked, not copied",
            digests.len(),
            HumanBytes(total),
            HumanBytes(held)
        );
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        if terminal {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        let now = Instant::now();
        Bar {
            bar,
            terminal,
            begin: now,
            logged: std::cell::Cell::new(now),
        }
    }

    fn inc(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.terminal || self.logged.get().elapsed() < LOG_EVERY {
            return;
        }
        self.logged.set(Instant::now());
        let (done, total) = (self.bar.position(), self.bar.length().unwrap_or(0));
        eprintln!(
            "berth: import: {} of {} ({}%), {}/s, eta {}",
            HumanBytes(done),
            HumanBytes(total),
            (done * 100).checked_div(total).unwrap_or(100),
            HumanBytes(self.bar.per_sec() as u64),
            HumanDuration(self.bar.eta())
        );
    }
}

fn format_imported(imported: &Imported, elapsed: Duration) -> String {
    let mut out = String::new();
    for image in &imported.images {
        out += &format!(
            "imported {} as {} ({})\n",
            image.name, image.stored_as, image.digest
        );
    }
    out += &format!(
        "{} blobs new to the store ({}) in {}\n",
        imported.blobs_added,
        human_bytes(imported.bytes_added),
        humantime::format_duration(Duration::from_millis(elapsed.as_millis() as u64))
    );
    if imported.left_out > 0 {
        out += &format!(
            "{} platform manifests the bundle left out were not imported\n",
            imported.left_out
        );
    }
    out
}

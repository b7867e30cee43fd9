//! The admin endpoint on a local Unix socket: `berth cache stats|ls|rm` and `berth gc` reach
//! a running berth through it (see `http::admin` for its routes).
//!
//! The socket's mode (0600) is its access control: only the user berth runs as, and root, may
//! connect. It is bound under a temporary name, restricted, then renamed into place, so the
//! path never names a socket anyone else could use; a stale one (nobody answers) is replaced
//! at start, one a live berth answers on is an error; it is removed at shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::config::Settings;
use crate::http::admin::AdminSettings;
use crate::registry::Registry;

/// The socket file, removed when dropped (at shutdown).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the admin socket");
            }
        }
    }
}

/// Binds `path` with mode 0600, replacing a stale socket.
pub fn bind(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another berth answers on {}", path.display()),
                ));
            }
            tracing::info!(path = %path.display(), "replacing a stale admin socket");
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp)?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
        },
    ))
}

/// The admin server on its socket, with one worker: its requests are rare, and their work
/// runs on the blocking pool.
pub fn server(
    settings: &Settings,
    registry: &Arc<Registry>,
) -> io::Result<(actix_web::dev::Server, SocketFile)> {
    let path = settings.admin_socket();
    let (listener, file) = bind(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("admin socket {} (server.admin_socket): {e}", path.display()),
        )
    })?;
    let data = web::Data::from(Arc::clone(registry));
    let admin = web::Data::new(AdminSettings {
        gc_grace: settings.gc.grace,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(admin.clone())
            .configure(crate::http::admin::configure)
    })
    .workers(1)
    // Stopped by `serve` once the other listeners have drained: a second server acting on
    // SIGTERM itself cut the main listener's downloads short.
    .disable_signals()
    .listen_uds(listener)?
    .run();
    tracing::info!(path = %path.display(), "admin socket listening");
    Ok((server, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_private_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let (listener, file) = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A live one is not taken over.
        assert_eq!(bind(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        // Closed without removal (a crash): stale, replaced.
        drop(listener);
        std::mem::forget(file);
        let (_listener, file) = bind(&path).unwrap();
        drop(file);
        assert!(!path.exists());
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(bind(&path).is_err());
    }
}

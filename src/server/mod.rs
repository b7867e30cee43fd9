//! Startup and shutdown: open and recover storage, build the registry, serve HTTP.

pub mod admin;
pub mod admin_cli;
mod admin_lifecycle;
mod app;
pub mod check;
pub mod import_cli;
pub mod migrate;
mod shared;
mod summary;
#[cfg(test)]
mod tests;
pub mod tls;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

pub use self::app::{app, AppState};
use crate::auth::keys::{self, SigningKey};
use crate::auth::{AuthError, TokenService};
use crate::cache::evict::Budget;
use crate::cache::Cache;
use crate::clock::Clock;
use crate::config::{Projects, Settings};
use crate::metrics::Metrics;
use crate::registry::pins::{keep_pinned, PinPlan};
use crate::registry::Registry;
use crate::storage::Storage;
use crate::upstream::Upstreams;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open storage in {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: crate::storage::StorageError,
    },
    #[error("upstream configuration: {0}")]
    Upstream(#[from] crate::upstream::SetupError),
    #[error("token service: {0}")]
    Auth(String),
    #[error("mirror.pinned: {0}")]
    Pin(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server.tls_certificate: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens storage (recovering from any earlier crash) and builds the registry over the
/// configured upstreams. Blocks.
pub fn build_registry(
    settings: &Settings,
    projects: Projects,
) -> Result<Arc<Registry>, StartError> {
    let clock = Clock::system();
    let upstreams = Upstreams::new(&settings.upstreams, settings.mirror.offline, &clock)
        .map_err(StartError::Upstream)?;
    assemble_registry(settings, upstreams, clock, projects)
}

/// Opens storage (recovering from any earlier crash) and builds the registry over
/// `upstreams`, reading time from `clock`. Blocks.
pub fn assemble_registry(
    settings: &Settings,
    upstreams: Upstreams,
    clock: Clock,
    projects: Projects,
) -> Result<Arc<Registry>, StartError> {
    let data_dir = &settings.storage.data_dir;
    let storage_error = |source| StartError::Storage {
        path: data_dir.display().to_string(),
        source,
    };
    let storage = Storage::open(data_dir).map_err(storage_error)?;
    // Bounded by what was in flight at the last stop; the rest is done in the background
    // (Cache::after_start).
    let startup = storage.start().map_err(storage_error)?;
    tracing::info!(
        data_dir = %data_dir.display(),
        clean_stop = startup.clean,
        temp_files_removed = startup.temp_files_removed,
        uploads_removed = startup.uploads_removed,
        "storage ready{}",
        if startup.clean { "" } else { "; reconciling in the background" }
    );
    let stored_bytes = storage.total_size().map_err(storage_error)?;
    let budget = Budget {
        max_bytes: settings.storage.max_size.0,
        low_water_percent: settings.storage.low_water_percent,
    };
    if settings.storage.manifest_cache_entries.is_some() {
        tracing::warn!(
            "storage.manifest_cache_entries is ignored: hot manifests are bounded by storage.memory_cache (bytes) now"
        );
    }
    let metrics = Arc::new(Metrics::default());
    upstreams.report_to(&metrics);
    let cache = Cache::new(
        Arc::new(storage),
        metrics,
        settings.storage.memory_cache.0.unwrap_or(64 << 20),
        budget,
        stored_bytes,
    );
    if let Some(s3) = &settings.storage.s3 {
        tracing::info!(
            endpoint = %s3.endpoint,
            "shared store: the store of record for blobs, private projects and uploads"
        );
    }
    let cache = shared::with_shared_store(cache, settings).map_err(|e| storage_error(e.into()))?;
    let cache = Arc::new(cache);
    Ok(Arc::new(Registry::new(
        upstreams,
        cache,
        projects,
        &settings.mirror,
        clock,
    )))
}

/// Serves until SIGINT/SIGTERM. Prints the bound address on stdout (useful with port 0).
pub async fn serve(settings: Settings) -> Result<(), StartError> {
    // One table of projects, shared by the routing of names and the access policy.
    let projects = Projects::new(&settings.projects);
    let registry = {
        let (settings, projects) = (settings.clone(), projects.clone());
        tokio::task::spawn_blocking(move || build_registry(&settings, projects))
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e)))??
    };
    let plan = pin_plan(&settings);
    let pins = registry
        .prepare_pins(&plan)
        .map_err(|e| StartError::Pin(e.to_string()))?;
    let listener =
        TcpListener::bind(settings.server.listen).map_err(|source| StartError::Listen {
            addr: settings.server.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    if let Some(store) = registry.cache().shared() {
        let checked = store.check().await;
        match &checked {
            Ok(()) => tracing::info!("shared store answers"),
            Err(e) => tracing::error!(
                error = %e,
                "the shared store does not answer (or the bucket does not exist): requests that need it get UNAVAILABLE until it does"
            ),
        }
        registry
            .readiness()
            .shared_checked(checked.map_err(|e| e.to_string()));
    }
    let shared_key = match (&settings.auth, registry.cache().shared()) {
        (None, Some(store)) => Some(shared::signing_key(store, &settings.storage.data_dir).await?),
        _ => None,
    };
    let tokens = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || token_service(&settings, &projects, shared_key))
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e)))??
    };
    let tls = {
        let server = settings.server.clone();
        tokio::task::spawn_blocking(move || tls::Tls::from_settings(&server))
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e)))??
    };
    let state = AppState::new(&settings, &registry, tokens);
    let read_timeout = settings.server.read_timeout;
    let server = HttpServer::new(move || app(&state))
        .client_request_timeout(read_timeout)
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs())
        .max_connections(settings.server.max_connections);
    // Registered before the listening line, so a SIGHUP (`systemctl reload`) from then on
    // reloads instead of ending the process, with or without TLS.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (mut server, reloader) = match tls {
        Some(tls) => {
            let reloader = actix_web::rt::spawn(tls::keep_fresh(
                tls.resolver,
                tls.files,
                tls.client_ca,
                hangup,
            ));
            (
                server.listen_rustls_0_23(listener, tls.config)?,
                Some(reloader),
            )
        }
        None => (
            server.listen(listener)?,
            Some(actix_web::rt::spawn(nothing_to_reload(hangup))),
        ),
    };
    let workers = match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    server = server.workers(workers);
    check_file_limit(workers * settings.server.max_connections);
    let health = health_server(&settings, &registry)?;
    let scheme = if settings.server.tls_enabled() {
        "https"
    } else {
        "http"
    };
    let metrics = metrics_server(&settings, &registry)?;
    let (admin, admin_socket) = admin::server(&settings, &registry)?;
    summary::log_summary(&settings, addr);
    summary::warn_plain_realm(&settings.server);
    println!("berth listening on {scheme}://{addr}");
    registry.cache().after_start();
    let sweeper = actix_web::rt::spawn(expire_uploads_periodically(Arc::clone(&registry)));
    let pinner = (!pins.is_empty())
        .then(|| actix_web::rt::spawn(keep_pinned(Arc::clone(&registry), pins, plan)));
    let watcher = actix_web::rt::spawn(crate::registry::readiness::watch_shared_store(Arc::clone(
        &registry,
    )));
    let collector = settings.gc.schedule().map(|interval| {
        let collect = crate::registry::gc::collect_periodically;
        actix_web::rt::spawn(collect(Arc::clone(&registry), interval, settings.gc.grace))
    });
    // Only the main listener acts on SIGTERM: it stops accepting at once and serves what is
    // in flight for at most server.shutdown_timeout. The side listeners (health, metrics,
    // admin) ignore signals, answer through the drain, and are stopped after it: a second
    // server acting on the signal itself cut the main listener's downloads short.
    let side: Vec<actix_web::dev::Server> = health
        .into_iter()
        .chain(metrics)
        .chain(Some(admin))
        .collect();
    let side_handles: Vec<_> = side.iter().map(|server| server.handle()).collect();
    let side: Vec<_> = side.into_iter().map(actix_web::rt::spawn).collect();
    let served = server.run().await;
    tracing::info!("stopped serving; flushing the index");
    watcher.abort();
    for handle in side_handles {
        handle.stop(false).await;
    }
    for server in side {
        if let Ok(Err(e)) = server.await {
            tracing::warn!(error = %e, "a side listener stopped with an error");
        }
    }
    served?;
    drop(admin_socket);
    sweeper.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    if let Some(pinner) = pinner {
        pinner.abort();
    }
    if let Some(collector) = collector {
        collector.abort();
    }
    if let Err(e) = registry.cache().close() {
        tracing::warn!(error = %e, "index flush at shutdown failed");
    }
    Ok(())
}

/// SIGHUP without TLS: there is no certificate to reload (htpasswd is re-read whenever it
/// changes anyway), and the signal must not end the process.
async fn nothing_to_reload(mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        tracing::info!(
            "SIGHUP: nothing to reload without TLS; configuration changes need a restart"
        );
    }
}

/// The token service, with its signing key loaded (and, for an open mirror, made on first
/// start). Reads files: blocks.
/// `shared_key`: the PEM of the key every node over the shared store signs with, for an open
/// mirror (with `[auth]`, the configured key is the shared one).
pub fn token_service(
    settings: &Settings,
    projects: &Projects,
    shared_key: Option<String>,
) -> Result<TokenService, StartError> {
    let auth_error = |e: AuthError| StartError::Auth(e.to_string());
    match &settings.auth {
        Some(auth) => {
            let key = SigningKey::load(&auth.signing_key, auth.certificate.as_deref())
                .map_err(auth_error)?;
            TokenService::new(auth, projects, key).map_err(auth_error)
        }
        // Without [auth], an open mirror still runs a token service: it lets clients pass
        // their upstream credentials through, with a key kept in data_dir.
        None => {
            let key = match shared_key {
                Some(pem) => SigningKey::from_pem(
                    pem.as_bytes(),
                    std::path::Path::new("shared store keys/token.pem"),
                    None,
                ),
                None => keys::load_or_generate(&settings.storage.data_dir.join(OPEN_MIRROR_KEY)),
            }
            .map_err(auth_error)?;
            TokenService::open(key).map_err(auth_error)
        }
    }
}

/// The open mirror's signing key, in the data directory.
const OPEN_MIRROR_KEY: &str = "token.key";

/// Connections the health listener keeps open at once; probes are short and few.
const HEALTH_CONNECTIONS: usize = 64;

/// The listener for `/healthz` and `/metrics` alone, with its own worker and connection
/// limit, so health checks are answered while the main listener is full.
fn health_server(
    settings: &Settings,
    registry: &Arc<Registry>,
) -> Result<Option<actix_web::dev::Server>, StartError> {
    settings
        .server
        .health_listen
        .map(|listen| {
            side_server(
                settings,
                registry,
                listen,
                "health",
                crate::http::configure_health,
            )
        })
        .transpose()
}

/// The listener for `/metrics` alone (`server.metrics_listen`), so the public port need not
/// expose it.
fn metrics_server(
    settings: &Settings,
    registry: &Arc<Registry>,
) -> Result<Option<actix_web::dev::Server>, StartError> {
    settings
        .server
        .metrics_listen
        .map(|listen| {
            side_server(
                settings,
                registry,
                listen,
                "metrics",
                crate::http::configure_metrics,
            )
        })
        .transpose()
}

/// A small plain-HTTP listener on `listen` serving `routes`: one worker, few connections, and
/// no signal handling of its own (`serve` stops it after the main listener's drain).
fn side_server(
    settings: &Settings,
    registry: &Arc<Registry>,
    listen: std::net::SocketAddr,
    name: &'static str,
    routes: fn(&mut web::ServiceConfig),
) -> Result<actix_web::dev::Server, StartError> {
    let listener = TcpListener::bind(listen).map_err(|source| StartError::Listen {
        addr: listen,
        source,
    })?;
    let addr = listener.local_addr()?;
    let data = web::Data::from(Arc::clone(registry));
    let server_settings = web::Data::new(settings.server.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(server_settings.clone())
            .configure(routes)
    })
    .workers(1)
    .disable_signals()
    .max_connections(HEALTH_CONNECTIONS)
    .client_request_timeout(settings.server.read_timeout)
    .listen(listener)?
    .run();
    println!("berth {name} on http://{addr}");
    tracing::info!(%addr, "{name} listening");
    Ok(server)
}

/// Raises the soft limit on open files to the hard one (each connection is a descriptor, and
/// the usual soft default, 1024, is far below what `max_connections` allows), and warns when
/// the connections allowed could still exhaust it.
fn check_file_limit(connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open file limit");
        }
    }
    let current = getrlimit(Resource::Nofile).current;
    // Blob files, mappings, the index and upstream connections need descriptors too.
    let needed = connections as u64 + 1024;
    if let Some(current) = current.filter(|&c| c < needed) {
        tracing::warn!(
            open_file_limit = current,
            connections,
            "server.max_connections x workers could exhaust the open file limit; lower one or raise the other"
        );
    }
}

fn pin_plan(settings: &Settings) -> PinPlan {
    PinPlan {
        pins: settings.mirror.pinned.clone(),
        platforms: settings.mirror.pin_platforms.clone(),
        refresh: settings.mirror.pin_refresh,
    }
}

/// Abandoned uploads go after [`UPLOAD_EXPIRY`]; checking hourly bounds how long they linger.
async fn expire_uploads_periodically(registry: Arc<Registry>) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let cache = Arc::clone(registry.cache());
        let swept = tokio::task::spawn_blocking(move || cache.expire_uploads()).await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "expired abandoned uploads"),
            Ok(Err(e)) => tracing::warn!(error = %e, "upload expiry failed"),
            Err(e) => tracing::warn!(error = %e, "upload expiry task failed"),
        }
        if let Some(store) = registry.cache().shared() {
            match shared::expire_uploads(store).await {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(removed, "expired abandoned uploads in the shared store")
                }
                Err(e) => tracing::warn!(error = %e, "shared upload expiry failed"),
            }
        }
    }
}

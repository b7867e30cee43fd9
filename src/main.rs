use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use berth::config::{LogFormat, Settings};
use berth::server::admin_cli::{self, Operation};

/// berth: a registry mirror daemon (pull-through cache for OCI / Docker registries).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); without it berth runs on its embedded defaults.
    #[arg(long, short, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding server.listen.
    #[arg(long, global = true, value_parser = berth::config::parse_listen)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory, overriding storage.data_dir.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry mirror.
    Serve,
    /// Print the effective configuration (secrets redacted), check every file it names, and
    /// exit: 0 when berth would start with it, 2 (with the reasons) when not.
    CheckConfig,
    /// Write a new token signing key (EC P-256, PKCS#8 PEM) and a self-signed certificate
    /// of it (for `auth.certificate`, and other registries' `rootcertbundle`).
    Keygen {
        /// Where to write the private key.
        #[arg(long, default_value = "keys/token.key")]
        key: PathBuf,
        /// Where to write the certificate.
        #[arg(long, default_value = "keys/token.crt")]
        cert: PathBuf,
    },
    /// Hash a password (read from standard input) with bcrypt, for an htpasswd line.
    HashPassword,
    /// Inspect or clean the cache: through the running berth's admin socket, or on the data
    /// directory of a stopped one.
    Cache {
        #[command(subcommand)]
        action: CacheCommand,
    },
    /// Remove cached blobs no manifest references (not those stored or read within
    /// `gc.grace` on a running berth), and leftovers of a stopped one. Same as `cache gc`.
    Gc,
    /// Load an OCI image layout (a tar or a directory, as `berth export` or `skopeo copy …
    /// oci-archive:` write it): every blob checked, into the mirror cache as pinned content of
    /// its upstream names (`org.opencontainers.image.ref.name`), or into a private project.
    /// Through the running berth's admin socket, or on the data directory of a stopped one.
    /// A bundle that fails a check imports nothing; run it again after an interruption.
    Import {
        /// The bundle: an OCI image layout, as a tar or a directory.
        file: PathBuf,
        /// A private project to push the images into (`PROJECT/<repository>:<tag>`).
        #[arg(long)]
        into: Option<String>,
    },
    /// Apply the `retention` rules of every project: delete tags beyond `keep_last` and old
    /// untagged manifests (berth gc then reclaims the bytes).
    Retention {
        /// Only list what would be deleted, with why; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage the repositories of private projects.
    Repo {
        #[command(subcommand)]
        action: RepoCommand,
    },
    /// Copy images from a running berth into an OCI image layout (a tar, or a directory) to
    /// carry across an air gap: every platform asked for, the images' referrers (signatures,
    /// SBOMs), each blob verified. Run it again after an interruption: it continues.
    Export(ExportArgs),
    /// Move this node's store (berth must be stopped: the index is opened exclusively).
    Storage {
        #[command(subcommand)]
        action: StorageCommand,
    },
}

#[derive(clap::Args)]
struct ExportArgs {
    /// Images, named as for a pull: `alpine:3.20`, `docker.io/library/alpine:3.20`,
    /// `team/app:1`, `name@sha256:…`.
    #[arg(required = true)]
    images: Vec<String>,
    /// `os/arch[/variant]`, comma-separated (`linux/amd64,linux/arm64`), or `all` (the
    /// default): which platforms of a multi-platform image to take.
    #[arg(long, default_value = "all")]
    platform: berth::bundle::export::Platforms,
    /// Where to write: a tar when the name ends in `.tar`, else a directory.
    #[arg(long, short = 'o', required = true)]
    output: PathBuf,
    /// `tar` or `dir`, whatever the output's name.
    #[arg(long, value_parser = ["tar", "dir"])]
    format: Option<String>,
    /// The berth to read from (default: the one the configuration describes, by its
    /// `server.external_url`, else `server.listen`).
    #[arg(long)]
    from: Option<url::Url>,
    /// A user of berth's token service (for images of private projects).
    #[arg(long, requires = "password_stdin")]
    user: Option<String>,
    /// Read the user's password from standard input.
    #[arg(long, requires = "user")]
    password_stdin: bool,
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Copy every blob and the private projects' records from `storage.data_dir` into the
    /// shared store `[storage.s3]` names: verified, and resumable (run it again after an
    /// interruption: what is there is skipped). Mirror tags and pins stay with the node.
    Migrate {
        /// The target: the shared store of `[storage.s3]` (the only one for now).
        #[arg(long, required = true)]
        to_s3: bool,
    },
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Delete a whole repository of a project (`team/app`): every tag, manifest, blob link and
    /// referrer record (berth gc then reclaims the bytes).
    Rm {
        /// The repository, as clients name it.
        repository: String,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Count what is cached, in human units, by kind, with the pins.
    Stats,
    /// List the cached mirror images: upstream/repository:tag -> digest, age, size.
    Ls,
    /// Drop one cached image (`alpine:3.20`, `docker.io/library/alpine:3.20`, `name@digest`),
    /// or every cached tag of a repository named without a tag (`alpine`), and the blobs
    /// nothing else holds. Never touches private projects.
    Rm {
        /// The image, named as for a pull.
        image: String,
    },
    /// Same as `berth gc`.
    Gc,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = cli.listen {
        settings.server.listen = listen;
    }
    if let Some(data_dir) = cli.data_dir {
        settings.storage.data_dir = data_dir;
    }
    match cli.command {
        Command::CheckConfig => check_config(&settings),
        Command::Serve => serve(settings),
        Command::Cache { action } => cache_command(&settings, action),
        Command::Gc => cache_command(&settings, CacheCommand::Gc),
        Command::Retention { dry_run } => admin(&settings, &Operation::Retention { dry_run }),
        Command::Repo {
            action: RepoCommand::Rm { repository },
        } => admin(&settings, &Operation::RemoveRepository(repository)),
        Command::Storage {
            action: StorageCommand::Migrate { to_s3: _ },
        } => migrate(&settings),
        Command::Import { file, into } => import(&settings, &file, into.as_deref()),
        Command::Export(args) => export(&settings, args),
        Command::Keygen { key, cert } => keygen(&key, &cert),
        Command::HashPassword => hash_password(),
    }
}

/// Prints the effective configuration, then checks what startup would read (files, the data
/// directory, upstream clients): problems on stderr and exit status 2.
fn check_config(settings: &Settings) -> ExitCode {
    // As TOML comments, so the output stays a loadable configuration.
    for warning in settings
        .upstreams
        .iter()
        .filter_map(|u| u.insecure_warning())
    {
        println!("# WARNING: {warning}");
    }
    print!("{}", settings.to_redacted_toml());
    let findings = berth::server::check::check(settings);
    for warning in &findings.warnings {
        eprintln!("berth: warning: {warning}");
    }
    for problem in &findings.problems {
        eprintln!("berth: {problem}");
    }
    if findings.problems.is_empty() {
        eprintln!("berth: configuration OK");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn keygen(key_path: &std::path::Path, cert_path: &std::path::Path) -> ExitCode {
    let result = (|| -> Result<(), String> {
        if key_path.exists() {
            return Err(format!(
                "{} exists; not overwriting a signing key",
                key_path.display()
            ));
        }
        let key_pem = berth::auth::keys::generate_ec_pem().map_err(|e| e.to_string())?;
        let key_pair = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(vec!["berth-token-signer".to_owned()])
            .map_err(|e| e.to_string())?;
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let cert = params.self_signed(&key_pair).map_err(|e| e.to_string())?;
        for path in [key_path, cert_path] {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
        }
        write_private(key_path, key_pem.as_bytes())?;
        std::fs::write(cert_path, cert.pem())
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        println!(
            "key: {}\ncertificate: {}",
            key_path.display(),
            cert_path.display()
        );
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: keygen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Creates `path` readable by its owner only.
fn write_private(path: &std::path::Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(data)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn hash_password() -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("berth: cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("berth: empty password");
        return ExitCode::FAILURE;
    }
    match berth::auth::users::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import(settings: &Settings, file: &std::path::Path, into: Option<&str>) -> ExitCode {
    match berth::server::import_cli::run(settings, file, into) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: import: {e}");
            ExitCode::from(1)
        }
    }
}

fn cache_command(settings: &Settings, action: CacheCommand) -> ExitCode {
    let op = match action {
        CacheCommand::Stats => Operation::Stats,
        CacheCommand::Ls => Operation::List,
        CacheCommand::Rm { image } => Operation::Remove(image),
        CacheCommand::Gc => Operation::Gc,
    };
    admin(settings, &op)
}

fn admin(settings: &Settings, op: &Operation) -> ExitCode {
    match admin_cli::run(settings, op) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

fn migrate(settings: &Settings) -> ExitCode {
    match berth::server::migrate::run(settings) {
        Ok(summary) => {
            println!("{summary}");
            if summary.left_out() {
                eprintln!("berth: finished, but not everything was copied (see above)");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: storage migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn export(settings: &Settings, args: ExportArgs) -> ExitCode {
    use berth::bundle::export::{ExportOptions, Format};
    let credentials = match args.user {
        Some(user) => {
            let mut password = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut password) {
                eprintln!("berth: export: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
            Some((user, password.trim_end_matches(['\r', '\n']).to_owned()))
        }
        None => None,
    };
    let format = match args.format.as_deref() {
        Some("tar") => Format::Tar,
        Some(_) => Format::Dir,
        None => Format::for_path(&args.output),
    };
    let options = ExportOptions {
        images: args.images,
        platforms: args.platform,
        output: args.output,
        format,
        from: args.from,
        credentials,
    };
    match berth::bundle::export::run(settings, options) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: export: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> ExitCode {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Clients that try TLS first on a plain-HTTP port (skopeo, podman) make actix log an
    // ERROR per connection; that is the client's probe, not a fault of berth.
    if let Ok(quiet) = "actix_http::h1::dispatcher=off".parse() {
        filter = filter.add_directive(quiet);
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log.format {
        // Fields at the top level, next to `timestamp`, `level`, `target` and `message`.
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let result = actix_web::rt::System::new().block_on(berth::server::serve(settings));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "berth stopped");
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

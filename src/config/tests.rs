use super::*;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn texts<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(T::to_string).collect()
}

#[test]
fn embedded_defaults_load() {
    let s = Settings::load_with_env(None, no_env()).unwrap();
    assert_eq!(s.server.listen, addr("127.0.0.1:5000"));
    assert_eq!(s.storage.data_dir, PathBuf::from("./berth-data"));
    assert_eq!(s.upstreams.len(), 1);
    assert_eq!(s.upstreams[0].name, "docker.io");
    assert_eq!(s.upstreams[0].url.as_str(), "https://registry-1.docker.io/");
    assert_eq!(s.upstreams[0].tag_ttl, Duration::from_secs(300));
}

#[test]
fn file_then_env_override() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[server]\nlisten = \"0.0.0.0:6000\"\n[[upstreams]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\ntag_ttl = \"1m\"\nusername = \"u\"\npassword = \"hunter2\""
    )
    .unwrap();
    let env = vec![
        ("BERTH__STORAGE__DATA_DIR".to_string(), "/tmp/x".to_string()),
        ("UNRELATED".to_string(), "1".to_string()),
    ];
    let s = Settings::load_with_env(Some(f.path()), env).unwrap();
    assert_eq!(s.server.listen, addr("0.0.0.0:6000"));
    assert_eq!(s.storage.data_dir, PathBuf::from("/tmp/x"));
    // The file's list replaces the default list.
    assert_eq!(s.upstreams.len(), 1);
    assert_eq!(s.upstreams[0].name, "ghcr.io");
    assert_eq!(s.upstreams[0].tag_ttl, Duration::from_secs(60));
    assert_eq!(s.upstreams[0].read_timeout, Duration::from_secs(60));
    let shown = s.to_redacted_toml();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"));
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn pins_from_file_and_lists_from_env() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[mirror]\npinned = [\"alpine:3.20\"]\npin_refresh = \"10m\""
    )
    .unwrap();
    let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
    assert_eq!(texts(&s.mirror.pinned), ["alpine:3.20"]);
    assert_eq!(s.mirror.pinned[0].repository().as_str(), "alpine");
    assert!(s.mirror.pin_platforms.is_empty());
    assert_eq!(s.mirror.pin_refresh, Duration::from_secs(600));

    let env = vec![
        (
            "BERTH__MIRROR__PINNED".to_string(),
            "busybox:1, localhost:5000/x/y:2".to_string(),
        ),
        (
            "BERTH__MIRROR__PIN_PLATFORMS".to_string(),
            "linux/amd64,linux/arm64/v8".to_string(),
        ),
    ];
    let s = Settings::load_with_env(Some(f.path()), env).unwrap();
    assert_eq!(
        texts(&s.mirror.pinned),
        ["busybox:1", "localhost:5000/x/y:2"]
    );
    assert_eq!(s.mirror.pinned[1].host(), Some("localhost:5000"));
    assert_eq!(s.mirror.pin_platforms, ["linux/amd64", "linux/arm64/v8"]);

    for (key, bad) in [
        ("BERTH__MIRROR__PINNED", "alpine:bad tag"),
        ("BERTH__MIRROR__PIN_PLATFORMS", "amd64"),
        ("BERTH__MIRROR__PIN_REFRESH", "0s"),
    ] {
        let env = vec![(key.to_string(), bad.to_string())];
        assert!(
            Settings::load_with_env(None, env).is_err(),
            "{key}={bad} accepted"
        );
    }
}

#[test]
fn trusted_proxies_are_parsed_once_at_load() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"::1\"]"
    )
    .unwrap();
    let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
    let nets: Vec<String> = s
        .server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
    // The effective configuration prints them back as blocks.
    assert!(s.to_redacted_toml().contains("\"127.0.0.1/32\""));

    let env = vec![(
        "BERTH__SERVER__TRUSTED_PROXIES".to_string(),
        "192.168.0.0/16, fd00::/8".to_string(),
    )];
    let s = Settings::load_with_env(None, env).unwrap();
    assert_eq!(s.server.trusted_proxies.len(), 2);

    let env = vec![(
        "BERTH__SERVER__TRUSTED_PROXIES".to_string(),
        "10.0.0.0/8,nope".to_string(),
    )];
    let err = Settings::load_with_env(None, env).unwrap_err().to_string();
    assert!(err.contains("\"nope\" is not an address"), "{err}");
}

#[test]
fn auth_and_projects() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[auth]\nsigning_key = \"k.pem\"\nadmins = [\"root\"]\n[[projects]]\nname = \"team\"\nmembers = {{ alice = \"developer\", bob = \"guest\" }}"
    )
    .unwrap();
    let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
    let auth = s.auth.unwrap();
    assert_eq!(auth.service, "berth");
    assert!(auth.anonymous_pull);
    assert_eq!(auth.token_ttl, Duration::from_secs(300));
    assert_eq!(s.projects[0].members["alice"], Role::Developer);
    assert!(!s.projects[0].public);

    assert_eq!(auth.login.failures_per_user, 5);
    assert_eq!(auth.login.cache_ttl, Duration::from_secs(60));

    let env = vec![
        (
            "BERTH__AUTH__LOGIN__FAILURES_PER_ADDRESS".to_string(),
            "7".to_string(),
        ),
        (
            "BERTH__AUTH__LOGIN__FAILURE_WINDOW".to_string(),
            "2m".to_string(),
        ),
    ];
    let s = Settings::load_with_env(Some(f.path()), env).unwrap();
    let login = s.auth.unwrap().login;
    assert_eq!(login.failures_per_address, 7);
    assert_eq!(login.failure_window, Duration::from_secs(120));
    assert_eq!(login.hash_threads, 2);
    let env = vec![(
        "BERTH__AUTH__LOGIN__HASH_THREADS".to_string(),
        "0".to_string(),
    )];
    assert!(Settings::load_with_env(Some(f.path()), env).is_err());

    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "[[projects]]\nname = \"team\"").unwrap();
    let err = Settings::load_with_env(Some(f.path()), no_env()).unwrap_err();
    assert!(err.to_string().contains("[auth]"), "{err}");

    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[auth]\nsigning_key = \"k\"\n[[projects]]\nname = \"Team/x\""
    )
    .unwrap();
    assert!(Settings::load_with_env(Some(f.path()), no_env()).is_err());
}

/// A project named `library` would shadow Docker Hub's official images.
#[test]
fn a_project_named_library_is_refused() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[auth]\nsigning_key = \"k\"\n[[projects]]\nname = \"library\""
    )
    .unwrap();
    let err = Settings::load_with_env(Some(f.path()), no_env()).unwrap_err();
    assert!(err.to_string().contains("official images"), "{err}");
}

/// A role that does not exist is named, with the ones that do.
#[test]
fn a_wrong_role_lists_the_valid_ones() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[auth]\nsigning_key = \"k\"\n[[projects]]\nname = \"team\"\nmembers = {{ alice = \"owner\", bob = \"maintainer\" }}"
    )
    .unwrap();
    let err = Settings::load_with_env(Some(f.path()), no_env())
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"owner\""), "{err}");
    assert!(
        err.contains("guest") && err.contains("developer") && err.contains("maintainer"),
        "{err}"
    );
}

#[test]
fn byte_sizes() {
    let parse = |t: &str| ByteSize::parse(t).unwrap().0;
    assert_eq!(parse("unlimited"), None);
    assert_eq!(parse("0"), None);
    assert_eq!(parse("512"), Some(512));
    assert_eq!(parse("50GiB"), Some(50 << 30));
    assert_eq!(parse("1.5 MiB"), Some(1_572_864));
    assert_eq!(parse("2gb"), Some(2_000_000_000));
    assert!(ByteSize::parse("lots").is_err());
    assert!(ByteSize::parse("5 parsecs").is_err());
}

#[test]
fn resource_limits_have_defaults_and_are_checked() {
    let s = Settings::load_with_env(None, no_env()).unwrap();
    assert_eq!(s.storage.memory_cache, ByteSize(Some(64 << 20)));
    assert_eq!(s.server.read_timeout, Duration::from_secs(30));
    assert_eq!(s.server.max_connections, 1024);
    assert_eq!(s.server.health_listen, None);
    assert_eq!(s.upstreams[0].not_found_ttl, Duration::from_secs(30));
    assert_eq!(s.upstreams[0].breaker_threshold, 5);
    assert_eq!(s.upstreams[0].breaker_cooldown, Duration::from_secs(30));
    let env = vec![(
        "BERTH__STORAGE__MEMORY_CACHE".to_string(),
        "16MiB".to_string(),
    )];
    let s = Settings::load_with_env(None, env).unwrap();
    assert_eq!(s.storage.memory_cache, ByteSize(Some(16 << 20)));
    // The old count-bounded key still loads (and is ignored).
    let env = vec![(
        "BERTH__STORAGE__MANIFEST_CACHE_ENTRIES".to_string(),
        "10000".to_string(),
    )];
    let s = Settings::load_with_env(None, env).unwrap();
    assert_eq!(s.storage.manifest_cache_entries, Some(10_000));
    assert_eq!(s.storage.memory_cache, ByteSize(Some(64 << 20)));
    for (key, bad) in [
        ("BERTH__STORAGE__MEMORY_CACHE", "unlimited"),
        ("BERTH__STORAGE__MEMORY_CACHE", "1MiB"),
        ("BERTH__SERVER__READ_TIMEOUT", "0s"),
        ("BERTH__SERVER__MAX_CONNECTIONS", "0"),
    ] {
        let env = vec![(key.to_string(), bad.to_string())];
        assert!(
            Settings::load_with_env(None, env).is_err(),
            "{key}={bad} accepted"
        );
    }
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[[upstreams]]\nname = \"docker.io\"\nurl = \"https://r\"\nbreaker_threshold = 0"
    )
    .unwrap();
    assert!(Settings::load_with_env(Some(f.path()), no_env()).is_err());
}

#[test]
fn unknown_key_is_an_error() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "[server]\nlisten_typo = \"x\"").unwrap();
    let err = Settings::load_with_env(Some(f.path()), no_env()).unwrap_err();
    assert!(err.to_string().contains("listen_typo"), "{err}");
}

#[test]
fn password_file_is_read() {
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret, "s3cret").unwrap();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[[upstreams]]\nname = \"docker.io\"\nurl = \"https://r\"\nusername = \"u\"\npassword_file = {:?}",
        secret.path()
    )
    .unwrap();
    let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
    assert_eq!(s.upstreams[0].password.as_ref().unwrap().expose(), "s3cret");
}

#[test]
fn listen_addresses_are_socket_addresses() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[server]\nlisten = \"[::1]:5000\"\nhealth_listen = \"localhost:5001\""
    )
    .unwrap();
    let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
    assert_eq!(s.server.listen, addr("[::1]:5000"));
    let health = s.server.health_listen.unwrap();
    assert!(
        health.ip().is_loopback() && health.port() == 5001,
        "{health}"
    );
    let shown = s.to_redacted_toml();
    assert!(shown.contains("listen = \"[::1]:5000\""), "{shown}");

    let env = vec![(
        "BERTH__SERVER__LISTEN".to_string(),
        "0.0.0.0:7000".to_string(),
    )];
    let s = Settings::load_with_env(None, env).unwrap();
    assert_eq!(s.server.listen, addr("0.0.0.0:7000"));
    // None of these reaches a name lookup: each fails on its form or its port.
    for bad in ["5000", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:99999"] {
        let env = vec![("BERTH__SERVER__LISTEN".to_string(), bad.to_string())];
        let err = Settings::load_with_env(None, env).unwrap_err().to_string();
        assert!(err.contains("is not an address and port"), "{bad}: {err}");
    }
}

#[test]
fn urls_are_parsed_at_load() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[server]\nexternal_url = \"https://registry.example:8443/\"\n[[upstreams]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\""
    )
    .unwrap();
    let s = Settings::load_with_env(Some(f.path()), no_env()).unwrap();
    assert_eq!(
        s.server.external_base(),
        Some("https://registry.example:8443")
    );
    assert_eq!(s.upstreams[0].url.host_str(), Some("ghcr.io"));
    assert!(s.to_redacted_toml().contains("url = \"https://ghcr.io/\""));
    assert_eq!(
        Settings::load_with_env(None, no_env())
            .unwrap()
            .server
            .external_base(),
        None
    );

    for bad in ["not a url", "ftp://x"] {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[[upstreams]]\nname = \"x\"\nurl = \"{bad}\"").unwrap();
        assert!(
            Settings::load_with_env(Some(f.path()), no_env()).is_err(),
            "{bad} accepted"
        );
    }
    let env = vec![(
        "BERTH__SERVER__EXTERNAL_URL".to_string(),
        "registry.example".to_string(),
    )];
    assert!(Settings::load_with_env(None, env).is_err());
}

#[test]
fn a_bad_pin_names_itself() {
    for bad in ["alpine:bad tag", "Alpine", "bad_host.io:1/app"] {
        let env = vec![(
            "BERTH__MIRROR__PINNED".to_string(),
            format!("busybox,{bad}"),
        )];
        let err = Settings::load_with_env(None, env).unwrap_err().to_string();
        assert!(err.contains(&format!("image {bad:?}")), "{err}");
    }
}

#[test]
fn relative_paths_in_the_file_are_relative_to_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/hub"), "s3cret\n").unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(
        &file,
        r#"
[storage]
data_dir = "data"
[auth]
signing_key = "keys/token.key"
certificate = "/etc/ssl/token.crt"
htpasswd = "./htpasswd"
[[upstreams]]
name = "docker.io"
url = "https://registry-1.docker.io"
username = "site"
password_file = "secrets/hub"
"#,
    )
    .unwrap();
    let s = Settings::load_with_env(Some(&file), no_env()).unwrap();
    let auth = s.auth.as_ref().unwrap();
    assert_eq!(s.storage.data_dir, dir.path().join("data"));
    assert_eq!(auth.signing_key, dir.path().join("keys/token.key"));
    assert_eq!(
        auth.certificate.as_deref(),
        Some(Path::new("/etc/ssl/token.crt"))
    );
    assert_eq!(
        auth.htpasswd.as_deref(),
        Some(dir.path().join("./htpasswd").as_path())
    );
    // The password file was found relative to the file too, whatever the working directory.
    assert_eq!(s.upstreams[0].password.as_ref().unwrap().expose(), "s3cret");

    // A value from the environment stays relative to the working directory.
    let env = vec![(
        "BERTH__STORAGE__DATA_DIR".to_string(),
        "elsewhere".to_string(),
    )];
    let s = Settings::load_with_env(Some(&file), env).unwrap();
    assert_eq!(s.storage.data_dir, PathBuf::from("elsewhere"));
    // So does the embedded default when the file does not set it.
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:5001\"\n").unwrap();
    let s = Settings::load_with_env(Some(&file), no_env()).unwrap();
    assert_eq!(s.storage.data_dir, PathBuf::from("./berth-data"));
}

#[test]
fn upstream_tls_files_are_read_at_load_and_a_missing_one_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let load = |extra: String| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[[upstreams]]\nname = \"r\"\nurl = \"https://r\"\n{extra}"
        )
        .unwrap();
        Settings::load_with_env(Some(f.path()), no_env())
    };
    let s = load(format!("ca_file = {ca:?}\nmax_concurrent_requests = 4")).unwrap();
    assert_eq!(s.upstreams[0].tls.roots, vec![cert.cert.der().to_vec()]);
    assert_eq!(s.upstreams[0].max_concurrent_requests, 4);
    assert!(s.upstreams[0].insecure_warning().is_none());
    // Only the path is shown, never the material.
    assert!(!s.to_redacted_toml().contains("BEGIN"));
    let missing = dir.path().join("nope.pem");
    let e = load(format!("ca_file = {missing:?}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ca_file") && e.contains("nope.pem"), "{e}");
    let s = load("insecure = true".into()).unwrap();
    let warning = s.upstreams[0].insecure_warning().unwrap();
    assert!(
        warning.contains("\"r\"") && warning.contains("NOT verified"),
        "{warning}"
    );
}

/// A level that is no level (`verbose`) is refused, naming the valid ones, instead of being
/// read as a target name that silences every log line.
#[test]
fn log_level_and_format_are_checked() {
    let load = |log: &str| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[log]\n{log}").unwrap();
        Settings::load_with_env(Some(f.path()), no_env())
    };
    for bad in [
        "level = \"verbose\"",
        "level = \"info,berth=loud\"",
        "level = \"=debug\"",
    ] {
        let err = load(bad).unwrap_err().to_string();
        assert!(err.contains("log.level"), "{bad}: {err}");
        for level in LOG_LEVELS {
            assert!(err.contains(level), "{bad}: {err}");
        }
    }
    for good in [
        "level = \"debug\"",
        "level = \"WARN,berth=debug,actix_web=off\"",
    ] {
        let settings = load(good).unwrap();
        assert_eq!(settings.log.format, LogFormat::Text, "{good}");
    }
    let json = load("level = \"info\"\nformat = \"json\"").unwrap();
    assert_eq!(json.log.format, LogFormat::Json);
    assert!(load("level = \"info\"\nformat = \"xml\"").is_err());
}

#[test]
fn metrics_listener_and_drain_time() {
    let s = Settings::load_with_env(None, no_env()).unwrap();
    assert_eq!(s.server.metrics_listen, None);
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(30));
    let env = vec![
        (
            "BERTH__SERVER__METRICS_LISTEN".to_string(),
            "127.0.0.1:9100".to_string(),
        ),
        (
            "BERTH__SERVER__SHUTDOWN_TIMEOUT".to_string(),
            "5s".to_string(),
        ),
    ];
    let s = Settings::load_with_env(None, env).unwrap();
    assert_eq!(s.server.metrics_listen, Some(addr("127.0.0.1:9100")));
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(5));
}

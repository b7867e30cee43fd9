//! `berth check-config` as an operator meets it: each broken configuration is refused with
//! exit status 2 and a message that names the key, and a good one passes, with its relative
//! paths read from beside the file.

use std::path::Path;
use std::process::Command;

struct Checked {
    status: Option<i32>,
    stderr: String,
}

fn check(dir: &Path, config: &str) -> Checked {
    let file = dir.join("berth.toml");
    std::fs::write(&file, config).unwrap();
    // Run from elsewhere: relative paths must resolve against the file, not the cwd.
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(std::env::temp_dir())
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .output()
        .unwrap();
    Checked {
        status: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn refused(dir: &Path, config: &str, says: &[&str]) {
    let checked = check(dir, config);
    assert_eq!(checked.status, Some(2), "{config}\n{}", checked.stderr);
    for words in says {
        assert!(
            checked.stderr.contains(words),
            "{config}\nexpected {words:?} in:\n{}",
            checked.stderr
        );
    }
}

const AUTH: &str = "[auth]\nsigning_key = \"keys/token.key\"\nhtpasswd = \"htpasswd\"\n";

fn good_files(dir: &Path) {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let keygen = Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(dir)
        .args([
            "keygen",
            "--key",
            "keys/token.key",
            "--cert",
            "keys/token.crt",
        ])
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    std::fs::write(
        dir.join("htpasswd"),
        "alice:$2y$05$abcdefghijklmnopqrstuu5s2v8.xEHbzH4t4dNdRf0W1.uSM2CzW\n",
    )
    .unwrap();
}

#[test]
fn a_good_configuration_passes_with_paths_beside_the_file() {
    let dir = tempfile::tempdir().unwrap();
    good_files(dir.path());
    let config = format!(
        "[server]\ntls_certificate = \"keys/token.crt\"\ntls_key = \"keys/token.key\"\n[storage]\ndata_dir = \"data\"\n{AUTH}[[projects]]\nname = \"team\"\nmembers = {{ alice = \"developer\" }}\n"
    );
    let checked = check(dir.path(), &config);
    assert_eq!(checked.status, Some(0), "{}", checked.stderr);
    assert!(
        checked.stderr.contains("configuration OK"),
        "{}",
        checked.stderr
    );
}

#[test]
fn each_broken_configuration_is_refused_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    // Files that are not there.
    refused(
        dir.path(),
        AUTH,
        &["auth.signing_key", "token.key", "auth.htpasswd"],
    );
    good_files(dir.path());
    // A key file that is not a key.
    std::fs::write(dir.path().join("keys/bad.key"), "not a key").unwrap();
    refused(
        dir.path(),
        "[auth]\nsigning_key = \"keys/bad.key\"\n",
        &["auth.signing_key", "bad.key"],
    );
    // An address without a port.
    refused(
        dir.path(),
        "[server]\nlisten = \"localhost\"\n",
        &["listen", "localhost"],
    );
    // A role that does not exist: the valid ones are listed.
    refused(
        dir.path(),
        &format!("{AUTH}[[projects]]\nname = \"team\"\nmembers = {{ alice = \"owner\" }}\n"),
        &["\"owner\"", "guest", "developer", "maintainer"],
    );
    // Project names that would shadow mirrored names.
    refused(
        dir.path(),
        &format!("{AUTH}[[projects]]\nname = \"library\"\n"),
        &["\"library\"", "shadow"],
    );
    refused(
        dir.path(),
        &format!(
            "{AUTH}[[projects]]\nname = \"ghcr.io\"\n[[upstreams]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n[[upstreams]]\nname = \"github\"\nurl = \"https://ghcr.io\"\n"
        ),
        &["\"ghcr.io\"", "shadow", "github"],
    );
    // A data directory that cannot be made.
    std::fs::write(dir.path().join("plain-file"), "").unwrap();
    refused(
        dir.path(),
        "[storage]\ndata_dir = \"plain-file/data\"\n",
        &["storage.data_dir", "not a directory"],
    );
    // TLS files that are not there, or a key that is not the certificate's.
    refused(
        dir.path(),
        "[server]\ntls_certificate = \"tls/none.crt\"\ntls_key = \"tls/none.key\"\n",
        &["server.tls_certificate", "none.crt"],
    );
    refused(
        dir.path(),
        "[server]\ntls_certificate = \"keys/token.crt\"\ntls_key = \"keys/other.key\"\n",
        &["server.tls_certificate", "other.key"],
    );
    // A level that is no level (berth would then log nothing at all, errors included).
    refused(
        dir.path(),
        "[log]\nlevel = \"verbose\"\n",
        &["verbose", "trace", "debug", "info", "warn", "error"],
    );
    // A duration that is no duration.
    refused(
        dir.path(),
        "[server]\nread_timeout = \"thirty seconds\"\n",
        &["read_timeout"],
    );
    // A typo in a key.
    refused(
        dir.path(),
        "[server]\nlisten_on = \"127.0.0.1:5000\"\n",
        &["listen_on"],
    );
}

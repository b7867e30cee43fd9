//! The `berth` command line run against a test berth: its configuration and data directory
//! (a running berth answers through its admin socket), and what its output says.

use std::path::Path;
use std::process::Output;

use super::Berth;

/// `berth ARGS` with `config` and `berth`'s data directory.
pub fn berth_cli(berth: &Berth, config: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(&berth.data_dir)
        .args(args)
        .output()
        .unwrap()
}

/// [`berth_cli`] that must succeed; its standard output.
pub fn berth_ok(berth: &Berth, config: &Path, args: &[&str]) -> String {
    let output = berth_cli(berth, config, args);
    assert!(
        output.status.success(),
        "berth {args:?}: {}\nlog:\n{}",
        String::from_utf8_lossy(&output.stderr),
        berth.log()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether `berth` holds a blob file for `digest`.
pub fn on_disk(berth: &Berth, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    berth.blob_files().iter().any(|f| f.ends_with(hex))
}

/// The number after `label` on its own line of `text`.
pub fn number(text: &str, label: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
}

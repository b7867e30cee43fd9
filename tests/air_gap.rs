//! The air gap end to end, berth on both sides: `berth export` from a connected berth (a
//! mirrored multi-platform image and a private project's image), `berth import` into a fresh
//! berth that is offline and whose upstream is gone, and pulls there byte for byte.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::images::{self, Flavor};
use common::private::{creds, skopeo_push, AuthFiles};
use common::upstream::{UpstreamRegistry, SEEDER};
use common::{assert_dir_matches, config_for, try_pull, Berth};

const MIB: usize = 1024 * 1024;

/// `berth ARGS…` on the configuration `config`, with `stdin` given.
fn berth_cli(config: &Path, data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "berth {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn exported_from_one_berth_imported_into_an_offline_one_pulls_byte_for_byte() {
    let mut upstream = UpstreamRegistry::start(vec![(SEEDER.0, SEEDER.1, "", "pull,push,delete")]);
    let app = images::multi_arch(Flavor::Oci, 710, &[MIB, 200_000]);
    upstream.push("library/app", "1", &app).await;
    let auth = AuthFiles::create();
    let config = config_for(&upstream.url(), "5m", &auth.config(""));
    let connected = Berth::start(&config);
    let tool = images::image(Flavor::Oci, 711, &[MIB / 2, 4096], "amd64");
    let pushed = skopeo_push(&connected, &tool, "team/tool:1", "alice");
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    // The connected side: one bundle for the mirror, one for the project.
    let work = tempfile::tempdir().unwrap();
    let config_file = work.path().join("berth.toml");
    std::fs::write(&config_file, &config).unwrap();
    let (mirror_tar, team_tar) = (work.path().join("mirror.tar"), work.path().join("team.tar"));
    let from = ["--from", connected.url.as_str()];
    let export = |image: &str, file: &Path, extra: &[&str], stdin: &str| {
        let mut args = vec!["export", image, "-o", file.to_str().unwrap()];
        args.extend(from);
        args.extend(extra);
        berth_cli(&config_file, &connected.data_dir, &args, stdin)
    };
    export("library/app:1", &mirror_tar, &[], "");
    export(
        "team/tool:1",
        &team_tar,
        &["--user", "bob", "--password-stdin"],
        "bob-pw\n",
    );
    drop(connected);
    upstream.stop();

    // The site: a fresh berth that never reaches the upstream.
    let offline = format!("[mirror]\noffline = true\n{config}");
    let site = Berth::start(&offline);
    let site_config = work.path().join("site.toml");
    std::fs::write(&site_config, &offline).unwrap();
    let import = |file: &Path, extra: &[&str]| {
        let mut args = vec!["import", file.to_str().unwrap()];
        args.extend(extra);
        let output = berth_cli(&site_config, &site.data_dir, &args, "");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let text = import(&mirror_tar, &[]);
    assert!(text.contains("docker.io/library/app:1"), "{text}");
    // The project's image comes back under its own name, not team/team/tool.
    let text = import(&team_tar, &["--into", "team"]);
    assert!(text.contains("as team/tool:1"), "{text}");

    let pulled = try_pull(&site, "library/app:1", None).unwrap();
    assert_dir_matches(pulled.path(), &app.children[0]);
    assert!(try_pull(&site, "team/tool:1", None).is_err());
    let pulled = try_pull(&site, "team/tool:1", Some(&creds("alice"))).unwrap();
    assert_dir_matches(pulled.path(), &tool);
}

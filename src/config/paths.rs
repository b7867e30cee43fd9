//! Relative paths in a configuration file are relative to the file's directory, not to
//! whatever directory berth was started in: systemd starts services in `/`, so a
//! `signing_key = "keys/token.key"` next to `/etc/berth/berth.toml` must mean
//! `/etc/berth/keys/token.key`.
//!
//! Only values the file itself gives move: a path from the embedded defaults
//! (`./berth-data`), an environment variable or a flag stays relative to the working
//! directory, as a shell user expects.

use std::path::{Path, PathBuf};

use config::Config;

use super::Settings;

/// One path-valued setting: its key as the file spells it (`auth.signing_key`, or
/// `upstreams.password_file` for every upstream entry) and the value to resolve.
pub(super) struct PathSetting<'a> {
    pub key: &'static str,
    /// The entry's position, for keys inside an array of tables (`[[upstreams]]`).
    pub index: Option<usize>,
    pub path: &'a mut PathBuf,
}

/// Rewrites the relative paths that `file` (the configuration file alone) sets to the values
/// they hold in `settings` so that they are relative to `base`, the file's directory.
pub(super) fn resolve_relative_to_file(settings: &mut Settings, file: &Config, base: &Path) {
    for setting in settings.path_settings() {
        if setting.path.is_absolute() {
            continue;
        }
        let in_file = file
            .get_string(&key_path(setting.key, setting.index))
            .is_ok_and(|value| Path::new(&value) == setting.path.as_path());
        if in_file {
            *setting.path = base.join(&*setting.path);
        }
    }
}

/// `key` as a `config` path expression: `upstreams[1].password_file` for an entry of an
/// array of tables.
fn key_path(key: &str, index: Option<usize>) -> String {
    match (index, key.split_once('.')) {
        (Some(index), Some((array, rest))) => format!("{array}[{index}].{rest}"),
        _ => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::{File, FileFormat};

    #[test]
    fn key_paths_reach_nested_keys_and_array_entries() {
        let file = Config::builder()
            .add_source(File::from_str(
                r#"
                [auth]
                signing_key = "keys/a.key"
                [[upstreams]]
                name = "one"
                [[upstreams]]
                name = "two"
                password_file = "secrets/two"
                "#,
                FileFormat::Toml,
            ))
            .build()
            .unwrap();
        let get = |key, index| file.get_string(&key_path(key, index)).ok();
        assert_eq!(get("auth.signing_key", None).as_deref(), Some("keys/a.key"));
        assert_eq!(get("auth.htpasswd", None), None);
        assert_eq!(get("upstreams.password_file", Some(0)), None);
        assert_eq!(
            get("upstreams.password_file", Some(1)).as_deref(),
            Some("secrets/two")
        );
        assert_eq!(get("upstreams.password_file", Some(2)), None);
    }
}

//! `[[projects]] retention = { keep_last = 10, untagged_after = "7d", protect = ["v*"] }`:
//! what a project keeps when `berth retention` (or a scheduled collection) applies its rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Per repository, the tags pushed most recently that are kept; older ones are deleted.
    /// Protected tags are always kept and do not count. Unset: every tag is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Manifests no tag names (and that no kept index or kept image holds, as a child or a
    /// referrer) are deleted once pushed this long ago. Unset: they are kept.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub untagged_after: Option<Duration>,
    /// Tags matching any of these globs (`*` any run of characters, `?` one) are always kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect: Vec<String>,
}

impl RetentionSettings {
    /// Whether `tag` matches one of the `protect` globs.
    pub fn protects(&self, tag: &str) -> bool {
        self.protect
            .iter()
            .any(|pattern| glob_matches(pattern, tag))
    }
}

/// `*` matches any run of characters (none too), `?` exactly one, anything else itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inline table of the documentation loads, round-trips through `check-config`'s
    /// output, and a typo in it fails the load.
    #[test]
    fn retention_loads_from_a_project() {
        use std::io::Write;
        let project = "[auth]\nsigning_key = \"k.pem\"\n[[projects]]\nname = \"team\"\n";
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "{project}retention = {{ keep_last = 10, untagged_after = \"7d\", protect = [\"v*\"] }}"
        )
        .unwrap();
        let settings = crate::config::Settings::load_with_env(Some(f.path()), vec![]).unwrap();
        let rules = settings.projects[0].retention.clone().unwrap();
        assert_eq!(rules.keep_last, Some(10));
        assert_eq!(rules.untagged_after, Some(Duration::from_secs(7 * 86_400)));
        assert!(rules.protects("v1.2") && !rules.protects("latest"));
        assert!(settings
            .to_redacted_toml()
            .contains("untagged_after = \"7days\""));

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "{project}retention = {{ keep_lats = 10 }}").unwrap();
        assert!(crate::config::Settings::load_with_env(Some(f.path()), vec![]).is_err());
    }

    #[test]
    fn globs() {
        for (pattern, text, expected) in [
            ("v*", "v1", true),
            ("v*", "v", true),
            ("v*", "latest", false),
            ("*", "", true),
            ("release-?", "release-1", true),
            ("release-?", "release-10", false),
            ("*-stable", "1.2-stable", true),
            ("*-stable", "1.2-stable-rc", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("latest", "latest", true),
            ("latest", "latest2", false),
        ] {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} ~ {text}");
        }
    }
}

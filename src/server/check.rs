//! `berth check-config`: what loading the configuration cannot see (files, the data
//! directory, upstream clients), checked with the same constructors startup uses, so that a
//! configuration this passes does not fail at start, and one it refuses says which key.
//!
//! It binds nothing and does not open the index (a running berth holds its lock).

use std::path::Path;

use crate::auth::keys::SigningKey;
use crate::auth::users::Htpasswd;
use crate::clock::Clock;
use crate::config::Settings;
use crate::upstream::Upstreams;

/// What `check` found: problems stop a start; warnings are worth a look.
#[derive(Debug, Default)]
pub struct Findings {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Reads every file the configuration names and builds the upstream clients. Blocks.
pub fn check(settings: &Settings) -> Findings {
    let mut findings = Findings::default();
    if let Err(e) = super::tls::Tls::from_settings(&settings.server) {
        findings.problems.push(format!(
            "server.tls_certificate / tls_key / tls_client_ca: {e}"
        ));
    }
    if let Some(auth) = &settings.auth {
        if let Err(e) = SigningKey::load(&auth.signing_key, auth.certificate.as_deref()) {
            let key = match auth.certificate {
                Some(_) => "auth.signing_key / auth.certificate",
                None => "auth.signing_key",
            };
            findings.problems.push(format!("{key}: {e}"));
        }
        match auth.htpasswd.as_deref().map(Htpasswd::open) {
            Some(Ok(users)) => {
                for project in &settings.projects {
                    for member in project.members.keys() {
                        if !users.knew(member) {
                            findings.warnings.push(format!(
                                "projects.{}.members: {member:?} is not in auth.htpasswd (they cannot log in)",
                                project.name
                            ));
                        }
                    }
                }
            }
            Some(Err(e)) => findings.problems.push(format!("auth.htpasswd: {e}")),
            None if !settings.projects.is_empty() => findings.warnings.push(
                "auth.htpasswd is not set: nobody can log in to push into the projects".into(),
            ),
            None => {}
        }
    }
    if let Err(e) = Upstreams::new(
        &settings.upstreams,
        settings.mirror.offline,
        &Clock::system(),
    ) {
        findings.problems.push(format!("upstreams: {e}"));
    }
    if let Err(problem) = check_data_dir(&settings.storage.data_dir) {
        findings
            .problems
            .push(format!("storage.data_dir: {problem}"));
    }
    findings
}

/// The data directory exists and is a writable directory, or can be made: its nearest
/// existing ancestor is.
fn check_data_dir(path: &Path) -> Result<(), String> {
    let existing = path
        .ancestors()
        .find(|dir| dir.as_os_str().is_empty() || dir.exists())
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }
        })
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    rustix::fs::access(existing, rustix::fs::Access::WRITE_OK).map_err(|e| {
        let made = if existing == path {
            ""
        } else {
            " (to create it in)"
        };
        format!(
            "{}{made} is not writable by this user: {e}",
            existing.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::io::Write;

    fn load(text: &str, dir: &Path) -> Settings {
        let file = dir.join("berth.toml");
        std::fs::File::create(&file)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap();
        Settings::load_with_env(Some(&file), Vec::<(String, String)>::new()).unwrap()
    }

    #[test]
    fn missing_files_are_problems_that_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let settings = load(
            "[storage]\ndata_dir = \"data\"\n[auth]\nsigning_key = \"keys/none.key\"\nhtpasswd = \"htpasswd\"\n",
            dir.path(),
        );
        let findings = check(&settings);
        assert_eq!(findings.problems.len(), 2, "{findings:?}");
        assert!(findings.problems[0].starts_with("auth.signing_key: "));
        assert!(findings.problems[0].contains("none.key"));
        assert!(findings.problems[1].starts_with("auth.htpasswd: "));
    }

    #[test]
    fn a_good_configuration_has_no_problems_and_unknown_members_are_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        let pem = crate::auth::keys::generate_ec_pem().unwrap();
        std::fs::write(dir.path().join("keys/token.key"), pem).unwrap();
        let hash = crate::auth::users::hash_password("pw").unwrap();
        std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
        let settings = load(
            "[storage]\ndata_dir = \"data\"\n[auth]\nsigning_key = \"keys/token.key\"\nhtpasswd = \"htpasswd\"\n[[projects]]\nname = \"team\"\nmembers = { alice = \"developer\", bob = \"guest\" }\n",
            dir.path(),
        );
        let findings = check(&settings);
        assert!(findings.problems.is_empty(), "{findings:?}");
        assert_eq!(findings.warnings.len(), 1, "{findings:?}");
        assert!(findings.warnings[0].contains("\"bob\""));
    }

    #[test]
    fn a_data_dir_under_a_file_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(check_data_dir(&dir.path().join("file/data")).is_err());
        assert!(check_data_dir(&dir.path().join("new/data")).is_ok());
        assert!(check_data_dir(dir.path()).is_ok());
        assert!(check_data_dir(Path::new("relative-dir")).is_ok());
    }
}

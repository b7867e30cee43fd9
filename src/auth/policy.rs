//! Who may do what: the one place that decides, so that the token service (what a token
//! grants) and request handling (what a request needs) cannot disagree.
//!
//! Two namespaces share one name space. A repository whose first component is a configured
//! project is berth's own: members act by role, admins do everything, others may pull only a
//! public project. Every other name is the read-only mirror: anyone authenticated pulls,
//! anonymous clients pull when `anonymous_pull` allows, and nobody pushes or deletes there.

use std::collections::HashSet;

use super::scope::{self, Action, ResourceType, Scope};
use crate::config::{AuthSettings, ProjectSettings, Projects, Role};

const NOTHING: &[Action] = &[];
const PULL_ONLY: &[Action] = &[Action::Pull];
const PULL_PUSH: &[Action] = &[Action::Pull, Action::Push];
const EVERYTHING: &[Action] = &[Action::Pull, Action::Push, Action::Delete];
const CATALOG: &[Action] = &[Action::All];

fn role_actions(role: Role) -> &'static [Action] {
    match role {
        Role::Guest => PULL_ONLY,
        Role::Developer => PULL_PUSH,
        Role::Maintainer => EVERYTHING,
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    anonymous_pull: bool,
    admins: HashSet<String>,
    projects: Projects,
}

impl Policy {
    pub fn new(auth: &AuthSettings, projects: &Projects) -> Self {
        Policy {
            anonymous_pull: auth.anonymous_pull,
            admins: auth.admins.iter().cloned().collect(),
            projects: projects.clone(),
        }
    }

    /// The project a repository belongs to, if it is a private-project repository rather
    /// than part of the mirror namespace.
    pub fn is_project_repo(&self, name: &str) -> Option<&ProjectSettings> {
        self.projects.project_of(name)
    }

    /// Everything `subject` (`None`: anonymous) may do to a resource, whatever was asked.
    pub fn permitted(
        &self,
        subject: Option<&str>,
        resource_type: &ResourceType,
        name: &str,
    ) -> &'static [Action] {
        let may_read = subject.is_some() || self.anonymous_pull;
        match resource_type {
            // The catalog is filtered per caller where it is served; reaching it is a read.
            ResourceType::Registry if name == scope::CATALOG => {
                if may_read {
                    CATALOG
                } else {
                    NOTHING
                }
            }
            ResourceType::Repository => match self.is_project_repo(name) {
                Some(project) => {
                    if let Some(user) = subject {
                        if self.admins.contains(user) {
                            return EVERYTHING;
                        }
                        if let Some(&role) = project.members.get(user) {
                            return role_actions(role);
                        }
                    }
                    if project.public && may_read {
                        PULL_ONLY
                    } else {
                        NOTHING
                    }
                }
                None if may_read => PULL_ONLY,
                None => NOTHING,
            },
            // Unknown types, and classed ones like `repository(plugin)`, grant nothing.
            _ => NOTHING,
        }
    }

    /// What a token may grant for `asked`: the asked actions that are permitted, never more
    /// (`*` asks for everything permitted). `None` when that is nothing.
    ///
    /// A push or delete asked on the mirror namespace grants nothing at all, not even pull: the
    /// client is pushing to a repository that is in no project (a mistyped project name, say),
    /// and with pull it would probe upstream for its layers, telling upstream the digests of
    /// what it meant to push.
    pub fn grant(&self, subject: Option<&str>, asked: &Scope) -> Option<Scope> {
        let writes = asked.actions.iter().any(|a| a.writes());
        if writes
            && asked.resource_type == ResourceType::Repository
            && self.is_project_repo(&asked.name).is_none()
        {
            return None;
        }
        let permitted = self.permitted(subject, &asked.resource_type, &asked.name);
        let actions: Vec<Action> = if asked.actions.contains(&Action::All) {
            permitted.to_vec()
        } else {
            asked
                .actions
                .iter()
                .copied()
                .filter(|a| permitted.contains(a))
                .collect()
        };
        if actions.is_empty() {
            return None;
        }
        Some(Scope::new(
            asked.resource_type.clone(),
            asked.name.clone(),
            actions,
        ))
    }

    /// Whether `subject` may take `action` on repository `repo`.
    pub fn may(&self, subject: Option<&str>, repo: &str, action: Action) -> bool {
        self.permitted(subject, &ResourceType::Repository, repo)
            .contains(&action)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::Action::{All, Delete, Pull, Push};
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    pub(crate) fn settings(anonymous_pull: bool) -> AuthSettings {
        AuthSettings {
            service: "berth".into(),
            issuer: "berth".into(),
            signing_key: PathBuf::from("k.pem"),
            certificate: None,
            htpasswd: None,
            anonymous_pull,
            admins: vec!["root".into()],
            token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(3600),
            login: Default::default(),
        }
    }

    pub(crate) fn projects() -> Projects {
        let members: BTreeMap<String, Role> = [
            ("gina".to_string(), Role::Guest),
            ("dave".to_string(), Role::Developer),
            ("mona".to_string(), Role::Maintainer),
        ]
        .into_iter()
        .collect();
        Projects::new(&[
            ProjectSettings {
                name: "secret".into(),
                public: false,
                members: members.clone(),
                retention: None,
            },
            ProjectSettings {
                name: "open".into(),
                public: true,
                members,
                retention: None,
            },
        ])
    }

    fn actions(policy: &Policy, subject: Option<&str>, repo: &str) -> Vec<Action> {
        policy
            .permitted(subject, &ResourceType::Repository, repo)
            .to_vec()
    }

    #[test]
    fn project_repos_are_recognized_by_their_first_component() {
        let policy = Policy::new(&settings(true), &projects());
        assert_eq!(policy.is_project_repo("secret/app").unwrap().name, "secret");
        assert_eq!(
            policy.is_project_repo("secret/a/b/c").unwrap().name,
            "secret"
        );
        assert_eq!(policy.is_project_repo("secret").unwrap().name, "secret");
        assert!(policy.is_project_repo("secretive/app").is_none());
        assert!(policy.is_project_repo("library/secret").is_none());
        assert!(policy.is_project_repo("docker.io/secret/app").is_none());
    }

    #[test]
    fn matrix() {
        let pull = vec![Pull];
        let push = vec![Pull, Push];
        let all = vec![Pull, Push, Delete];
        let none: Vec<Action> = vec![];
        // (anonymous_pull, subject, repo, expected)
        let cases: Vec<(bool, Option<&str>, &str, &Vec<Action>)> = vec![
            // private project
            (true, None, "secret/app", &none),
            (true, Some("gina"), "secret/app", &pull),
            (true, Some("dave"), "secret/app", &push),
            (true, Some("mona"), "secret/app", &all),
            (true, Some("root"), "secret/app", &all),
            (true, Some("stranger"), "secret/app", &none),
            // public project
            (true, None, "open/app", &pull),
            (false, None, "open/app", &none),
            (false, Some("stranger"), "open/app", &pull),
            (true, Some("gina"), "open/app", &pull),
            (true, Some("dave"), "open/app", &push),
            (true, Some("mona"), "open/app", &all),
            (false, Some("root"), "open/app", &all),
            // mirror namespace: read-only for everyone, admins included
            (true, None, "library/alpine", &pull),
            (false, None, "library/alpine", &none),
            (false, Some("stranger"), "ghcr.io/org/tool", &pull),
            (true, Some("dave"), "library/alpine", &pull),
            (true, Some("mona"), "library/alpine", &pull),
            (true, Some("root"), "library/alpine", &pull),
        ];
        for (anonymous_pull, subject, repo, expected) in cases {
            let policy = Policy::new(&settings(anonymous_pull), &projects());
            assert_eq!(
                &actions(&policy, subject, repo),
                expected,
                "anonymous_pull={anonymous_pull} subject={subject:?} repo={repo}"
            );
            for action in [Pull, Push, Delete] {
                assert_eq!(
                    policy.may(subject, repo, action),
                    expected.contains(&action),
                    "{subject:?} {action} {repo}"
                );
            }
        }
    }

    #[test]
    fn catalog_and_unknown_types() {
        let open = Policy::new(&settings(true), &projects());
        let closed = Policy::new(&settings(false), &projects());
        assert_eq!(
            open.permitted(None, &ResourceType::Registry, "catalog"),
            [All]
        );
        assert!(closed
            .permitted(None, &ResourceType::Registry, "catalog")
            .is_empty());
        assert_eq!(
            closed.permitted(Some("gina"), &ResourceType::Registry, "catalog"),
            [All]
        );
        assert!(open
            .permitted(Some("root"), &ResourceType::Registry, "other")
            .is_empty());
        assert!(open
            .permitted(Some("root"), &"repository(plugin)".into(), "secret/app")
            .is_empty());
        assert!(open
            .permitted(Some("root"), &"blob".into(), "secret/app")
            .is_empty());
    }

    #[test]
    fn grants_are_the_intersection_of_asked_and_permitted() {
        let policy = Policy::new(&settings(true), &projects());
        let asked = Scope::repository("secret/app", &[Pull, Push, Delete]);
        assert_eq!(
            policy.grant(Some("dave"), &asked),
            Some(Scope::repository("secret/app", &[Pull, Push]))
        );
        // Never more than asked, even for an admin.
        assert_eq!(
            policy.grant(Some("root"), &Scope::repository("secret/app", &[Pull])),
            Some(Scope::repository("secret/app", &[Pull]))
        );
        assert_eq!(policy.grant(Some("stranger"), &asked), None);
        assert_eq!(policy.grant(None, &asked), None);
        // Push to the mirror is never granted, and asking for it grants no pull either.
        assert_eq!(
            policy.grant(
                Some("root"),
                &Scope::repository("library/alpine", &[Push, Pull])
            ),
            None
        );
        assert_eq!(
            policy.grant(Some("root"), &Scope::repository("library/alpine", &[Pull])),
            Some(Scope::repository("library/alpine", &[Pull]))
        );
        assert_eq!(
            policy.grant(Some("root"), &Scope::repository("library/alpine", &[Push])),
            None
        );
        // Unknown actions are dropped.
        assert_eq!(
            policy.grant(
                Some("mona"),
                &"repository:secret/app:pull,own".parse().unwrap()
            ),
            Some(Scope::repository("secret/app", &[Pull]))
        );
        // `*` asks for everything permitted, spelled out.
        assert_eq!(
            policy.grant(Some("mona"), &Scope::repository("secret/app", &[All])),
            Some(Scope::repository("secret/app", &[Pull, Push, Delete]))
        );
        assert_eq!(
            policy.grant(None, &Scope::repository("open/app", &[All])),
            Some(Scope::repository("open/app", &[Pull]))
        );
        assert_eq!(
            policy.grant(None, &Scope::catalog()),
            Some(Scope::catalog())
        );
        assert_eq!(
            policy.grant(
                Some("gina"),
                &Scope::new(ResourceType::Registry, "catalog", [Pull])
            ),
            None
        );
    }
}

//! Scopes, the unit clients ask for and tokens grant: `type:name:action,action`.
//!
//! The name itself may contain `:` (a host with a port, `localhost:5000/team/app`), so the
//! type ends at the first colon and the actions start after the last one. The same type
//! serializes as a token's `access` entry (`{"type","name","actions"}`), so what was asked,
//! what was granted and what is checked are one shape.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::AuthError;

/// The one `registry` resource berth grants: `registry:catalog:*`.
pub const CATALOG: &str = "catalog";

/// The kind of resource a scope names. Distribution's classed form (`repository(plugin)`) and
/// types berth does not know parse, and are carried as asked, but grant nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourceType {
    Repository,
    Registry,
    Other(String),
}

impl ResourceType {
    pub fn as_str(&self) -> &str {
        match self {
            ResourceType::Repository => "repository",
            ResourceType::Registry => "registry",
            ResourceType::Other(other) => other,
        }
    }

    /// The bytes it owns on the heap.
    pub fn heap_bytes(&self) -> usize {
        match self {
            ResourceType::Other(other) => other.len(),
            _ => 0,
        }
    }
}

impl From<&str> for ResourceType {
    fn from(text: &str) -> Self {
        match text {
            "repository" => ResourceType::Repository,
            "registry" => ResourceType::Registry,
            other => ResourceType::Other(other.to_owned()),
        }
    }
}

impl PartialEq<str> for ResourceType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As its name: the `type` of a token's `access` entry, which Distribution reads.
impl Serialize for ResourceType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ResourceType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ResourceType::from(&*text))
    }
}

/// What a scope asks for or grants on its resource. Serialized as Distribution spells it
/// (`"pull"`, `"push"`, `"delete"`, `"*"`) in `access` claims, which Distribution reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "pull")]
    Pull,
    #[serde(rename = "push")]
    Push,
    #[serde(rename = "delete")]
    Delete,
    /// Every action (the catalog's only action; for a repository, "whatever I may").
    #[serde(rename = "*")]
    All,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::All => "*",
        }
    }

    /// A known action's name; `None` for any other (a client may ask for actions berth never
    /// grants, so they are not an error, just nothing).
    pub fn from_name(name: &str) -> Option<Self> {
        [Action::Pull, Action::Push, Action::Delete, Action::All]
            .into_iter()
            .find(|a| a.as_str() == name)
    }

    /// Whether it changes the repository (what the mirror namespace never takes).
    pub fn writes(self) -> bool {
        matches!(self, Action::Push | Action::Delete)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    pub name: String,
    pub actions: Vec<Action>,
}

impl Scope {
    pub fn new(
        resource_type: impl Into<ResourceType>,
        name: impl Into<String>,
        actions: impl IntoIterator<Item = Action>,
    ) -> Self {
        let mut scope = Scope {
            resource_type: resource_type.into(),
            name: name.into(),
            actions: Vec::new(),
        };
        for action in actions {
            scope.add_action(action);
        }
        scope
    }

    pub fn repository(name: impl Into<String>, actions: &[Action]) -> Self {
        Scope::new(ResourceType::Repository, name, actions.iter().copied())
    }

    /// `registry:catalog:*`
    pub fn catalog() -> Self {
        Scope::new(ResourceType::Registry, CATALOG, [Action::All])
    }

    pub fn has_action(&self, action: Action) -> bool {
        self.actions
            .iter()
            .any(|&a| a == action || a == Action::All)
    }

    fn add_action(&mut self, action: Action) {
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    fn same_resource(&self, other: &Scope) -> bool {
        self.resource_type == other.resource_type && self.name == other.name
    }
}

impl FromStr for Scope {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| AuthError::InvalidScope {
            scope: text.to_owned(),
            reason,
        };
        let (resource_type, rest) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected type:name:actions"))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected type:name:actions"))?;
        if resource_type.is_empty() || !resource_type.bytes().all(is_type_byte) {
            return Err(invalid("bad resource type"));
        }
        if name.is_empty() || !name.bytes().all(is_name_byte) {
            return Err(invalid("bad resource name"));
        }
        let mut scope = Scope::new(resource_type, name, []);
        for action in actions.split(',').filter(|a| !a.is_empty()) {
            if !action.bytes().all(is_action_byte) {
                return Err(invalid("bad action"));
            }
            // Unknown actions are well-formed but grant nothing: dropped here.
            if let Some(action) = Action::from_name(action) {
                scope.add_action(action);
            }
        }
        Ok(scope)
    }
}

/// `repository`, `registry`, and Distribution's classed form `repository(plugin)`.
fn is_type_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'(' | b')' | b'_' | b'-' | b'.')
}

/// Repository names, with a host (`[::1]:5000` too) in front; nothing that could break out of
/// a quoted challenge parameter or a log line.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'[' | b']')
}

fn is_action_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'*' | b'_' | b'-')
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.resource_type,
            self.name,
            self.actions
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}

/// Most resources one token request may ask for. Clients ask for one or two (a push asks pull
/// on each repository it mounts blobs from as well, a handful at most); each scope granted is
/// carried in the token, in every request that presents it and in the verified-token cache, so
/// hundreds of them are a cost and no client's need.
pub const MAX_SCOPES: usize = 64;
/// Most `scope` entries one request may list before merging (repeats of one resource included).
const MAX_SCOPE_ENTRIES: usize = 4 * MAX_SCOPES;

/// Parses every `scope` value of a request: GET repeats the parameter, the OAuth2 POST form
/// separates scopes with spaces, and either may do both. Scopes on the same resource are
/// merged, in the order first asked. More than [`MAX_SCOPES`] resources is an error.
pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Scope>, AuthError> {
    let mut scopes: Vec<Scope> = Vec::new();
    for (entry, text) in values
        .into_iter()
        .flat_map(str::split_whitespace)
        .enumerate()
    {
        if entry >= MAX_SCOPE_ENTRIES {
            return Err(AuthError::TooManyScopes { limit: MAX_SCOPES });
        }
        let scope: Scope = text.parse()?;
        if let Some(existing) = scopes.iter_mut().find(|s| s.same_resource(&scope)) {
            for action in scope.actions {
                existing.add_action(action);
            }
        } else if scopes.len() == MAX_SCOPES {
            return Err(AuthError::TooManyScopes { limit: MAX_SCOPES });
        } else {
            scopes.push(scope);
        }
    }
    Ok(scopes)
}

/// Several scopes as one space-separated string (a challenge's `scope` parameter).
pub fn join(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(Scope::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::Action::{All, Delete, Pull, Push};
    use super::*;

    fn parse(text: &str) -> Scope {
        text.parse().unwrap()
    }

    #[test]
    fn simple_scopes() {
        let scope = parse("repository:library/alpine:pull");
        assert_eq!(scope, Scope::repository("library/alpine", &[Pull]));
        assert_eq!(parse("registry:catalog:*"), Scope::catalog());
        assert_eq!(
            parse("repository:team/app:pull,push,delete").actions,
            [Pull, Push, Delete]
        );
    }

    #[test]
    fn names_with_hosts_and_ports() {
        let scope = parse("repository:localhost:5000/team/app:pull,push");
        assert_eq!(scope.resource_type, ResourceType::Repository);
        assert_eq!(scope.name, "localhost:5000/team/app");
        assert_eq!(scope.actions, [Pull, Push]);
        assert_eq!(
            parse("repository:ghcr.io/org/tool:pull").name,
            "ghcr.io/org/tool"
        );
        assert_eq!(parse("repository:[::1]:5000/x:pull").name, "[::1]:5000/x");
        // A name that looks like actions is still the name.
        let scope = parse("repository:pull:push");
        assert_eq!(
            (scope.name.as_str(), &scope.actions[..]),
            ("pull", &[Push][..])
        );
        assert_eq!(
            parse("repository(plugin):vieux/sshfs:pull").resource_type,
            ResourceType::Other("repository(plugin)".into())
        );
    }

    #[test]
    fn actions_are_deduplicated_and_empty_and_unknown_ones_dropped() {
        assert_eq!(parse("repository:a:pull,,pull,push,").actions, [Pull, Push]);
        assert!(parse("repository:a:").actions.is_empty());
        assert_eq!(parse("repository:a:own,pull,x-y").actions, [Pull]);
        assert_eq!(parse("registry:catalog:*").actions, [All]);
    }

    #[test]
    fn malformed_scopes_are_errors() {
        for bad in [
            "",
            "repository",
            "repository:alpine",
            ":alpine:pull",
            "repository::pull",
            "repository:al pine:pull",
            "repository:a\"b:pull",
            "repository:a:pu\"ll",
            "repo sitory:a:pull",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn render_roundtrips() {
        for text in [
            "repository:localhost:5000/team/app:pull,push",
            "registry:catalog:*",
            "repository:a/b/c:delete",
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
    }

    #[test]
    fn several_scopes_per_request() {
        let scopes = parse_all([
            "repository:team/app:pull repository:team/base:pull",
            "repository:team/app:push",
            "registry:catalog:*",
        ])
        .unwrap();
        assert_eq!(
            scopes,
            [
                Scope::repository("team/app", &[Pull, Push]),
                Scope::repository("team/base", &[Pull]),
                Scope::catalog(),
            ]
        );
        assert_eq!(
            join(&scopes),
            "repository:team/app:pull,push repository:team/base:pull registry:catalog:*"
        );
        assert!(parse_all(["repository:ok:pull broken"]).is_err());
        assert!(parse_all(std::iter::empty()).unwrap().is_empty());
    }

    #[test]
    fn scope_count_is_limited() {
        let names: Vec<String> = (0..=MAX_SCOPES)
            .map(|i| format!("repository:r{i}:pull"))
            .collect();
        let at_limit = parse_all(names[..MAX_SCOPES].iter().map(String::as_str)).unwrap();
        assert_eq!(at_limit.len(), MAX_SCOPES);
        assert!(matches!(
            parse_all(names.iter().map(String::as_str)),
            Err(AuthError::TooManyScopes { limit: MAX_SCOPES })
        ));
        // In one space-separated value too (the POST form).
        let joined = names.join(" ");
        assert!(parse_all([joined.as_str()]).is_err());
        // Repeats of one resource merge, but a flood of them is refused all the same.
        let few = vec!["repository:a:pull"; MAX_SCOPES * 2];
        assert_eq!(parse_all(few).unwrap().len(), 1);
        let flood = vec!["repository:a:pull"; MAX_SCOPE_ENTRIES + 1];
        assert!(parse_all(flood).is_err());
    }

    #[test]
    fn access_entries_serialize_like_distribution() {
        let json = serde_json::to_value(Scope::repository("a/b", &[Pull])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "repository", "name": "a/b", "actions": ["pull"]})
        );
        let every = Scope::repository("a/b", &[Pull, Push, Delete, All]);
        let text = serde_json::to_string(&every).unwrap();
        assert_eq!(
            text,
            r#"{"type":"repository","name":"a/b","actions":["pull","push","delete","*"]}"#
        );
        assert_eq!(serde_json::from_str::<Scope>(&text).unwrap(), every);
        // A type berth does not know survives the round trip as it was.
        let classed = parse("repository(plugin):vieux/sshfs:pull");
        let text = serde_json::to_string(&classed).unwrap();
        assert!(text.contains(r#""type":"repository(plugin)""#), "{text}");
        assert_eq!(serde_json::from_str::<Scope>(&text).unwrap(), classed);
    }
}

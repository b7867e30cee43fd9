//! What an exported image is called: the path it is read from on the berth (as written, so
//! berth resolves it as it would for a pull) and the full name written into `index.json`
//! (`docker.io/library/alpine:3.20`), which is what `skopeo copy oci-archive:FILE:NAME`, the
//! importer and containerd look it up by.

use std::collections::BTreeSet;

use crate::oci::image::ImageReference;
use crate::oci::Reference;

/// The upstream names without a host belong to, and where Docker Hub keeps official images.
const DEFAULT_REGISTRY: &str = "docker.io";

/// Knows which first components are berth's own projects, and the berth's host.
#[derive(Debug, Clone)]
pub struct Naming {
    projects: BTreeSet<String>,
    /// `host[:port]` of the berth read from: a project image's registry.
    berth_host: String,
}

/// One image to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The repository as the berth is asked for it (`/v2/<repository>/…`).
    pub repository: String,
    /// The tag or digest asked for.
    pub reference: Reference,
    /// `registry/repository:tag` (or `@digest`): the layout's `ref.name`.
    pub full: String,
    /// As the user wrote it, for messages.
    pub written: String,
}

impl Naming {
    pub fn new(projects: impl IntoIterator<Item = String>, berth_host: String) -> Self {
        Naming {
            projects: projects.into_iter().collect(),
            berth_host,
        }
    }

    pub fn name(&self, image: &ImageReference) -> Named {
        let repository = image.repository().as_str();
        let single = !repository.contains('/');
        let first = repository.split('/').next().unwrap_or_default();
        let base = match image.host() {
            Some(host) if host == DEFAULT_REGISTRY && single => {
                format!("{host}/library/{repository}")
            }
            Some(host) => format!("{host}/{repository}"),
            None if !single && self.projects.contains(first) => {
                format!("{}/{repository}", self.berth_host)
            }
            None if single => format!("{DEFAULT_REGISTRY}/library/{repository}"),
            None => format!("{DEFAULT_REGISTRY}/{repository}"),
        };
        let full = match image.reference() {
            Reference::Tag(tag) => format!("{base}:{tag}"),
            Reference::Digest(digest) => format!("{base}@{digest}"),
        };
        Named {
            repository: image.name(),
            reference: image.reference().clone(),
            full,
            written: image.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> (String, String) {
        let naming = Naming::new(["team".to_owned()], "berth.example:5000".into());
        let named = naming.name(&text.parse().unwrap());
        (named.repository, named.full)
    }

    #[test]
    fn names_are_completed_as_docker_would_and_projects_get_the_berth_host() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("alpine:3.20", "alpine", "docker.io/library/alpine:3.20"),
            ("alpine", "alpine", "docker.io/library/alpine:latest"),
            (
                "docker.io/library/alpine:3.20",
                "docker.io/library/alpine",
                "docker.io/library/alpine:3.20",
            ),
            (
                "docker.io/alpine:1",
                "docker.io/alpine",
                "docker.io/library/alpine:1",
            ),
            ("org/tool:2", "org/tool", "docker.io/org/tool:2"),
            (
                "ghcr.io/org/tool:2",
                "ghcr.io/org/tool",
                "ghcr.io/org/tool:2",
            ),
            ("team/app:1", "team/app", "berth.example:5000/team/app:1"),
            ("team:1", "team", "docker.io/library/team:1"),
        ];
        for (written, repository, expected) in cases {
            assert_eq!(
                full(written),
                (repository.to_owned(), expected.to_owned()),
                "{written}"
            );
        }
        assert_eq!(
            full(&format!("alpine@{digest}")).1,
            format!("docker.io/library/alpine@{digest}")
        );
    }
}

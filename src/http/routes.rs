//! `/v2/…` paths to endpoints. The repository name may itself contain `manifests`, `blobs` or
//! `tags` components, so endpoints are recognized from the right end of the path and the name
//! is everything before. Names are validated later, by the registry, before anything is read.

/// An endpoint of the distribution API, with the raw (unvalidated) path parts it names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: &'a str },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: &'a str, reference: &'a str },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: &'a str, digest: &'a str },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: &'a str },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: &'a str, id: &'a str },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: &'a str, digest: &'a str },
}

/// The endpoint for a request path, or `None` when the path is not a registry endpoint.
pub fn parse(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    // `name/<kind>/<last>`: split off the last two components, then a third for uploads.
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    let route = match (kind, last) {
        ("tags", "list") => Route::Tags { name },
        ("manifests", reference) => Route::Manifest { name, reference },
        ("uploads", id) => match name.rsplit_once('/') {
            Some((name, "blobs")) if id.is_empty() => Route::UploadStart { name },
            Some((name, "blobs")) => Route::Upload { name, id },
            _ => return None,
        },
        ("blobs", "uploads") => Route::UploadStart { name },
        ("blobs", digest) => Route::Blob { name, digest },
        ("referrers", digest) => Route::Referrers { name, digest },
        _ => return None,
    };
    if name.is_empty()
        || matches!(
            &route,
            Route::Manifest { reference: "", .. } | Route::Blob { digest: "", .. }
        )
    {
        return None;
    }
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::Route::*;
    use super::*;

    #[test]
    fn route_table() {
        let long = format!("/v2/{}/manifests/latest", "a".repeat(256));
        let table: Vec<(&str, Option<Route>)> = vec![
            ("/v2", Some(Base)),
            ("/v2/", Some(Base)),
            ("/v2/_catalog", Some(Catalog)),
            ("/v2/foo/tags/list", Some(Tags { name: "foo" })),
            ("/v2/foo/bar/tags/list", Some(Tags { name: "foo/bar" })),
            (
                "/v2/foo/manifests/latest",
                Some(Manifest {
                    name: "foo",
                    reference: "latest",
                }),
            ),
            // A repository may be called `manifests`, `tags` or `blobs`.
            (
                "/v2/a/manifests/manifests/tags",
                Some(Manifest {
                    name: "a/manifests",
                    reference: "tags",
                }),
            ),
            (
                "/v2/manifests/manifests/manifests",
                Some(Manifest {
                    name: "manifests",
                    reference: "manifests",
                }),
            ),
            (
                "/v2/a/tags/manifests/list",
                Some(Manifest {
                    name: "a/tags",
                    reference: "list",
                }),
            ),
            (
                "/v2/a/manifests/tags/list",
                Some(Tags {
                    name: "a/manifests",
                }),
            ),
            (
                "/v2/blobs/blobs/sha256:abc",
                Some(Blob {
                    name: "blobs",
                    digest: "sha256:abc",
                }),
            ),
            (
                "/v2/foo/blobs/sha256:abc",
                Some(Blob {
                    name: "foo",
                    digest: "sha256:abc",
                }),
            ),
            ("/v2/foo/blobs/uploads/", Some(UploadStart { name: "foo" })),
            ("/v2/foo/blobs/uploads", Some(UploadStart { name: "foo" })),
            (
                "/v2/foo/blobs/uploads/1234-abcd",
                Some(Upload {
                    name: "foo",
                    id: "1234-abcd",
                }),
            ),
            (
                "/v2/foo/referrers/sha256:abc",
                Some(Referrers {
                    name: "foo",
                    digest: "sha256:abc",
                }),
            ),
            // Names are passed on raw; the registry rejects them with NAME_INVALID.
            (
                "/v2/../manifests/x",
                Some(Manifest {
                    name: "..",
                    reference: "x",
                }),
            ),
            (
                "/v2/UPPER/manifests/x",
                Some(Manifest {
                    name: "UPPER",
                    reference: "x",
                }),
            ),
            (
                "/v2/a//b/manifests/x",
                Some(Manifest {
                    name: "a//b",
                    reference: "x",
                }),
            ),
            (
                long.as_str(),
                Some(Manifest {
                    name: &long[4..260],
                    reference: "latest",
                }),
            ),
            // Not endpoints at all.
            ("/v2/foo", None),
            ("/v2/foo/manifests/", None),
            ("/v2/foo/blobs/", None),
            ("/v2/manifests/latest", None),
            ("/v2/foo/unknown/x", None),
            ("/v2/uploads/x", None),
            ("/v3/foo/manifests/x", None),
            ("/v2x", None),
            ("/", None),
        ];
        for (path, expected) in table {
            assert_eq!(parse(path), expected, "{path}");
        }
    }
}

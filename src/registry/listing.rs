//! Listings (tags, the catalog) and the spec's `n`/`last` pagination, written once for
//! private projects and the mirror's cached tags alike.

use bytes::Bytes;

use super::error::RegistryError;

/// What page of a listing a client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// At most this many entries.
    pub n: Option<usize>,
    /// Only entries sorting after this one.
    pub last: Option<String>,
}

impl PageRequest {
    /// The request as query pairs, to ask upstream for the same page.
    pub fn query(&self) -> Vec<(String, String)> {
        let mut query = Vec::new();
        if let Some(n) = self.n {
            query.push(("n".to_owned(), n.to_string()));
        }
        if let Some(last) = &self.last {
            query.push(("last".to_owned(), last.clone()));
        }
        query
    }
}

/// One page of a listing, rendered.
pub struct Listing {
    pub body: Bytes,
    /// The query of the next page (`last`, `n`, and whatever else it needs), when there is
    /// one; the HTTP layer turns it into a `Link` header on the listing's own path.
    pub next: Option<Vec<(String, String)>>,
}

/// The sorted `entries` after `page.last`, at most `page.n` of them, and the query of the
/// next page when entries were left over.
pub fn paginate(
    mut entries: Vec<String>,
    page: &PageRequest,
) -> (Vec<String>, Option<Vec<(String, String)>>) {
    entries.sort();
    if let Some(last) = &page.last {
        entries.retain(|e| e > last);
    }
    match page.n {
        Some(n) if entries.len() > n => {
            entries.truncate(n);
            let next = entries.last().map(|last| {
                vec![
                    ("last".to_owned(), last.clone()),
                    ("n".to_owned(), n.to_string()),
                ]
            });
            (entries, next)
        }
        _ => (entries, None),
    }
}

/// A listing's JSON body.
pub fn json(value: serde_json::Value) -> Result<Bytes, RegistryError> {
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| RegistryError::internal("cannot render the listing", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(n: Option<usize>, last: Option<&str>) -> PageRequest {
        PageRequest {
            n,
            last: last.map(str::to_owned),
        }
    }

    fn next(last: &str, n: usize) -> Option<Vec<(String, String)>> {
        Some(vec![
            ("last".to_owned(), last.to_owned()),
            ("n".to_owned(), n.to_string()),
        ])
    }

    #[test]
    fn pagination() {
        let all: Vec<String> = ["c", "a", "d", "b"].map(String::from).to_vec();
        let sorted: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(
            paginate(all.clone(), &page(None, None)),
            (sorted.clone(), None)
        );
        assert_eq!(
            paginate(all.clone(), &page(Some(2), None)),
            (vec!["a".into(), "b".into()], next("b", 2))
        );
        assert_eq!(
            paginate(all.clone(), &page(Some(2), Some("b"))),
            (vec!["c".into(), "d".into()], None)
        );
        assert_eq!(
            paginate(all.clone(), &page(Some(0), None)).0,
            Vec::<String>::new()
        );
        assert_eq!(
            paginate(all, &page(None, Some("d"))).0,
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_page_request_asks_upstream_for_the_same_page() {
        assert!(page(None, None).query().is_empty());
        assert_eq!(
            page(Some(5), Some("v1")).query(),
            vec![
                ("n".to_owned(), "5".to_owned()),
                ("last".to_owned(), "v1".to_owned())
            ]
        );
    }
}

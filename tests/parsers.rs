//! Property tests of the parsers every request goes through before anything touches disk:
//! repository names, tags, digests, references and `Range` headers. Each is checked against an
//! independent reading of the spec's grammar, on generated valid input and on arbitrary input.

use berth::http::range::{self, RangeRequest};
use berth::oci::{Digest, Reference, RepoName, Tag, MAX_NAME_LEN};
use proptest::prelude::*;

/// One path component per the distribution spec: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn spec_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut rest = component;
    loop {
        let run = rest.len() - rest.trim_start_matches(alnum).len();
        if run == 0 {
            return false;
        }
        rest = &rest[run..];
        if rest.is_empty() {
            return true;
        }
        let separator = if let Some(r) = rest.strip_prefix("__") {
            r
        } else if let Some(r) = rest.strip_prefix(['.', '_']) {
            r
        } else if rest.starts_with('-') {
            rest.trim_start_matches('-')
        } else {
            return false;
        };
        rest = separator;
    }
}

fn spec_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(spec_component)
}

fn spec_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-')
}

fn spec_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

const COMPONENT: &str = "[a-z0-9]{1,8}(([._]|__|-{1,3})[a-z0-9]{1,8}){0,3}";

/// Strings close to the grammar: its alphabet, separators, case and the characters routing
/// and keys care about.
fn near_miss() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._/:@ -]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn names_in_the_grammar_parse_and_round_trip(
        components in prop::collection::vec(COMPONENT, 1..6)
    ) {
        let name = components.join("/");
        let parsed = name.parse::<RepoName>();
        prop_assert_eq!(parsed.is_ok(), name.len() <= MAX_NAME_LEN);
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed.as_str(), name.as_str());
        }
    }

    #[test]
    fn a_name_parses_exactly_when_the_grammar_allows_it(name in near_miss()) {
        prop_assert_eq!(name.parse::<RepoName>().is_ok(), spec_name(&name), "{:?}", name);
    }

    #[test]
    fn arbitrary_text_never_passes_as_a_bad_name(name in "\\PC{0,300}") {
        prop_assert_eq!(name.parse::<RepoName>().is_ok(), spec_name(&name));
    }

    #[test]
    fn a_tag_parses_exactly_when_the_grammar_allows_it(
        tag in prop_oneof!["[A-Za-z0-9_][A-Za-z0-9_.-]{0,130}", near_miss(), "\\PC{0,20}"]
    ) {
        let parsed = tag.parse::<Tag>();
        prop_assert_eq!(parsed.is_ok(), spec_tag(&tag), "{:?}", tag);
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed.to_string(), tag);
        }
    }

    #[test]
    fn a_digest_parses_exactly_when_it_is_a_sha256(
        digest in prop_oneof![
            "sha256:[0-9a-f]{64}",
            "sha256:[0-9a-fA-F]{62,66}",
            "(sha256|sha512|SHA256|sha256 ):[0-9a-f]{64}",
            "\\PC{0,80}",
        ]
    ) {
        let parsed = digest.parse::<Digest>();
        prop_assert_eq!(parsed.is_ok(), spec_digest(&digest), "{:?}", digest);
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed.to_string(), digest);
        }
    }

    #[test]
    fn a_reference_is_a_tag_or_a_digest_and_round_trips(
        reference in prop_oneof!["sha256:[0-9a-f]{64}", "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", near_miss()]
    ) {
        match reference.parse::<Reference>() {
            Ok(Reference::Tag(tag)) => {
                prop_assert!(spec_tag(&reference));
                prop_assert_eq!(tag.to_string(), reference);
            }
            Ok(Reference::Digest(digest)) => {
                prop_assert!(spec_digest(&reference));
                prop_assert_eq!(digest.to_string(), reference);
            }
            Err(_) => prop_assert!(!spec_tag(&reference) && !spec_digest(&reference)),
        }
    }

    #[test]
    fn a_range_is_always_inside_the_blob(
        header in prop_oneof![
            "bytes=[0-9]{0,6}-[0-9]{0,6}",
            "bytes= ?[0-9]{0,20} ?- ?[0-9]{0,20}",
            "bytes=[0-9]{1,3}-[0-9]{1,3},[0-9]{1,3}-",
            "\\PC{0,30}",
        ],
        size in 0u64..2_000_000,
    ) {
        match range::parse(Some(&header), size) {
            RangeRequest::Partial { start, end } => {
                prop_assert!(start <= end && end < size, "{header:?} of {size}: {start}-{end}");
            }
            RangeRequest::Full | RangeRequest::Unsatisfiable => {}
        }
    }

    #[test]
    fn a_satisfiable_range_is_served_as_asked(
        size in 1u64..10_000_000,
        a in 0u64..10_000_000,
        len in 0u64..10_000_000,
    ) {
        let start = a % size;
        let end = start + len % (size - start);
        prop_assert_eq!(
            range::parse(Some(&format!("bytes={start}-{end}")), size),
            RangeRequest::Partial { start, end }
        );
        let suffix = len % size + 1;
        prop_assert_eq!(
            range::parse(Some(&format!("bytes=-{suffix}")), size),
            RangeRequest::Partial { start: size - suffix, end: size - 1 }
        );
        prop_assert_eq!(
            range::parse(Some(&format!("bytes={size}-")), size),
            RangeRequest::Unsatisfiable
        );
    }
}

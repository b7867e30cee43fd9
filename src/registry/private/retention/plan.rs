//! The retention decision for one repository, from what its index records: no I/O, so every
//! rule is tested here on its own.
//!
//! 1. Tags matching a `protect` glob stay, and do not count toward `keep_last`.
//! 2. The other tags, newest push first (a tag pushed before berth recorded push times counts
//!    as the oldest; ties go by name), keep the first `keep_last`; the rest are deleted.
//! 3. With `untagged_after`, the manifests the repository keeps are the ones the remaining tags
//!    name and every manifest pushed within `untagged_after`, with what they hold: an index's
//!    manifests and the referrers (signatures, SBOMs) of anything kept, transitively. Every
//!    other manifest is deleted. A manifest whose tag step 2 deletes is then untagged too, so
//!    it goes in the same run once it is old enough.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::RetentionSettings;
use crate::oci::Digest;

/// One tag of the repository.
#[derive(Debug, Clone)]
pub struct TagState {
    pub tag: String,
    pub digest: Digest,
    /// When it was last pushed (ms since the epoch); `None` when berth did not record it.
    pub pushed_at: Option<u64>,
}

/// One manifest of the repository.
#[derive(Debug, Clone)]
pub struct ManifestState {
    pub digest: Digest,
    pub pushed_at: u64,
    /// The manifests it lists, for an index.
    pub children: Vec<Digest>,
}

/// What the index records of one repository.
#[derive(Debug, Clone, Default)]
pub struct RepoState {
    pub tags: Vec<TagState>,
    pub manifests: Vec<ManifestState>,
    /// `(subject, referrer)`.
    pub referrers: Vec<(Digest, Digest)>,
}

/// One deletion retention decided on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub repository: String,
    /// The tag deleted, or `None` when the manifest itself is (by digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The manifest deleted, or the one the tag named.
    pub digest: Digest,
    /// Why, for people: `beyond keep_last=10`, `untagged, pushed 9d ago`.
    pub reason: String,
}

/// Tags first, then manifests: the order they are deleted in.
pub fn plan(
    repository: &str,
    rules: &RetentionSettings,
    state: &RepoState,
    now_ms: u64,
) -> Vec<Removal> {
    let mut removals = Vec::new();
    let mut candidates: Vec<&TagState> = state
        .tags
        .iter()
        .filter(|t| !rules.protects(&t.tag))
        .collect();
    candidates.sort_by(|a, b| {
        (b.pushed_at.unwrap_or(0), &b.tag).cmp(&(a.pushed_at.unwrap_or(0), &a.tag))
    });
    let mut gone_tags = HashSet::new();
    if let Some(keep) = rules.keep_last {
        for tag in candidates.into_iter().skip(keep) {
            gone_tags.insert(tag.tag.as_str());
            removals.push(Removal {
                repository: repository.to_owned(),
                tag: Some(tag.tag.clone()),
                digest: tag.digest.clone(),
                reason: format!("beyond keep_last={keep}"),
            });
        }
    }
    let Some(after) = rules.untagged_after else {
        return removals;
    };
    let cutoff = now_ms.saturating_sub(after.as_millis() as u64);
    let roots = state
        .tags
        .iter()
        .filter(|t| !gone_tags.contains(t.tag.as_str()))
        .map(|t| t.digest.clone())
        .chain(
            state
                .manifests
                .iter()
                .filter(|m| m.pushed_at > cutoff)
                .map(|m| m.digest.clone()),
        );
    let kept = closure(state, roots);
    for manifest in &state.manifests {
        if kept.contains(&manifest.digest) {
            continue;
        }
        let age = Duration::from_millis(now_ms.saturating_sub(manifest.pushed_at));
        removals.push(Removal {
            repository: repository.to_owned(),
            tag: None,
            digest: manifest.digest.clone(),
            reason: format!("untagged, pushed {} ago", short_age(age)),
        });
    }
    removals
}

/// `roots` with the manifests an index lists and the referrers of each, transitively.
fn closure(state: &RepoState, roots: impl Iterator<Item = Digest>) -> HashSet<Digest> {
    let children: HashMap<&Digest, &Vec<Digest>> = state
        .manifests
        .iter()
        .map(|m| (&m.digest, &m.children))
        .collect();
    let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for (subject, referrer) in &state.referrers {
        referrers.entry(subject).or_default().push(referrer);
    }
    let mut kept = HashSet::new();
    let mut next: Vec<Digest> = roots.collect();
    while let Some(digest) = next.pop() {
        if !kept.insert(digest.clone()) {
            continue;
        }
        if let Some(list) = children.get(&digest) {
            next.extend(list.iter().cloned());
        }
        if let Some(list) = referrers.get(&digest) {
            next.extend(list.iter().map(|d| (*d).clone()));
        }
    }
    kept
}

/// `9d`, `5h`, `3m`, `12s`, `250ms`: the largest whole unit.
pub fn short_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        86_400.. => format!("{}d", secs / 86_400),
        3_600.. => format!("{}h", secs / 3_600),
        60.. => format!("{}m", secs / 60),
        1.. => format!("{secs}s"),
        0 => format!("{}ms", age.as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn d(name: &str) -> Digest {
        Digest::of(name.as_bytes())
    }

    fn tag(name: &str, digest: &str, pushed_at: Option<u64>) -> TagState {
        TagState {
            tag: name.into(),
            digest: d(digest),
            pushed_at,
        }
    }

    fn manifest(name: &str, pushed_at: u64, children: &[&str]) -> ManifestState {
        ManifestState {
            digest: d(name),
            pushed_at,
            children: children.iter().map(|c| d(c)).collect(),
        }
    }

    fn rules(
        keep_last: Option<usize>,
        untagged_days: Option<u64>,
        protect: &[&str],
    ) -> RetentionSettings {
        RetentionSettings {
            keep_last,
            untagged_after: untagged_days.map(|days| Duration::from_millis(days * DAY)),
            protect: protect.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn removed(removals: &[Removal]) -> Vec<String> {
        removals
            .iter()
            .map(|r| match &r.tag {
                Some(tag) => format!("{tag}: {}", r.reason),
                None => format!("{}: {}", r.digest, r.reason),
            })
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_and_every_protected_tag() {
        // t1..t15 pushed in order; t1 and t2 are named v1 and v2.
        let mut state = RepoState::default();
        for i in 1..=15u64 {
            let name = match i {
                1 => "v1".to_owned(),
                2 => "v2".to_owned(),
                _ => format!("t{i}"),
            };
            state.tags.push(tag(&name, "m", Some(i * 1000)));
        }
        let removals = plan(
            "team/app",
            &rules(Some(10), None, &["v*"]),
            &state,
            20 * DAY,
        );
        assert_eq!(
            removed(&removals),
            [
                "t5: beyond keep_last=10",
                "t4: beyond keep_last=10",
                "t3: beyond keep_last=10"
            ]
        );
        assert!(removals.iter().all(|r| r.repository == "team/app"));
        // A tag pushed before push times were recorded counts as the oldest.
        state.tags.push(tag("legacy", "m", None));
        let removals = plan(
            "team/app",
            &rules(Some(10), None, &["v*"]),
            &state,
            20 * DAY,
        );
        assert_eq!(removed(&removals)[3], "legacy: beyond keep_last=10");
        assert!(plan("team/app", &rules(None, None, &[]), &state, 20 * DAY).is_empty());
    }

    #[test]
    fn old_untagged_manifests_go_but_not_what_a_kept_one_holds() {
        let now = 30 * DAY;
        let state = RepoState {
            tags: vec![tag("latest", "index", Some(now - 20 * DAY))],
            manifests: vec![
                manifest("index", now - 20 * DAY, &["amd64", "arm64"]),
                manifest("amd64", now - 20 * DAY, &[]),
                manifest("arm64", now - 20 * DAY, &[]),
                // A signature of a kept child, and a signature of that signature.
                manifest("sig", now - 20 * DAY, &[]),
                manifest("sig-of-sig", now - 20 * DAY, &[]),
                manifest("orphan", now - 9 * DAY, &[]),
                manifest("fresh", now - DAY, &["fresh-child"]),
                manifest("fresh-child", now - 20 * DAY, &[]),
                // Signs the orphan: goes with it.
                manifest("orphan-sig", now - 9 * DAY, &[]),
            ],
            referrers: vec![
                (d("amd64"), d("sig")),
                (d("sig"), d("sig-of-sig")),
                (d("orphan"), d("orphan-sig")),
            ],
        };
        let removals = plan("team/app", &rules(None, Some(7), &[]), &state, now);
        assert_eq!(
            removed(&removals),
            [
                format!("{}: untagged, pushed 9d ago", d("orphan")),
                format!("{}: untagged, pushed 9d ago", d("orphan-sig")),
            ]
        );
    }

    #[test]
    fn a_manifest_whose_tag_goes_is_untagged_in_the_same_run() {
        let now = 30 * DAY;
        let state = RepoState {
            tags: vec![
                tag("old", "a", Some(now - 20 * DAY)),
                tag("new", "b", Some(now - 10 * DAY)),
            ],
            manifests: vec![
                manifest("a", now - 20 * DAY, &[]),
                manifest("b", now - 10 * DAY, &[]),
            ],
            referrers: vec![],
        };
        let removals = plan("team/app", &rules(Some(1), Some(7), &[]), &state, now);
        assert_eq!(
            removed(&removals),
            [
                "old: beyond keep_last=1".to_owned(),
                format!("{}: untagged, pushed 20d ago", d("a")),
            ]
        );
    }

    #[test]
    fn ages_read_in_their_largest_unit() {
        assert_eq!(short_age(Duration::from_secs(9 * 86_400 + 5)), "9d");
        assert_eq!(short_age(Duration::from_secs(7_300)), "2h");
        assert_eq!(short_age(Duration::from_secs(61)), "1m");
        assert_eq!(short_age(Duration::from_millis(250)), "250ms");
    }
}

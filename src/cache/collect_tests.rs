//! Garbage collection and `berth cache rm` on a real store: what each keeps and removes.

use std::sync::Arc;
use std::time::Duration;

use super::evict::Budget;
use super::Cache;
use crate::oci::{media, Digest, Reference, RepoName};
use crate::storage::index::{now_ms, BlobRecord, PinRecord, PushedManifest, TagRecord};
use crate::storage::Storage;

struct Fixture {
    _dir: tempfile::TempDir,
    cache: Cache,
}

const HOUR: u64 = 3_600_000;
const GRACE: Duration = Duration::from_secs(60);

/// No repository lock: these tests run nothing concurrently unless they say so.
fn unlocked(_: &RepoName) {}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let cache = Cache::new(
            Arc::new(storage),
            Arc::default(),
            1 << 20,
            Budget::unlimited(),
            0,
        );
        Fixture { _dir: dir, cache }
    }

    fn index(&self) -> &crate::storage::index::Index {
        &self.cache.storage().index
    }

    /// Stores `data`, last used `age_ms` ago.
    fn put(&self, data: &[u8], media_type: Option<&str>, age_ms: u64) -> Digest {
        let storage = self.cache.storage();
        let digest = Digest::of(data);
        storage.blobs.write_verified(&digest, data).unwrap();
        let mut record = BlobRecord::new(data.len() as u64, media_type.map(str::to_owned));
        record.last_access_ms -= age_ms;
        storage.index.put_blob(&digest, &record).unwrap();
        digest
    }

    fn manifest_body(blobs: &[&Digest], subject: Option<&Digest>) -> String {
        let layers: Vec<_> = blobs[1..]
            .iter()
            .map(|d| format!(r#"{{"digest":"{d}","size":1,"mediaType":"x/y"}}"#))
            .collect();
        let subject = subject
            .map(|s| format!(r#","subject":{{"digest":"{s}","size":1,"mediaType":"x/y"}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"{}","size":1,"mediaType":"x/y"}},"layers":[{}]{subject}}}"#,
            media::OCI_MANIFEST,
            blobs[0],
            layers.join(",")
        )
    }

    fn manifest(&self, blobs: &[&Digest]) -> Digest {
        let body = Self::manifest_body(blobs, None);
        self.put(body.as_bytes(), Some(media::OCI_MANIFEST), HOUR)
    }

    fn index_of(&self, children: &[&Digest]) -> String {
        let entries: Vec<_> = children
            .iter()
            .map(|d| {
                format!(
                    r#"{{"digest":"{d}","size":1,"mediaType":"{}"}}"#,
                    media::OCI_MANIFEST
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
            media::OCI_INDEX,
            entries.join(",")
        )
    }

    fn tag(&self, repo: &str, tag: &str, digest: &Digest) {
        let record = TagRecord {
            digest: digest.clone(),
            media_type: media::OCI_MANIFEST.into(),
            checked_at_ms: now_ms(),
        };
        let (repo, tag) = (repo.parse().unwrap(), tag.parse().unwrap());
        self.index()
            .put_tag("docker.io", &repo, &tag, &record)
            .unwrap();
    }

    /// Pushes a blob into private repository `repo`, stored and linked `age_ms` ago.
    fn push_blob(&self, repo: &RepoName, data: &[u8], age_ms: u64) -> Digest {
        let digest = self.put(data, None, age_ms);
        self.index().link_repo_blob(repo, &digest).unwrap();
        if age_ms > 0 {
            self.age_link(repo, &digest, age_ms);
        }
        digest
    }

    /// Pushes a manifest into `repo`, stored and linked `age_ms` ago.
    fn push_manifest(&self, repo: &RepoName, body: &str, tag: Option<&str>, age_ms: u64) -> Digest {
        let digest = Digest::of(body.as_bytes());
        let storage = self.cache.storage();
        storage
            .blobs
            .write_verified(&digest, body.as_bytes())
            .unwrap();
        let parsed = crate::oci::Manifest::parse(body.as_bytes(), None).unwrap();
        let tag = tag.map(|t| t.parse().unwrap());
        let mut record = BlobRecord::new(body.len() as u64, Some(parsed.media_type.clone()));
        record.last_access_ms -= age_ms;
        let referrer = parsed.subject.as_ref().map(|s| {
            let entry = crate::storage::index::ReferrerRecord {
                media_type: parsed.media_type.clone(),
                digest: digest.clone(),
                size: body.len() as u64,
                artifact_type: None,
                annotations: None,
            };
            (s.digest.clone(), entry)
        });
        let pushed = PushedManifest {
            repo,
            digest: &digest,
            media_type: &parsed.media_type,
            size: body.len() as u64,
            tag: tag.as_ref(),
            referrer: referrer.as_ref().map(|(s, r)| (s, r)),
        };
        self.index().put_private_manifest(&pushed, &record).unwrap();
        if age_ms > 0 {
            self.age_link(repo, &digest, age_ms);
        }
        digest
    }

    fn age_link(&self, repo: &RepoName, digest: &Digest, age_ms: u64) {
        let db = self.index();
        db.age_link(repo, digest, now_ms() - age_ms).unwrap();
    }

    fn stored(&self, digest: &Digest) -> bool {
        self.cache.blob_size(digest).unwrap().is_some()
            && self.cache.storage().blobs.path(digest).exists()
    }
}

#[test]
fn gc_spares_what_is_referenced_pinned_private_recent_or_in_use() {
    let f = Fixture::new();
    let config = f.put(b"config", None, HOUR);
    let layer = f.put(b"layer", None, HOUR);
    let tagged = f.manifest(&[&config, &layer]);
    f.tag("library/app", "1", &tagged);
    let old = f.put(b"old orphan", None, HOUR);
    let recent = f.put(b"recent orphan", None, 10);
    let pinned = f.put(b"pinned orphan", None, HOUR);
    let served = f.put(b"served orphan", None, HOUR);
    let repo: RepoName = "team/app".parse().unwrap();
    let private = f.push_blob(&repo, b"private orphan", 10);
    let pin = PinRecord {
        digest: pinned.clone(),
        blobs: vec![pinned.clone()],
        seeded_ms: 1,
    };
    f.index().put_pin("x:1", &pin).unwrap();
    let guard = super::evict::ServingGuard::new(&f.cache.usage, &served);

    let done = f.cache.collect_garbage(GRACE, unlocked).unwrap();
    assert_eq!(done.blobs_removed, 1, "{done:?}");
    assert_eq!(done.bytes_removed, 10);
    assert_eq!((done.manifests, done.manifests_removed), (1, 0));
    assert!(!f.stored(&old));
    for kept in [
        &tagged, &config, &layer, &recent, &pinned, &served, &private,
    ] {
        assert!(f.stored(kept), "{kept} removed");
    }
    let metrics = f.cache.metrics();
    assert_eq!(
        metrics
            .gc_bytes_removed
            .load(std::sync::atomic::Ordering::Relaxed),
        10
    );
    drop(guard);
    // No grace, nothing served: only what something holds stays, and the private orphan (in
    // no manifest of its repository) is unlinked and removed.
    let done = f.cache.collect_garbage(Duration::ZERO, unlocked).unwrap();
    assert_eq!((done.blobs_removed, done.links_removed), (3, 1), "{done:?}");
    assert!(!f.stored(&recent) && !f.stored(&served) && !f.stored(&private));
    assert!(f.stored(&tagged) && f.stored(&layer) && f.stored(&pinned));
}

/// A private repository keeps the closure of its manifests, tagged or not (an index's
/// children, referrers); a manifest deleted from it takes what only it held.
#[test]
fn a_private_repository_keeps_the_closure_of_its_manifests() {
    let f = Fixture::new();
    let repo: RepoName = "team/app".parse().unwrap();
    let blob = |data: &[u8]| f.push_blob(&repo, data, HOUR);
    let (c1, c2, c3) = (blob(b"config 1"), blob(b"config 2"), blob(b"config 3"));
    let (shared, own, child_layer) = (blob(b"shared"), blob(b"own"), blob(b"child layer"));
    let one = Fixture::manifest_body(&[&c1, &shared, &own], None);
    let one = f.push_manifest(&repo, &one, Some("v1"), HOUR);
    let two = Fixture::manifest_body(&[&c2, &shared], None);
    let two = f.push_manifest(&repo, &two, None, HOUR);
    let child = Fixture::manifest_body(&[&c3, &child_layer], None);
    let child = f.push_manifest(&repo, &child, None, HOUR);
    let index = f.push_manifest(&repo, &f.index_of(&[&child]), Some("multi"), HOUR);
    let sig_config = blob(b"signature config");
    let signature = Fixture::manifest_body(&[&sig_config], Some(&two));
    let signature = f.push_manifest(&repo, &signature, None, HOUR);

    // Nothing is garbage while every manifest is in the repository, tagged or not.
    let done = f.cache.collect_garbage(GRACE, unlocked).unwrap();
    assert_eq!(
        (
            done.links_removed,
            done.blobs_removed,
            done.manifests_removed
        ),
        (0, 0, 0)
    );

    // The index goes: its child manifest stays (it is still in the repository).
    assert!(f.index().remove_repo_manifest(&repo, &index).unwrap());
    // `one` goes (as `skopeo delete` does, by digest).
    assert!(f.index().remove_repo_manifest(&repo, &one).unwrap());
    let done = f.cache.collect_garbage(GRACE, unlocked).unwrap();
    assert_eq!(done.links_removed, 2, "c1 and own: {done:?}");
    assert_eq!(
        (done.manifests_removed, done.blobs_removed),
        (2, 2),
        "{done:?}"
    );
    for gone in [&one, &index, &c1, &own] {
        assert!(!f.stored(gone), "{gone} kept");
        assert!(!f.index().repo_has_blob(&repo, gone).unwrap());
    }
    for kept in [
        &two,
        &c2,
        &shared,
        &child,
        &c3,
        &child_layer,
        &signature,
        &sig_config,
    ] {
        assert!(f.stored(kept), "{kept} removed");
        assert!(f.index().repo_has_blob(&repo, kept).unwrap());
    }
}

/// A link made, or a blob read, within the grace period stays; only old ones go.
#[test]
fn grace_covers_recent_links_and_reads() {
    let f = Fixture::new();
    let repo: RepoName = "team/app".parse().unwrap();
    let just_linked = f.push_blob(&repo, b"just uploaded", 0);
    let old_but_read = f.push_blob(&repo, b"old but read", HOUR);
    let record = f.index().blob(&old_but_read).unwrap().unwrap();
    let mut read = record.clone();
    read.last_access_ms = now_ms();
    f.index().put_blob(&old_but_read, &read).unwrap();
    let old = f.push_blob(&repo, b"old", HOUR);
    // Stored long ago by another repository, linked here just now (a mount).
    let other: RepoName = "team/other".parse().unwrap();
    let mounted = f.push_blob(&other, b"mounted", HOUR);
    f.index().link_repo_blob(&repo, &mounted).unwrap();

    let done = f.cache.collect_garbage(GRACE, unlocked).unwrap();
    assert!(!f.stored(&old), "{done:?}");
    for kept in [&just_linked, &old_but_read, &mounted] {
        assert!(f.stored(kept) && f.index().repo_has_blob(&repo, kept).unwrap());
    }
    assert!(
        !f.index().repo_has_blob(&other, &mounted).unwrap(),
        "old link in team/other"
    );
}

/// The cached mirror side: tags, pins and referrers of what is live are roots; an untagged
/// cached manifest goes with what only it held.
#[test]
fn mirror_manifests_reachable_from_no_tag_or_pin_go() {
    let f = Fixture::new();
    let (c1, c2, c3) = (
        f.put(b"m config 1", None, HOUR),
        f.put(b"m config 2", None, HOUR),
        f.put(b"m config 3", None, HOUR),
    );
    let (shared, own) = (f.put(b"m shared", None, HOUR), f.put(b"m own", None, HOUR));
    let tagged = f.manifest(&[&c1, &shared]);
    let untagged = f.manifest(&[&c2, &shared, &own]);
    let pinned = f.manifest(&[&c3]);
    f.tag("library/app", "1", &tagged);
    f.index()
        .put_pin(
            "app:pinned",
            &PinRecord {
                digest: pinned.clone(),
                blobs: vec![pinned.clone(), c3.clone()],
                seeded_ms: 1,
            },
        )
        .unwrap();
    // A signature of the tagged image (referrers API), and one under the tag schema.
    let sig_config = f.put(b"m sig config", None, HOUR);
    let body = Fixture::manifest_body(&[&sig_config], Some(&tagged));
    let signature = f.put(body.as_bytes(), Some(media::OCI_MANIFEST), HOUR);
    let schema_config = f.put(b"m schema config", None, HOUR);
    let schema = f.manifest(&[&schema_config]);
    f.tag("library/app", &format!("sha256-{}", tagged.hex()), &schema);
    // A signature of the untagged image goes with it.
    let orphan_sig = Fixture::manifest_body(&[&sig_config, &own], Some(&untagged));
    let orphan_sig = f.put(orphan_sig.as_bytes(), Some(media::OCI_MANIFEST), HOUR);

    let done = f.cache.collect_garbage(GRACE, unlocked).unwrap();
    assert_eq!(
        (done.manifests_removed, done.blobs_removed),
        (2, 2),
        "{done:?}"
    );
    for gone in [&untagged, &orphan_sig, &c2, &own] {
        assert!(!f.stored(gone), "{gone} kept");
    }
    for kept in [
        &tagged,
        &c1,
        &shared,
        &pinned,
        &c3,
        &signature,
        &sig_config,
        &schema,
    ] {
        assert!(f.stored(kept), "{kept} removed");
    }
}

/// The PUT scheme: a manifest that lands before gc takes the repository's lock (here: while
/// gc waits for it, after its first read) is in the live set, and a blob linked again since
/// gc read the links stays linked.
#[test]
fn writes_before_the_lock_are_seen() {
    let f = Fixture::new();
    let repo: RepoName = "team/app".parse().unwrap();
    let config = f.push_blob(&repo, b"config", HOUR);
    let layer = f.push_blob(&repo, b"layer", HOUR);
    let relinked = f.push_blob(&repo, b"relinked", HOUR);
    let body = Fixture::manifest_body(&[&config, &layer], None);
    let mut pushed = None;
    let done = f
        .cache
        .collect_garbage(Duration::ZERO, |locked: &RepoName| {
            // What a PUT and an upload holding the lock shared finished just before.
            assert_eq!(locked, &repo);
            pushed = Some(f.push_manifest(&repo, &body, Some("v1"), HOUR));
            std::thread::sleep(Duration::from_millis(2));
            f.index().link_repo_blob(&repo, &relinked).unwrap();
        })
        .unwrap();
    assert_eq!(done.links_removed, 0, "{done:?}");
    for kept in [&config, &layer, &relinked, pushed.as_ref().unwrap()] {
        assert!(f.stored(kept) && f.index().repo_has_blob(&repo, kept).unwrap());
    }
}

#[test]
fn rm_drops_the_image_and_what_only_it_holds() {
    let f = Fixture::new();
    let (c1, c2) = (
        f.put(b"config 1", None, HOUR),
        f.put(b"config 2", None, HOUR),
    );
    let own = f.put(b"own layer", None, HOUR);
    let shared = f.put(b"shared layer", None, HOUR);
    let one = f.manifest(&[&c1, &own, &shared]);
    let two = f.manifest(&[&c2, &shared]);
    f.tag("library/app", "1", &one);
    f.tag("library/app", "latest", &one);
    f.tag("library/app", "2", &two);
    let repo: RepoName = "library/app".parse().unwrap();
    let tag = Reference::Tag("1".parse().unwrap());

    let dropped = f
        .cache
        .drop_image("docker.io", &repo, &tag)
        .unwrap()
        .unwrap();
    assert_eq!(dropped.tags_removed, 2, "both tags of the digest go");
    assert_eq!(dropped.blobs_removed, 3, "{dropped:?}");
    assert_eq!(dropped.blobs_shared, 1);
    for gone in [&one, &c1, &own] {
        assert!(!f.stored(gone));
    }
    for kept in [&two, &c2, &shared] {
        assert!(f.stored(kept));
    }
    assert!(f
        .cache
        .drop_image("docker.io", &repo, &tag)
        .unwrap()
        .is_none());
    let two_tag = Reference::Tag("2".parse().unwrap());
    let dropped = f
        .cache
        .drop_image("docker.io", &repo, &two_tag)
        .unwrap()
        .unwrap();
    assert_eq!(dropped.blobs_removed, 3);
    assert!(!f.stored(&shared));
}

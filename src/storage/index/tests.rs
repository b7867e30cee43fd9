use super::*;
use crate::oci::{Digest, RepoName, Tag};

fn digest(byte: u8) -> Digest {
    Digest::of(&[byte])
}

#[test]
fn an_unsure_mark_never_overrides_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let (open, flaky, refused) = ("docker.io/a", "docker.io/b", "docker.io/c");
    assert_eq!(index.guarding(open).unwrap(), Guarding::Open);

    index.mark_unsure(flaky).unwrap();
    assert_eq!(index.guarding(flaky).unwrap(), Guarding::Unsure);
    index.clear_unsure(flaky).unwrap();
    assert_eq!(index.guarding(flaky).unwrap(), Guarding::Open);

    // A refusal replaces an unsure mark; neither unsure call undoes it.
    index.mark_unsure(refused).unwrap();
    index.mark_guarded(refused).unwrap();
    index.mark_unsure(refused).unwrap();
    index.clear_unsure(refused).unwrap();
    assert_eq!(index.guarding(refused).unwrap(), Guarding::Guarded);
    // Marks written before unsure existed (an empty value) read as guarded.
    assert_eq!(
        index.guarded.get(refused.as_bytes()).unwrap().as_deref(),
        Some(&[] as &[u8])
    );
}

#[test]
fn keys_round_trip() {
    let repo: RepoName = "library/my.app".parse().unwrap();
    let tag: Tag = "v1.2".parse().unwrap();
    let d = digest(1);
    assert_eq!(
        tag_key("docker.io", &repo, &tag),
        b"docker.io/library/my.app:v1.2".to_vec()
    );
    assert_eq!(
        parse_tag_key(&tag_key("127.0.0.1:5000", &repo, &tag)),
        Some(("127.0.0.1:5000".into(), repo.clone(), tag.clone()))
    );
    assert_eq!(
        parse_link_key(&link_key("ghcr.io", &repo, &d)),
        Some(("ghcr.io".into(), repo, d.clone()))
    );
    assert_eq!(parse_tag_key(b"no-slash"), None);
}

#[test]
fn access_order_follows_puts_and_touches() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let (a, b, c) = (digest(1), digest(2), digest(3));
    for (d, stamp) in [(&a, 30), (&b, 10), (&c, 20)] {
        let mut record = BlobRecord::new(1, None);
        record.last_access_ms = stamp;
        index.put_blob(d, &record).unwrap();
    }
    let order = |index: &Index| -> Vec<Digest> {
        index
            .least_recently_used(None, u64::MAX, 10)
            .unwrap()
            .into_iter()
            .map(|used| used.digest)
            .collect()
    };
    assert_eq!(order(&index), vec![b.clone(), c.clone(), a.clone()]);
    index.touch(&b, index.blob(&b).unwrap().unwrap()).unwrap();
    assert_eq!(order(&index), vec![c.clone(), a.clone(), b.clone()]);
    assert_eq!(index.remove_blob(&a).unwrap().map(|r| r.size), Some(1));
    assert_eq!(order(&index), vec![c.clone(), b.clone()]);
    assert_eq!(index.remove_blob(&a).unwrap(), None);
    // Read a round at a time: after a position, up to a time, at most so many.
    for (d, stamp) in [(&a, 30), (&digest(4), 30), (&digest(5), 40)] {
        let mut record = BlobRecord::new(1, None);
        record.last_access_ms = stamp;
        index.put_blob(d, &record).unwrap();
    }
    let first = index.least_recently_used(None, 35, 2).unwrap();
    assert_eq!((first[0].stamp, &first[0].digest), (20, &c));
    assert_eq!(first[0].size, 1);
    assert_eq!(first[1].stamp, 30);
    let rest = index.least_recently_used(first.last(), 35, 2).unwrap();
    assert_eq!(rest.len(), 1, "only one more is stamped by 35: {rest:?}");
    assert_eq!(rest[0].stamp, 30);
    assert_ne!(rest[0].digest, first[1].digest);
}

#[test]
fn records_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let repo: RepoName = "library/x".parse().unwrap();
    let tag: Tag = "latest".parse().unwrap();
    let d = digest(7);
    {
        let index = Index::open(dir.path()).unwrap();
        index.put_blob(&d, &BlobRecord::new(3, None)).unwrap();
        let record = TagRecord {
            digest: d.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            checked_at_ms: 42,
        };
        index.put_tag("docker.io", &repo, &tag, &record).unwrap();
        index.link("docker.io", &repo, &d, "").unwrap();
        index.flush().unwrap();
    }
    let index = crate::storage::reopened(|| Index::open(dir.path()));
    assert_eq!(index.blob(&d).unwrap().unwrap().size, 3);
    assert_eq!(
        index
            .tag("docker.io", &repo, &tag)
            .unwrap()
            .unwrap()
            .checked_at_ms,
        42
    );
    assert_eq!(
        index.linked("docker.io", &repo, &d).unwrap().as_deref(),
        Some("")
    );
    assert_eq!(index.linked("ghcr.io", &repo, &d).unwrap(), None);
    index
        .link(
            "docker.io",
            &repo,
            &d,
            "application/vnd.oci.image.manifest.v1+json",
        )
        .unwrap();
    assert_eq!(
        index.linked("docker.io", &repo, &d).unwrap().as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let all: Vec<_> = index.blobs().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 1);
    index.remove_blob(&d).unwrap();
    assert!(index.blob(&d).unwrap().is_none());
}

/// Tag records written when the digest was a plain string still read back.
#[test]
fn tag_records_keep_their_stored_form() {
    let d = digest(7);
    let old = format!(
        r#"{{"digest":"{d}","media_type":"application/vnd.oci.image.index.v1+json","checked_at_ms":42}}"#
    );
    let record: TagRecord = decode(b"docker.io/library/x:latest", old.as_bytes()).unwrap();
    assert_eq!(record.digest, d);
    assert_eq!(record.checked_at_ms, 42);
    assert_eq!(encode(&record), old.as_bytes());
    let bad = old.replace(&d.to_string(), "sha256:nothex");
    assert!(matches!(
        decode::<TagRecord>(b"k", bad.as_bytes()),
        Err(IndexError::Corrupt { .. })
    ));
}

#[test]
fn totals_follow_every_change_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let totals = |blobs, bytes| Totals { blobs, bytes };
    {
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.totals().unwrap(), totals(0, 0));
        index
            .put_blob(&digest(1), &BlobRecord::new(10, None))
            .unwrap();
        assert!(index
            .put_new_blob(&digest(2), &BlobRecord::new(5, None))
            .unwrap());
        // Already there: not counted again.
        assert!(!index
            .put_new_blob(&digest(2), &BlobRecord::new(5, None))
            .unwrap());
        let repo: RepoName = "team/app".parse().unwrap();
        index
            .put_private_blob(&repo, &digest(3), &BlobRecord::new(7, None))
            .unwrap();
        assert_eq!(index.totals().unwrap(), totals(3, 22));
        // A touch moves the stamp, not the totals; a record replaced changes the bytes.
        let mut touched = index.blob(&digest(1)).unwrap().unwrap();
        touched.last_access_ms = 1;
        index.touch(&digest(1), touched).unwrap();
        index
            .put_blob(&digest(2), &BlobRecord::new(6, None))
            .unwrap();
        assert_eq!(index.totals().unwrap(), totals(3, 23));
        index.remove_blob(&digest(3)).unwrap();
        index.remove_blob(&digest(3)).unwrap();
        assert_eq!(index.totals().unwrap(), totals(2, 16));
        // The totals record is no blob: the LRU order does not show it.
        let lru = index.least_recently_used(None, u64::MAX, 10).unwrap();
        assert_eq!(lru.len(), 2);
        index.flush().unwrap();
    }
    let index = crate::storage::reopened(|| Index::open(dir.path()));
    assert_eq!(index.totals().unwrap(), totals(2, 16));
    assert_eq!(index.recount_totals().unwrap(), totals(2, 16));
    // An index from before the totals were kept is counted once when opened.
    index.blobs.remove(super::blobs::TOTALS_KEY).unwrap();
    index.flush().unwrap();
    drop(index);
    let index = crate::storage::reopened(|| Index::open(dir.path()));
    assert_eq!(index.totals().unwrap(), totals(2, 16));
}

/// The per-kind totals as a scan of `blobs` finds them.
fn recount_kinds(index: &Index) -> KindTotals {
    let mut kinds = KindTotals::default();
    for entry in index.blobs() {
        kinds.add(&entry.unwrap().1, 1);
    }
    kinds
}

fn manifest(size: u64) -> BlobRecord {
    BlobRecord::new(
        size,
        Some("application/vnd.oci.image.manifest.v1+json".into()),
    )
}

/// The per-kind totals equal a recount after every change, and add up to the overall ones.
fn assert_kinds_exact(index: &Index) {
    let kinds = index.kind_totals().unwrap().expect("per-kind totals kept");
    assert_eq!(kinds, recount_kinds(index));
    let totals = index.totals().unwrap();
    assert_eq!(kinds.manifests.blobs + kinds.blobs.blobs, totals.blobs);
    assert_eq!(kinds.manifests.bytes + kinds.blobs.bytes, totals.bytes);
}

/// One change to an index.
type Step = Box<dyn Fn(&Index)>;

#[test]
fn kind_totals_follow_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    // A new index keeps them from the start.
    assert_eq!(index.kind_totals().unwrap(), Some(KindTotals::default()));
    let repo: RepoName = "team/app".parse().unwrap();
    let steps: Vec<Step> = vec![
        Box::new(|i| i.put_blob(&digest(1), &manifest(10)).unwrap()),
        Box::new(|i| {
            i.put_new_blob(&digest(2), &BlobRecord::new(5, None))
                .unwrap();
        }),
        Box::new(|i| {
            i.put_new_blob(&digest(2), &manifest(99)).unwrap();
        }),
        Box::new(move |i| {
            i.put_private_blob(&repo, &digest(3), &BlobRecord::new(7, None))
                .unwrap();
        }),
        // Replaced: bigger, then of the other kind each way.
        Box::new(|i| i.put_blob(&digest(2), &BlobRecord::new(6, None)).unwrap()),
        Box::new(|i| i.put_blob(&digest(2), &manifest(6)).unwrap()),
        Box::new(|i| i.put_blob(&digest(1), &BlobRecord::new(4, None)).unwrap()),
        Box::new(|i| {
            let mut record = i.blob(&digest(3)).unwrap().unwrap();
            record.last_access_ms = 1;
            i.touch(&digest(3), record).unwrap();
        }),
        Box::new(|i| {
            i.remove_blob(&digest(2)).unwrap();
        }),
        Box::new(|i| {
            i.remove_blob(&digest(2)).unwrap();
        }),
    ];
    for step in &steps {
        step(&index);
        assert_kinds_exact(&index);
    }
    let kinds = index.kind_totals().unwrap().unwrap();
    assert_eq!(kinds.manifests, Totals::default());
    assert_eq!(
        kinds.blobs,
        Totals {
            blobs: 2,
            bytes: 11
        }
    );
    // The record is no blob: the LRU order does not show it.
    assert_eq!(
        index.least_recently_used(None, u64::MAX, 10).unwrap().len(),
        2
    );
}

/// An index from before the per-kind totals: not counted when opened, then counted in chunks
/// while blobs come, change kind and go on both sides of the count's position, and resumed
/// after a count cut short.
#[test]
fn an_older_index_is_counted_later_and_exactly_while_blobs_change() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = Index::open(dir.path()).unwrap();
        for n in 0..40u8 {
            let record = if n % 3 == 0 {
                manifest(n as u64 + 1)
            } else {
                BlobRecord::new(n as u64 + 100, None)
            };
            index.put_blob(&digest(n), &record).unwrap();
        }
        index.blobs.remove(super::kinds::KINDS_KEY).unwrap();
        index.flush().unwrap();
    }
    let index = crate::storage::reopened(|| Index::open(dir.path()));
    assert_eq!(index.kind_totals().unwrap(), None);
    // Between chunks: one change of each sort, to digests spread over the key order.
    let mut round = 0u8;
    let mut change = |index: &Index| {
        let n = round;
        round += 1;
        index
            .put_blob(&digest(100 + n), &manifest(n as u64))
            .unwrap();
        index.remove_blob(&digest(n)).unwrap();
        index
            .put_blob(&digest(39 - n % 20), &BlobRecord::new(7 + n as u64, None))
            .unwrap();
        index.put_blob(&digest(20 + n % 20), &manifest(3)).unwrap();
    };
    // Cut short after three chunks (by a panic between chunks, as a crash would).
    let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut chunks = 0;
        index.count_kinds(4, || {
            change(&index);
            chunks += 1;
            if chunks == 3 {
                panic!("cut short");
            }
        })
    }));
    assert!(cut.is_err());
    assert_eq!(index.kind_totals().unwrap(), None);
    change(&index);
    let counted = index.count_kinds(3, || change(&index)).unwrap();
    assert_eq!(counted, recount_kinds(&index));
    assert_kinds_exact(&index);
    // Kept from then on, and across a reopen.
    change(&index);
    assert_kinds_exact(&index);
    index.flush().unwrap();
    drop(index);
    let index = crate::storage::reopened(|| Index::open(dir.path()));
    assert_kinds_exact(&index);
}

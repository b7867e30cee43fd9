use super::*;

/// Data directories from before `manifest_repos` have manifests it does not know about:
/// the repair adds them, and drops entries whose manifest is gone.
#[test]
fn manifest_repos_are_repaired_from_repo_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let repo: RepoName = "team/app".parse().unwrap();
    let (old, stray) = (Digest::of(b"old"), Digest::of(b"stray"));
    index
        .project
        .repo_manifests
        .insert(repo_manifest_key(&repo, &old), "x/y")
        .unwrap();
    index
        .project
        .manifest_repos
        .insert(repo_blob_key(&stray, &repo), &[] as &[u8])
        .unwrap();
    assert!(!index.is_private(&old).unwrap());
    assert_eq!(index.repair_manifest_repos().unwrap(), 2);
    assert!(index.is_private(&old).unwrap());
    assert!(!index.is_private(&stray).unwrap());
    assert_eq!(index.repair_manifest_repos().unwrap(), 0);
}

#[test]
fn private_trees() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let repo: RepoName = "team/app".parse().unwrap();
    let other: RepoName = "team/app2".parse().unwrap();
    let d = Digest::of(b"m");
    let layer = Digest::of(b"l");
    index.link_repo_blob(&repo, &layer).unwrap();
    assert!(index.repo_has_blob(&repo, &layer).unwrap());
    assert!(!index.repo_has_blob(&other, &layer).unwrap());
    assert!(index.is_private(&layer).unwrap());
    assert!(!index.is_private(&d).unwrap());

    let (v1, v2): (Tag, Tag) = ("v1".parse().unwrap(), "v2".parse().unwrap());
    let manifest_record = BlobRecord::new(1, Some("x/y".into()));
    let pushed = |repo, tag| PushedManifest {
        repo,
        digest: &d,
        media_type: "x/y",
        size: 1,
        tag,
        referrer: None,
    };
    assert!(index
        .put_private_manifest(&pushed(&repo, Some(&v2)), &manifest_record)
        .unwrap());
    assert!(!index
        .put_private_manifest(&pushed(&other, None), &manifest_record)
        .unwrap());
    index.put_repo_tag(&repo, &v1, &d).unwrap();
    let tags: Vec<String> = index
        .repo_tags(&repo)
        .unwrap()
        .into_iter()
        .map(|(t, _)| t.to_string())
        .collect();
    assert_eq!(tags, ["v1", "v2"]);
    assert!(
        index.repo_tags(&other).unwrap().is_empty(),
        "prefix scan leaked into team/app2"
    );
    assert_eq!(index.repositories().unwrap(), ["team/app", "team/app2"]);

    let record = ReferrerRecord {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: Digest::of(b"sig"),
        size: 3,
        artifact_type: Some("application/example".into()),
        annotations: None,
    };
    let signature = Digest::of(b"sig");
    index
        .put_private_manifest(
            &PushedManifest {
                repo: &repo,
                digest: &signature,
                media_type: "x/y",
                size: 3,
                tag: None,
                referrer: Some((&d, &record)),
            },
            &BlobRecord::new(3, None),
        )
        .unwrap();
    assert_eq!(index.referrers(&repo, &d).unwrap(), vec![record]);
    assert!(index.remove_repo_manifest(&repo, &signature).unwrap());
    assert!(index.referrers(&repo, &d).unwrap().is_empty());

    assert!(index.remove_repo_manifest(&repo, &d).unwrap());
    assert!(
        index.repo_tags(&repo).unwrap().is_empty(),
        "tags of a deleted manifest remain"
    );
    assert!(index.repo_manifest(&repo, &d).unwrap().is_none());
    assert!(index.repo_manifest(&other, &d).unwrap().is_some());
    assert!(!index.remove_repo_manifest(&repo, &d).unwrap());
    // Still a manifest of team/app2, even once a blob DELETE unlinked it there.
    assert!(index.unlink_repo_blob(&other, &d).unwrap());
    assert!(index.is_private(&d).unwrap());
    assert!(index.remove_repo_manifest(&other, &d).unwrap());
    assert!(!index.is_private(&d).unwrap());
    assert_eq!(
        parse_repo_tag_key(b"team/app:v1").map(|(r, t)| (r.to_string(), t.to_string())),
        Some(("team/app".into(), "v1".into()))
    );
}

use super::*;
use crate::oci::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::oci::ErrorCode;

fn d(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn digest(c: char) -> Digest {
    d(c).parse().unwrap()
}

fn code(body: &str, content_type: Option<&str>) -> ErrorCode {
    Manifest::parse(body.as_bytes(), content_type)
        .unwrap_err()
        .code()
}

#[test]
fn a_docker_v2_manifest() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{}"}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{}"}}]}}"#,
        d('a'),
        d('b')
    );
    let manifest = Manifest::parse(body.as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
    assert_eq!(manifest.media_type, DOCKER_MANIFEST);
    assert!(manifest.names_media_type);
    assert!(!manifest.is_index());
    assert_eq!(manifest.config.as_ref().unwrap().size, Some(7));
    assert_eq!(manifest.pulled_blobs(), [digest('a'), digest('b')]);
    let parts: Vec<_> = manifest.config_and_layers().unwrap().collect();
    assert_eq!(parts.len(), 2);
    // Without a Content-Type, the body says what it is.
    assert_eq!(
        Manifest::parse(body.as_bytes(), None).unwrap().media_type,
        DOCKER_MANIFEST
    );
}

#[test]
fn an_oci_manifest_with_foreign_layers_pulls_only_the_distributable_ones() {
    let body = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[
            {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}"}},
            {{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{}"}},
            {{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}"}}]}}"#,
        d('a'),
        d('b'),
        d('c'),
        d('d')
    );
    // No mediaType and no Content-Type: config and layers make it an image manifest.
    let manifest = Manifest::parse(body.as_bytes(), None).unwrap();
    assert_eq!(manifest.media_type, OCI_MANIFEST);
    assert!(!manifest.names_media_type);
    assert_eq!(manifest.pulled_blobs(), [digest('a'), digest('d')]);
    // What it references still names all four (gc goes by that).
    assert_eq!(manifest.references().count(), 4);
    // A Content-Type with parameters and in capitals is still the type.
    let declared = "Application/VND.oci.image.manifest.v1+json; charset=utf-8";
    assert_eq!(
        Manifest::parse(body.as_bytes(), Some(declared))
            .unwrap()
            .media_type,
        OCI_MANIFEST
    );
}

#[test]
fn an_oci_index_lists_its_entries_with_their_platforms() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"amd64","variant":""}}}},
            {{"digest":"{}","platform":{{"architecture":"unknown"}}}}]}}"#,
        d('d'),
        d('e'),
        d('f')
    );
    let index = Manifest::parse(body.as_bytes(), Some(OCI_INDEX)).unwrap();
    assert!(index.is_index());
    let platforms: Vec<Option<String>> = index
        .manifests
        .iter()
        .map(|entry| entry.platform.as_ref().map(ToString::to_string))
        .collect();
    assert_eq!(
        platforms,
        [
            Some("linux/arm64/v8".into()),
            Some("linux/amd64".into()),
            None
        ]
    );
    assert!(index.pulled_blobs().is_empty());
    assert_eq!(
        index.references().cloned().collect::<Vec<_>>(),
        [digest('d'), digest('e'), digest('f')]
    );
    assert!(matches!(
        index.config_and_layers().map(|_| ()),
        Err(ParseError::Manifest(InvalidManifest::NoConfig))
    ));
}

#[test]
fn a_docker_manifest_list_and_a_bare_index() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{{"digest":"{}"}}]}}"#,
        d('a')
    );
    let list = Manifest::parse(body.as_bytes(), None).unwrap();
    assert_eq!(list.media_type, DOCKER_MANIFEST_LIST);
    assert!(list.is_index());
    // No mediaType: a list of manifests is an OCI index.
    let bare = Manifest::parse(br#"{"schemaVersion":2,"manifests":[]}"#, None).unwrap();
    assert_eq!(bare.media_type, OCI_INDEX);
}

#[test]
fn an_artifact_with_a_subject() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sig",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},
            "layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":40}},
            "annotations":{{"org.example":"yes"}}}}"#,
        d('a'),
        d('c')
    );
    let artifact = Manifest::parse(body.as_bytes(), Some(OCI_MANIFEST)).unwrap();
    assert_eq!(artifact.subject.as_ref().unwrap().digest, digest('c'));
    assert_eq!(
        artifact.artifact_type(),
        Some("application/vnd.example.sig")
    );
    assert_eq!(
        artifact.annotations,
        Some(serde_json::json!({"org.example": "yes"}))
    );
    // The subject is another image: referenced, not pulled.
    assert_eq!(artifact.pulled_blobs(), [digest('a')]);
    assert_eq!(
        artifact.references().cloned().collect::<Vec<_>>(),
        [digest('a'), digest('c')]
    );
    // Without artifactType, the config's media type stands for it.
    let untyped = body.replace(r#""artifactType":"application/vnd.example.sig","#, "");
    let untyped = Manifest::parse(untyped.as_bytes(), None).unwrap();
    assert_eq!(
        untyped.artifact_type(),
        Some("application/vnd.oci.empty.v1+json")
    );
    assert!(artifact.heap_bytes() > untyped.heap_bytes());
}

#[test]
fn bad_inputs_are_manifest_invalid_or_size_invalid() {
    let good = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{}"}},"layers":[]}}"#,
        d('a')
    );
    assert!(Manifest::parse(good.as_bytes(), Some(OCI_MANIFEST)).is_ok());
    for (body, content_type) in [
        ("{not json", Some(OCI_MANIFEST)),
        ("[]", None),
        (r#"{"schemaVersion":1,"fsLayers":[]}"#, None),
        (
            r#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
            None,
        ),
        (r#"{"schemaVersion":2,"mediaType":"text/html"}"#, None),
        (r#"{"schemaVersion":2}"#, None),
        (r#"{"schemaVersion":2,"config":{}}"#, None),
        (good.as_str(), Some("text/plain")),
        (good.as_str(), Some(OCI_INDEX)),
        (&good.replace(&d('a'), "sha256:nothex"), None),
        (
            &good.replace(&d('a'), &format!("sha512:{}", "a".repeat(128))),
            None,
        ),
        (
            &good.replace(r#""layers":[]"#, r#""layers":[{"size":1}]"#),
            None,
        ),
        (
            &good.replace(r#""layers":[]"#, r#""layers":[{"digest":5}]"#),
            None,
        ),
    ] {
        assert_eq!(
            code(body, content_type),
            ErrorCode::ManifestInvalid,
            "{body} as {content_type:?}"
        );
    }
    assert!(matches!(
        Manifest::parse(good.replace(&d('a'), "sha256:x").as_bytes(), None),
        Err(ParseError::Manifest(InvalidManifest::Digest(d))) if d == "sha256:x"
    ));
    let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert_eq!(
        Manifest::parse(&huge, None).unwrap_err().code(),
        ErrorCode::SizeInvalid
    );
    assert!(Manifest::parse(b"\x1f\x8b binary layer", None).is_err());
}

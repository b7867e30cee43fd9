use super::*;

/// A CA and a leaf for 127.0.0.1 it signed, as PEM files in `dir`: (ca, cert, key).
fn write_pair(dir: &Path, name: &str) -> (PathBuf, PairFiles) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let files = PairFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    let ca_path = dir.join(format!("{name}-ca.crt"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&files.cert, leaf.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    (ca_path, files)
}

#[test]
fn a_pair_loads_and_a_mismatched_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = write_pair(dir.path(), "a");
    let (_, b) = write_pair(dir.path(), "b");
    let pair = load_pair(&a).unwrap();
    assert_eq!(fingerprint(&pair).len(), 64);
    let crossed = PairFiles {
        cert: a.cert.clone(),
        key: b.key.clone(),
    };
    assert!(
        matches!(load_pair(&crossed), Err(TlsError::Pair { .. })),
        "a key that is not the certificate's was accepted"
    );
    // The files swapped around: no certificate where one is expected, no key where a key is.
    let swapped = PairFiles {
        cert: a.key.clone(),
        key: a.cert.clone(),
    };
    assert!(matches!(
        load_pair(&swapped),
        Err(TlsError::NoCertificate { .. })
    ));
    let no_key = PairFiles {
        cert: a.cert.clone(),
        key: a.cert.clone(),
    };
    assert!(matches!(load_pair(&no_key), Err(TlsError::NoKey { .. })));
    let missing = PairFiles {
        cert: dir.path().join("nope.crt"),
        key: a.key.clone(),
    };
    assert!(matches!(load_pair(&missing), Err(TlsError::Read { .. })));
}

#[test]
fn the_resolver_hands_out_the_pair_last_put_in() {
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = write_pair(dir.path(), "a");
    let (_, b) = write_pair(dir.path(), "b");
    let (a, b) = (load_pair(&a).unwrap(), load_pair(&b).unwrap());
    let (fa, fb) = (fingerprint(&a), fingerprint(&b));
    assert_ne!(fa, fb);
    let resolver = CertResolver::new(a);
    let held = resolver.current();
    resolver.replace(b);
    assert_eq!(fingerprint(&resolver.current()), fb);
    // What an open connection took stays what it was.
    assert_eq!(fingerprint(&held), fa);
}

#[test]
fn settings_build_a_config_with_and_without_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, files) = write_pair(dir.path(), "a");
    let mut server: ServerSettings =
        serde_json::from_value(serde_json::json!({"listen": "127.0.0.1:0", "workers": 1})).unwrap();
    assert!(Tls::from_settings(&server).unwrap().is_none());
    server.tls_certificate = Some(files.cert.clone());
    server.tls_key = Some(files.key.clone());
    assert!(Tls::from_settings(&server).unwrap().is_some());
    server.tls_client_ca = Some(ca);
    assert!(Tls::from_settings(&server).unwrap().is_some());
    server.tls_client_ca = Some(files.key.clone());
    assert!(matches!(
        Tls::from_settings(&server),
        Err(TlsError::ClientCa { .. })
    ));
}

use super::*;

fn platform(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
    Platform {
        os: os.into(),
        architecture: architecture.into(),
        variant: variant.map(Into::into),
    }
}

#[test]
fn platforms_parse_and_select_as_written() {
    assert_eq!("all".parse::<Platforms>(), Ok(Platforms::All));
    let wanted: Platforms = "linux/amd64, linux/arm/v7".parse().unwrap();
    assert_eq!(wanted.to_string(), "linux/amd64, linux/arm/v7");
    assert!(wanted.selects(Some(&platform("linux", "amd64", None))));
    assert!(wanted.selects(Some(&platform("linux", "amd64", Some("v3")))));
    assert!(wanted.selects(Some(&platform("linux", "arm", Some("v7")))));
    assert!(!wanted.selects(Some(&platform("linux", "arm", Some("v6")))));
    assert!(!wanted.selects(Some(&platform("windows", "amd64", None))));
    // An entry that names no platform (an attestation, say) only with `all`.
    assert!(!wanted.selects(None));
    assert!(Platforms::All.selects(None));
    for bad in ["linux", "", "linux/", "/amd64", "a/b/c/d"] {
        assert!(bad.parse::<Platforms>().is_err(), "{bad:?}");
    }
}

#[test]
fn the_format_follows_the_name() {
    assert_eq!(Format::for_path(Path::new("site.tar")), Format::Tar);
    assert_eq!(Format::for_path(Path::new("site")), Format::Dir);
    assert_eq!(Format::for_path(Path::new("site.tar.d")), Format::Dir);
}

//! What reading a manifest costs: [`Manifest::parse`] of a typical image manifest (a config
//! and 12 layers) and of a multi-platform index (8 entries), beside sha256 of the same body
//! (which every fetched or loaded manifest pays already) and the media-type guess the mirror
//! made before the model existed (`passthrough_media_type`, kept for bodies the model rejects).
//!
//! The mirror parses a manifest once when it fetches it, the cache once when it reads one back
//! from disk; serving a cached manifest parses nothing. So this is a cost per upstream fetch or
//! per disk load, not per request.
//!
//! `cargo bench --bench manifest`; `ROUNDS` (default 200_000) sets the repetitions.

use std::hint::black_box;
use std::time::Instant;

use berth::oci::media::{self, OCI_INDEX, OCI_MANIFEST};
use berth::oci::{Digest, Manifest};

fn main() {
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let digest = |i: usize| Digest::of(&i.to_le_bytes()).to_string();
    let descriptor = |media_type: &str, i: usize, extra: &str| {
        format!(
            r#"{{"mediaType":"{media_type}","digest":"{}","size":{}{extra}}}"#,
            digest(i),
            1000 + i
        )
    };
    let layers: Vec<String> = (1..=12)
        .map(|i| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", i, ""))
        .collect();
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}],"annotations":{{"org.opencontainers.image.created":"2026-01-01T00:00:00Z"}}}}"#,
        descriptor("application/vnd.oci.image.config.v1+json", 0, ""),
        layers.join(",")
    );
    let platforms = [
        "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le",
    ];
    let entries: Vec<String> = platforms
        .iter()
        .enumerate()
        .map(|(i, arch)| {
            let platform = format!(r#","platform":{{"os":"linux","architecture":"{arch}"}}"#);
            descriptor(OCI_MANIFEST, 100 + i, &platform)
        })
        .collect();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        entries.join(",")
    );

    println!("| body | bytes | sha256 µs | old media-type guess µs | Manifest::parse µs |");
    println!("|---|---|---|---|---|");
    for (name, body, content_type) in [
        ("image, 12 layers", &image, OCI_MANIFEST),
        ("index, 8 entries", &index, OCI_INDEX),
    ] {
        let body = body.as_bytes();
        assert!(Manifest::parse(body, Some(content_type)).is_ok());
        let time = |work: &dyn Fn()| {
            let start = Instant::now();
            for _ in 0..rounds {
                work();
            }
            start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
        };
        let sha = time(&|| {
            black_box(Digest::of(black_box(body)));
        });
        let guess = time(&|| {
            black_box(media::passthrough_media_type(None, black_box(body)));
        });
        let parse = time(&|| {
            black_box(Manifest::parse(black_box(body), Some(content_type)).ok());
        });
        println!(
            "| {name} | {} | {sha:.2} | {guess:.2} | {parse:.2} |",
            body.len()
        );
    }
}

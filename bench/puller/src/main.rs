//! A registry client for bench/pull.sh (CLIENT=oci-client): pulls one image with the
//! `oci-client` crate the way container engines do. It fetches the image manifest, then the
//! config and the layers three at a time (docker's default `max-concurrent-downloads`), each
//! checked against its digest by oci-client while it streams into a file (or nowhere, with `-`).
//!
//! Usage: berth-bench-puller HOST:PORT REPO:TAG DEST_DIR|-
//! Prints the number of blob bytes received.

use std::process::ExitCode;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

const PARALLEL: usize = 3;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [registry, image, dest] = args.as_slice() else {
        eprintln!("usage: berth-bench-puller HOST:PORT REPO:TAG DEST_DIR|-");
        return ExitCode::from(2);
    };
    match pull(registry, image, dest).await {
        Ok(bytes) => {
            println!("{bytes}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pull failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn pull(registry: &str, image: &str, dest: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let reference: Reference = format!("{registry}/{image}").parse()?;
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        // bench/upstream_log.py counts a direct pull's requests by this prefix.
        user_agent: "berth-bench-client (oci-client)",
        ..Default::default()
    });
    let auth = RegistryAuth::Anonymous;
    let (manifest, _digest) = client.pull_image_manifest(&reference, &auth).await?;
    let blobs: Vec<_> = std::iter::once(manifest.config.clone())
        .chain(manifest.layers.iter().cloned())
        .collect();
    let sizes = futures_util::stream::iter(blobs)
        .map(|blob| {
            let (client, reference) = (&client, &reference);
            async move {
                if dest == "-" {
                    client.pull_blob(reference, &blob, tokio::io::sink()).await?;
                } else {
                    let hex = blob.digest.trim_start_matches("sha256:");
                    let file = tokio::fs::File::create(format!("{dest}/{hex}")).await?;
                    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
                    client.pull_blob(reference, &blob, &mut file).await?;
                    tokio::io::AsyncWriteExt::flush(&mut file).await?;
                }
                Ok::<u64, Box<dyn std::error::Error>>(blob.size as u64)
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<u64>>()
        .await?;
    Ok(sizes.iter().sum())
}

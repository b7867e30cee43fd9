//! Generated test images: real tar layers (plain, or gzip with stored blocks) of random bytes,
//! real config blobs, and all four manifest media types, so any client can pull them.

use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A blob with its digest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub media_type: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Self {
        Blob {
            digest: sha256(&data),
            media_type: media_type.to_owned(),
            data,
        }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// One manifest (image or index) with everything it needs pushed before it.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Blob,
    pub blobs: Vec<Blob>,
    /// Child manifests of an index, pushed by digest before the index.
    pub children: Vec<Image>,
}

impl Image {
    /// Every blob and manifest this image consists of, children included.
    pub fn all_blobs(&self) -> Vec<&Blob> {
        let mut all: Vec<&Blob> = self.blobs.iter().collect();
        for child in &self.children {
            all.extend(child.all_blobs());
            all.push(&child.manifest);
        }
        all
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.all_blobs()
            .into_iter()
            .filter(|b| b.media_type.contains("layer") || b.media_type.contains("rootfs"))
            .map(|b| b.digest.clone())
            .collect()
    }
}

/// Deterministic, incompressible bytes (xorshift64*).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A one-file ustar archive.
pub fn tar_with_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"14000000000\0");
    header[148..156].copy_from_slice(b"        ");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    let sum: u32 = header.iter().map(|&b| b as u32).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, entry) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// A valid gzip stream of `data` using stored (uncompressed) deflate blocks.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Oci,
    Docker,
}

/// A single-platform image with layers of the given sizes (bytes of random file content).
pub fn image(flavor: Flavor, seed: u64, layer_sizes: &[usize], arch: &str) -> Image {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, &size) in layer_sizes.iter().enumerate() {
        let tar = tar_with_file(
            &format!("file-{seed}-{i}.bin"),
            &random_bytes(seed * 1000 + i as u64, size),
        );
        diff_ids.push(sha256(&tar));
        layers.push(match flavor {
            Flavor::Oci => Blob::new("application/vnd.oci.image.layer.v1.tar", tar),
            Flavor::Docker => Blob::new(
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                gzip_stored(&tar),
            ),
        });
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": format!("berth test image {seed}")}],
    });
    let config = Blob::new(
        match flavor {
            Flavor::Oci => "application/vnd.oci.image.config.v1+json",
            Flavor::Docker => "application/vnd.docker.container.image.v1+json",
        },
        serde_json::to_vec(&config).unwrap(),
    );
    let media_type = match flavor {
        Flavor::Oci => OCI_MANIFEST,
        Flavor::Docker => DOCKER_MANIFEST,
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let mut blobs = vec![config];
    blobs.extend(layers);
    Image {
        manifest: Blob::new(media_type, serde_json::to_vec_pretty(&manifest).unwrap()),
        blobs,
        children: Vec::new(),
    }
}

/// A two-platform index (OCI) or manifest list (Docker).
pub fn multi_arch(flavor: Flavor, seed: u64, layer_sizes: &[usize]) -> Image {
    let children: Vec<Image> = ["amd64", "arm64"]
        .iter()
        .enumerate()
        .map(|(i, arch)| image(flavor, seed * 10 + i as u64, layer_sizes, arch))
        .collect();
    let media_type = match flavor {
        Flavor::Oci => OCI_INDEX,
        Flavor::Docker => DOCKER_LIST,
    };
    let entries: Vec<_> = children
        .iter()
        .zip(["amd64", "arm64"])
        .map(|(child, arch)| {
            let mut d = child.manifest.descriptor();
            d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
            d
        })
        .collect();
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": media_type, "manifests": entries});
    Image {
        manifest: Blob::new(media_type, serde_json::to_vec_pretty(&index).unwrap()),
        blobs: Vec::new(),
        children,
    }
}

/// An image of `extra`'s config and layers plus `shared` (a layer of another image).
pub fn with_layer(extra: &Image, shared: &Blob) -> Image {
    let mut blobs = extra.blobs.clone();
    blobs.push(shared.clone());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": blobs[0].descriptor(),
        "layers": blobs[1..].iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    Image {
        manifest: Blob::new(OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap()),
        blobs,
        children: Vec::new(),
    }
}

//! Bundles for the air gap: images carried as OCI image layouts
//! (<https://github.com/opencontainers/image-spec/blob/main/image-layout.md>), a tar or a
//! directory that any OCI tool reads. `export` writes one from a running berth, as a registry
//! client; nothing here is berth-specific on disk.

pub mod export;

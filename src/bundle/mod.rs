//! Bundles for the air gap: images carried as OCI image layouts
//! (<https://github.com/opencontainers/image-spec/blob/main/image-layout.md>), a tar or a
//! directory that any OCI tool reads; nothing here is berth-specific on disk. [`export`]
//! writes one from a running berth, as a registry client; [`import`] verifies one and loads it
//! into the mirror cache or a private project.

pub mod export;
pub mod import;

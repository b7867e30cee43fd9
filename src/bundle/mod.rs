//! Bundles for the air gap: OCI image layouts (a directory, or a tar of one) carried to a site
//! that never reaches an upstream. [`import`] verifies one and loads it into the mirror cache
//! or a private project.

pub mod import;

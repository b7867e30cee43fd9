//! berth: a registry mirror daemon. See `docs/architecture.md` for how the layers fit:
//! `http` → `registry` → {`upstream`, `cache` → `storage`}, imports running downward only;
//! `oci` (the spec's names, digests, media types and error codes) is a leaf any layer may use.

pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod oci;
pub mod registry;
pub mod server;
pub mod storage;
pub mod upstream;

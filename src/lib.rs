//! berth: a registry mirror daemon. See `docs/architecture.md` for how the layers fit:
//! `http` → `registry` → {`upstream`, `cache` → `storage`}.

pub mod auth;
pub mod cache;
pub mod config;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod oci;
pub mod registry;
pub mod server;
pub mod storage;
pub mod upstream;

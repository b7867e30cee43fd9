//! berth: a registry mirror daemon. See `docs/architecture.md` for how the layers fit:
//! `server` → `http` → `registry` → {`auth`, `upstream`, `cache` → `storage`}, imports running
//! downward only (checked by `tests/layers.rs`); `config` imports only `oci`, and `oci` (the
//! spec's names, digests, manifests, media types and error codes), `metrics`, `memory` and
//! `clock` are leaves any layer may use.

pub mod auth;
pub mod bundle;
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

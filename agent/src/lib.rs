//! skiffd: a Kubernetes node's container runtime. The CRI gRPC services (`cri`), the records they keep
//! (`store`), the per-container monitor (`monitor`), pinned pod namespaces (`pinns`) and the infra
//! process of a shared PID namespace (`infra`).

pub mod authority;
pub mod config;
pub mod cri;
pub mod deadline;
pub mod execsync;
pub mod infra;
pub mod monitor;
pub mod node;
pub mod pinns;
pub mod pinns_userns;
pub mod server;
pub mod store;
pub mod stream;

/// Nanoseconds since the Unix epoch, the CRI's timestamp unit.
pub use skiff_sys::time::now_ns;

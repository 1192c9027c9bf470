//! skiffd: a Kubernetes node's container runtime. The CRI gRPC services (`cri`), the records they keep
//! (`store`), the per-container monitor (`monitor`) and pinned pod namespaces (`pinns`).

pub mod config;
pub mod cri;
pub mod execsync;
pub mod monitor;
pub mod pinns;
pub mod server;
pub mod store;
pub mod stream;

/// Nanoseconds since the Unix epoch, the CRI's timestamp unit.
pub use skiff_sys::time::now_ns;

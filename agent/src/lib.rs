//! skiffd: a Kubernetes node's container runtime. The CRI gRPC services (`cri`), the records they keep
//! (`store`), and `skiff-monitor`'s helpers (`monitor`: the per-container monitor, pinned pod
//! namespaces, the infra process of a shared PID namespace, exec) with their `protocol`.

pub mod authority;
pub mod config;
pub mod cri;
pub mod deadline;
pub mod monitor;
pub mod node;
pub mod server;
pub mod store;
pub mod stream;

/// Nanoseconds since the Unix epoch, the CRI's timestamp unit.
pub use skiff_sys::time::now_ns;

//! The real Kubernetes components for tests: where their binaries are ([`bin`]), a control plane on loopback
//! ([`ControlPlane`]), a node joined with the stock kubelet ([`KubeletNode`]) or with
//! skiffd as its kubelet ([`skiff_node`]), and the processes they run as ([`Daemon`]).

pub mod bin;
pub mod cgroup_root;
pub mod control_plane;
pub mod daemon;
pub mod loopback;
pub mod netns_node;
pub mod node;
pub mod pod_cluster;
pub mod pod_json;
pub mod skiff_node;
pub mod stale;

pub use control_plane::ControlPlane;
pub use daemon::Daemon;
pub use node::KubeletNode;

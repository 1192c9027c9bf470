//! The real Kubernetes components for tests: where their binaries are ([`bin`]), a control plane on loopback
//! ([`ControlPlane`]), and the processes they run as ([`Daemon`]).

pub mod bin;
pub mod control_plane;
pub mod daemon;
pub mod loopback;
pub mod node;

pub use control_plane::ControlPlane;
pub use daemon::Daemon;

//! IP address management: the built-in host-local compatible allocator and
//! delegation to an external IPAM plugin.

pub mod config;
pub mod delegate;
pub mod hostlocal;
pub mod store;

pub use config::IpamConfig;

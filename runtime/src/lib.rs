//! skiff's container runtime: an OCI runtime-spec bundle in, a running container out.

pub mod cgroups;
pub mod cli;
pub mod container;
pub mod exe;
pub mod features;
pub mod hooks;
pub mod image;
pub mod mountinfo;
pub mod namespaces;
pub mod nsfs;
pub mod private_dir;
pub mod process;
pub mod rootfs;
pub mod security;
pub mod spec;
pub mod state;
pub mod sync;
pub mod terminal;

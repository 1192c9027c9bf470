//! skiff's container runtime: an OCI runtime-spec bundle in, a running container out.

pub mod cli;
pub mod image;

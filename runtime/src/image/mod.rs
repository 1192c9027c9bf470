//! Images: pull from registries into a shared, content-addressed layer store, unpacked safely.
//!
//! ```no_run
//! use skiff_runtime::image::{self, rootfs, PullOptions, Reference, Store};
//!
//! # fn main() -> Result<(), image::Error> {
//! let store = Store::open(image::store::DEFAULT_ROOT)?;
//! let reference = Reference::parse("busybox")?; // docker.io/library/busybox:latest
//! let record = image::pull(&store, &reference, &PullOptions::default())?;
//! let lower = rootfs::layer_dirs(&store, &record)?; // lowest first
//! let run = rootfs::run_config(&store, &record)?; // Entrypoint, Cmd, Env, ...
//! # let _ = (lower, run);
//! # Ok(())
//! # }
//! ```
//!
//! Pieces, by module: [`reference`](mod@reference) parses and normalises names; [`hosts`] reads mirrors,
//! insecure registries and CA files; [`auth`] holds credentials and parses challenges;
//! [`registry`] speaks the distribution API over [`tls`]; [`manifest`] classifies manifests
//! and indexes and picks a platform; [`pull`](mod@pull) streams every layer through digest and diffID
//! checks into [`unpack`] (over its own [`tar`] reader); [`store`] keeps blobs, one directory
//! per chain ID, and image records; [`rootfs`] hands a later step what a container needs.

pub mod auth;
pub mod bundle;
pub mod digest;
pub mod error;
pub mod hosts;
pub mod limits;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod store;
pub mod tar;
pub mod tls;
pub mod unpack;

pub use auth::Credentials;
pub use digest::Digest;
pub use error::{Error, Result};
pub use hosts::HostsConfig;
pub use manifest::Platform;
pub use pull::{pull, Progress, PullOptions};
pub use reference::Reference;
pub use store::{ImageRecord, PruneReport, Store};

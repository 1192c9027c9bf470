//! Images: pull from registries into a shared, content-addressed layer store, unpacked safely.

pub mod auth;
pub mod digest;
pub mod error;
pub mod hosts;
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

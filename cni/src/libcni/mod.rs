//! The runtime side of CNI: load network configs, find and execute plugins,
//! chain results through a config list and cache them per attachment.

pub mod cache;
pub mod conf;
pub mod exec;
pub mod runner;

pub use conf::{load_dir, load_file};
pub use exec::{find_plugin, run_plugin, Invocation};
pub use runner::{Attachment, Cni};

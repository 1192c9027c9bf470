//! Helpers shared by the integration tests of the `skiff` runtime CLI.
//!
//! The binary under test comes from `SKIFF_BIN`, else `<workspace>/target/debug/skiff`.
//! Every test gets its own state root, its own bundle copies and unique container ids,
//! so tests run in parallel; dropping a [`TestEnv`] force-deletes what the test created.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

pub mod assert;
pub mod binary;
pub mod bundle;
pub mod cmd;
pub mod console;
pub mod cri;
pub mod env;
pub mod host;
pub mod k8s;
pub mod kube;
pub mod peers;
pub mod probe_image;
pub mod registry;
pub mod rootfs;
pub mod security;
pub mod stream;

pub use assert::{assert_failed_mentioning, assert_ok, mentions};
pub use binary::{is_runc, runtime_bin, skip_on_runc};
pub use bundle::Bundle;
pub use cmd::Output;
pub use console::ConsoleSocket;
pub use env::TestEnv;

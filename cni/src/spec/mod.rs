//! CNI specification types: errors, network configuration, results, the
//! plugin environment and version negotiation.

/// The CNI version skiff speaks; errors carry it as well as version answers.
pub const CURRENT: &str = "1.1.0";

pub mod env;
pub mod error;
pub mod netconf;
pub mod result;
pub mod version;

pub use env::{Command, Env};
pub use error::{CniError, ErrorCode};
pub use netconf::{NetConf, NetConfList, ValidAttachment};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};

//! SPDY/3.1, the framing layer kubectl and crictl still use for exec, attach and port-forward.

mod dictionary;
pub mod frame;
pub mod headers;
pub mod session;

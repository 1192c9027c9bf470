//! SPDY/3.1, the framing layer kubectl and crictl still use for exec, attach and port-forward.

pub mod frame;

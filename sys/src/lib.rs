//! The operating-system primitives the runtime, the CNI plugin and skiffd all need, each written
//! once: atomic file replacement (`fs`), close-on-exec descriptors (`fd`), random ids (`id`), the
//! wall clock in the CRI's unit (`time`) and the bpf() syscall with its instruction (`bpf`).

pub mod bpf;
pub mod fd;
pub mod fs;
pub mod id;
pub mod time;

//! Pinned namespaces: a pod's network, IPC and UTS namespaces kept alive by bind mounts of their nsfs
//! files, so no process has to hold them.

/// `skiff-monitor pinns ...`: creates and pins a pod's namespaces.
pub fn main(_args: &[String]) -> i32 {
    eprintln!("skiff-monitor pinns: not built yet");
    2
}

/// `skiff-monitor infra ...`: PID 1 of a pod's shared PID namespace.
pub fn infra_main(_args: &[String]) -> i32 {
    eprintln!("skiff-monitor infra: not built yet");
    2
}

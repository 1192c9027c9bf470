//! The per-container monitor: a small process, one per container, that outlives skiffd. It creates the
//! container through the runtime library with its stdio on pipes, writes the CRI log file, records the
//! exit status atomically, and serves attach.
//!
//! The `skiff-monitor` binary also hosts skiffd's other single-threaded helpers: work that forks or
//! changes namespaces cannot run inside skiffd's multi-threaded process.

/// Entry point of the `skiff-monitor` binary; returns its exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let rest = args.get(2..).unwrap_or_default();
    match args.get(1).map(String::as_str) {
        Some("container") => container_main(rest),
        Some("exec") => crate::execsync::main(rest),
        Some("pinns") => crate::pinns::main(rest),
        Some("infra") => crate::pinns::infra_main(rest),
        _ => {
            eprintln!("skiff-monitor: started by skiffd only (container|exec|pinns|infra)");
            2
        }
    }
}

/// `skiff-monitor container ...`: creates the container and monitors it until it exits.
fn container_main(_args: &[String]) -> i32 {
    eprintln!("skiff-monitor container: not built yet");
    2
}

//! The per-container monitor: a small process, one per container, that outlives skiffd. It creates the
//! container through the runtime library with its stdio on pipes, writes the CRI log file, records the
//! exit status atomically, and serves attach.
//!
//! The `skiff-monitor` binary also hosts skiffd's other single-threaded helpers: work that forks or
//! changes namespaces cannot run inside skiffd's multi-threaded process (`exec_helper`,
//! `pinns`, `infra`). What crosses the process boundary, both ways, is in `protocol`.

pub mod attach;
mod container;
mod exec_helper;
mod infra;
pub mod log;
mod memory;
mod pinns;
pub mod protocol;
mod sys;

use protocol::ContainerArgs;

/// Entry point of the `skiff-monitor` binary; returns its exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let rest = args.get(2..).unwrap_or_default();
    match args.get(1).map(String::as_str) {
        Some("container") => container_main(rest),
        Some("exec") => exec_helper::main(rest),
        Some("pinns") => pinns::main(rest),
        Some("infra") => infra::main(rest),
        _ => {
            eprintln!("skiff-monitor: started by skiffd only (container|exec|pinns|infra)");
            2
        }
    }
}

/// `skiff-monitor container ...`: creates the container and monitors it until it exits.
fn container_main(args: &[String]) -> i32 {
    match ContainerArgs::parse(args) {
        Ok(a) => container::run(&a),
        Err(e) => {
            eprintln!("skiff-monitor container: {e}");
            2
        }
    }
}

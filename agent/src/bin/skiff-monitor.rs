//! skiff-monitor: skiffd's helper processes. `skiffd` starts it; it is not meant to be run by hand.

fn main() {
    std::process::exit(skiff_agent::monitor::main());
}

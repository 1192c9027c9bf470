//! `ExecSync`'s process: `skiff-monitor exec` runs a command in a container through the runtime
//! library with its output on pipes, so skiffd's threads never fork.

/// `skiff-monitor exec ...`
pub fn main(_args: &[String]) -> i32 {
    eprintln!("skiff-monitor exec: not built yet");
    2
}

//! Whether a container's monitor still runs: what status, the exit watcher and stop all ask.

use super::ContainerRecord;

/// Whether the record's monitor is still running: the pid is alive and is the monitor of this
/// container (its command line names the id), so a reused pid is not taken for it.
pub fn monitor_alive(c: &ContainerRecord) -> bool {
    if c.monitor_pid <= 0 || is_zombie(c.monitor_pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", c.monitor_pid)) else {
        return false;
    };
    let want = format!("\0--id\0{}\0", c.id);
    cmdline.windows(want.len()).any(|w| w == want.as_bytes())
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s.get(i + 2..i + 3).map(str::to_owned))
        })
        .is_some_and(|st| st == "Z" || st == "X")
}

//! CPU time of processes, from /proc: their own, and that of the children they reaped (a child's
//! time, its own reaped children's included, is added to its parent's when the parent waits for it),
//! so a daemon's figure covers the short-lived helpers it runs.

use std::collections::BTreeMap;

/// (own, reaped children's) CPU seconds of `pid`, user and system; None once it is gone.
pub fn seconds(pid: i32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses) start at the state,
    // field 3: utime is field 14, cstime field 17.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<f64> = rest
        .split(' ')
        .take(15)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let hz = ticks_per_second();
    Some((
        (f.get(11)? + f.get(12)?) / hz,
        (f.get(13)? + f.get(14)?) / hz,
    ))
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system and has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Per pid of the processes `pick` chooses (by pid, comm, command line): own and children's
/// CPU seconds.
pub fn sample(pick: &dyn Fn(i32, &str, &str) -> bool) -> BTreeMap<i32, (f64, f64)> {
    crate::mem::processes()
        .into_iter()
        .filter(|(pid, comm, cmd)| pick(*pid, comm, cmd))
        .filter_map(|(pid, _, _)| Some((pid, seconds(pid)?)))
        .collect()
}

/// CPU seconds spent between two samples, (own, reaped children's), over the processes of the
/// later one: a process that appeared in between counts whole, one that ended in between is lost
/// unless a sampled process reaped it.
pub fn spent(before: &BTreeMap<i32, (f64, f64)>, after: &BTreeMap<i32, (f64, f64)>) -> (f64, f64) {
    after.iter().fold((0.0, 0.0), |(own, kids), (pid, (o, k))| {
        let (o0, k0) = before.get(pid).copied().unwrap_or((0.0, 0.0));
        (own + o - o0, kids + k - k0)
    })
}

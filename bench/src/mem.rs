//! Memory of processes, from /proc: resident (RSS) and proportional (PSS) set sizes.

/// A field of a /proc file in KiB (`Name:   123 kB`), 0 when the process is gone.
fn kib(path: String, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set of a process in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    kib(format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size in KiB: shared pages (the binary, libc) divided among their users, which is
/// what one more process of a kind really costs.
pub fn pss_kib(pid: i32) -> u64 {
    kib(format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Every pid with its `comm` and command line.
pub fn processes() -> Vec<(i32, String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        out.push((pid, comm.trim_end().to_string(), cmdline));
    }
    out
}

/// (count, summed RSS KiB, summed PSS KiB) of the processes `pick` chooses by comm and command line.
pub fn sum_of(pick: impl Fn(i32, &str, &str) -> bool) -> (u64, u64, u64) {
    let (mut n, mut rss, mut pss) = (0, 0, 0);
    for (pid, comm, cmdline) in processes() {
        if pick(pid, &comm, &cmdline) {
            n += 1;
            rss += rss_kib(pid);
            pss += pss_kib(pid);
        }
    }
    (n, rss, pss)
}

/// (count, summed RSS KiB, summed PSS KiB) of the processes whose `comm` is `name`.
pub fn sum_of_comm(name: &str) -> (u64, u64, u64) {
    // comm is cut at 15 bytes.
    let want: String = name.chars().take(15).collect();
    sum_of(|_, comm, _| comm == want)
}

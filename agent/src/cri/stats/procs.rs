//! What a container's processes hold, from `/proc`: threads, open descriptors and sockets. The cost
//! is one `stat` read and one descriptor listing per process of the container.

use std::path::Path;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Procs {
    pub threads: u64,
    pub fds: u64,
    pub sockets: u64,
}

/// Counts over the processes listed in `procs_file` (a cgroup's `cgroup.procs`); processes that
/// end meanwhile are left out.
pub fn count(procs_file: &Path) -> Procs {
    let mut out = Procs::default();
    let Ok(list) = std::fs::read_to_string(procs_file) else {
        return out;
    };
    for pid in list.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        let dir = Path::new("/proc").join(pid.to_string());
        if let Some(n) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| num_threads(&s))
        {
            out.threads += n;
        }
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            out.fds += 1;
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            if target
                .as_os_str()
                .as_encoded_bytes()
                .starts_with(b"socket:")
            {
                out.sockets += 1;
            }
        }
    }
    out
}

/// `num_threads`, the 20th field of `/proc/<pid>/stat`, counted after the command name (which
/// may hold spaces and parentheses; it ends at the last `)`).
fn num_threads(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(17)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_from_stat_with_odd_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 7 0 12345 0";
        assert_eq!(num_threads(stat), Some(7));
        assert_eq!(num_threads("junk"), None);
    }

    #[test]
    fn counts_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cgroup.procs");
        std::fs::write(&file, format!("{}\n999999999\n", std::process::id())).unwrap();
        let _sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let p = count(&file);
        assert!(p.threads >= 1, "{p:?}");
        assert!(p.fds >= 3, "{p:?}");
        assert!(p.sockets >= 1, "{p:?}");
        assert_eq!(count(&dir.path().join("missing")), Procs::default());
    }
}

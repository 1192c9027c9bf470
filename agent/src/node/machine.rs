//! What the host is: CPUs, memory, huge pages, the node file system, and the identities and
//! versions `nodeInfo` reports. Read from /proc, /sys and /etc, as cAdvisor does for kubelet.

use std::collections::BTreeMap;
use std::path::Path;

/// The facts that do not change while skiffd runs (boot id included: a reboot restarts it).
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cpus: u64,
    pub memory_bytes: u64,
    /// `hugepages-2Mi` → bytes of pages configured.
    pub hugepages: BTreeMap<String, u64>,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
    pub architecture: String,
}

impl Machine {
    pub fn read() -> Machine {
        Machine {
            cpus: online_cpus(),
            memory_bytes: meminfo("MemTotal").unwrap_or(0),
            hugepages: hugepages(Path::new("/sys/kernel/mm/hugepages")),
            kernel_version: kernel_release(),
            os_image: os_image(&read_trim("/etc/os-release")),
            machine_id: first_of(&["/etc/machine-id", "/var/lib/dbus/machine-id"]),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
            architecture: go_arch(std::env::consts::ARCH).into(),
        }
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn first_of(paths: &[&str]) -> String {
    paths
        .iter()
        .map(|p| read_trim(p))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

/// CPUs this process may run on: what the node can give pods.
fn online_cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

/// A `/proc/meminfo` field, in bytes.
pub fn meminfo(field: &str) -> Option<u64> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?, field)
}

fn parse_meminfo(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// The swap areas `/proc/swaps` lists (its first line is a header).
pub fn swaps_in_use(proc_swaps: &str) -> Vec<String> {
    proc_swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// `hugepages-<size>` resources from `/sys/kernel/mm/hugepages/hugepages-<N>kB/nr_hugepages`.
fn hugepages(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(kib) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let pages: u64 = std::fs::read_to_string(e.path().join("nr_hugepages"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.insert(format!("hugepages-{}", size_name(kib)), pages * kib * 1024);
    }
    out
}

/// A page size as the resource name spells it: `2Mi`, `1Gi`, `64Ki`.
fn size_name(kib: u64) -> String {
    match kib {
        k if k % (1024 * 1024) == 0 => format!("{}Gi", k / (1024 * 1024)),
        k if k % 1024 == 0 => format!("{}Mi", k / 1024),
        k => format!("{k}Ki"),
    }
}

fn kernel_release() -> String {
    read_trim("/proc/sys/kernel/osrelease")
}

/// `PRETTY_NAME` of os-release, as kubelet reports the OS image.
fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into())
}

/// Rust's architecture names in Go's spelling, which `kubernetes.io/arch` uses.
pub fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

/// Total and available bytes and inodes of the file system holding `path`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsUsage {
    pub bytes: u64,
    pub bytes_available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

pub fn fs_usage(path: &Path) -> Option<FsUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; zeroed is a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a valid out-pointer for the call's duration.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frag = s.f_frsize as u64;
    Some(FsUsage {
        bytes: s.f_blocks as u64 * frag,
        bytes_available: s.f_bavail as u64 * frag,
        inodes: s.f_files as u64,
        inodes_free: s.f_ffree as u64,
    })
}

/// The nearest existing ancestor of `path` (the kubelet root may not exist before the first start).
pub fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_are_read_below_the_header() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(swaps_in_use(header).is_empty());
        assert!(swaps_in_use("").is_empty());
        let on =
            format!("{header}/swapfile                               file\t\t1048572\t\t0\t\t-2\n");
        assert_eq!(swaps_in_use(&on), vec!["/swapfile"]);
    }

    #[test]
    fn meminfo_fields() {
        let t = "MemTotal:       16318360 kB\nMemFree:         1000 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(parse_meminfo(t, "MemTotal"), Some(16318360 * 1024));
        assert_eq!(parse_meminfo(t, "MemAvailable"), Some(2048 * 1024));
        assert_eq!(parse_meminfo(t, "Mem"), None);
    }

    #[test]
    fn page_sizes() {
        assert_eq!(size_name(2048), "2Mi");
        assert_eq!(size_name(1048576), "1Gi");
        assert_eq!(size_name(64), "64Ki");
    }

    #[test]
    fn os_release() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(os_image(t), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(go_arch("x86_64"), "amd64");
    }

    #[test]
    fn this_host() {
        let m = Machine::read();
        assert!(m.cpus >= 1 && m.memory_bytes > 0);
        assert!(!m.kernel_version.is_empty() && !m.boot_id.is_empty());
        let root = fs_usage(Path::new("/")).unwrap();
        assert!(root.bytes >= root.bytes_available && root.bytes > 0);
        assert_eq!(
            existing_ancestor(Path::new("/nonexistent/a/b")),
            Path::new("/")
        );
    }
}

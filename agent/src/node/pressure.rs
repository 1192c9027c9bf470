//! Eviction signals measured on the host, held against the hard eviction thresholds: what the
//! MemoryPressure, DiskPressure and PIDPressure conditions report.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::machine::{self, FsUsage};
use super::quantity::Amount;

/// One measurement: how much of a resource is left, out of how much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    pub available: f64,
    pub capacity: f64,
}

/// Where the signals are measured.
pub struct Sources {
    /// The kubelet root (nodefs).
    pub nodefs: PathBuf,
    /// The image store (imagefs).
    pub imagefs: PathBuf,
}

/// Every signal that could be measured now, by kubelet's names.
pub fn measure(src: &Sources) -> BTreeMap<&'static str, Signal> {
    let mut m = BTreeMap::new();
    if let (Some(total), Some(avail)) = (
        machine::meminfo("MemTotal"),
        machine::meminfo("MemAvailable"),
    ) {
        // MemAvailable leaves out reclaimable page cache, as the working set kubelet subtracts does.
        m.insert("memory.available", signal(avail, total));
    }
    for (fs, path) in [("nodefs", &src.nodefs), ("imagefs", &src.imagefs)] {
        if let Some(u) = machine::fs_usage(machine::existing_ancestor(path)) {
            let (bytes, inodes) = fs_signals(u);
            m.insert(
                if fs == "nodefs" {
                    "nodefs.available"
                } else {
                    "imagefs.available"
                },
                bytes,
            );
            m.insert(
                if fs == "nodefs" {
                    "nodefs.inodesFree"
                } else {
                    "imagefs.inodesFree"
                },
                inodes,
            );
        }
    }
    if let Some(pids) = pid_signal() {
        m.insert("pid.available", pids);
    }
    m
}

fn signal(available: u64, capacity: u64) -> Signal {
    Signal {
        available: available as f64,
        capacity: capacity as f64,
    }
}

fn fs_signals(u: FsUsage) -> (Signal, Signal) {
    (
        signal(u.bytes_available, u.bytes),
        signal(u.inodes_free, u.inodes),
    )
}

/// PIDs left: the kernel's limit less the tasks that exist (the loadavg's entity count).
fn pid_signal() -> Option<Signal> {
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let load = std::fs::read_to_string("/proc/loadavg").ok()?;
    let tasks: u64 = load
        .split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()?;
    Some(signal(max.saturating_sub(tasks), max))
}

/// The signals below their threshold, each with a line saying so. The line names the threshold and
/// not the measurement, so that a node under pressure does not post a new status at every change.
pub fn crossed(
    signals: &BTreeMap<&'static str, Signal>,
    thresholds: &BTreeMap<String, Amount>,
) -> BTreeMap<String, String> {
    thresholds
        .iter()
        .filter_map(|(name, amount)| {
            let s = signals.get(name.as_str())?;
            let limit = amount.of(s.capacity);
            (s.available < limit).then(|| {
                (
                    name.clone(),
                    format!("{name} is below the hard eviction threshold of {limit:.0}"),
                )
            })
        })
        .collect()
}

/// Which condition a signal belongs to.
pub fn condition_of(signal: &str) -> &'static str {
    match signal.split('.').next() {
        Some("memory") | Some("allocatableMemory") => "MemoryPressure",
        Some("pid") => "PIDPressure",
        _ => "DiskPressure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_against_signals() {
        let mut s = BTreeMap::new();
        s.insert(
            "memory.available",
            Signal {
                available: 50.0,
                capacity: 1000.0,
            },
        );
        s.insert(
            "nodefs.available",
            Signal {
                available: 200.0,
                capacity: 1000.0,
            },
        );
        s.insert(
            "pid.available",
            Signal {
                available: 10.0,
                capacity: 1000.0,
            },
        );
        let mut t = BTreeMap::new();
        t.insert("memory.available".to_string(), Amount::Absolute(100.0));
        t.insert("nodefs.available".to_string(), Amount::Share(0.1));
        t.insert("imagefs.available".to_string(), Amount::Share(0.15));
        let c = crossed(&s, &t);
        assert_eq!(c.keys().collect::<Vec<_>>(), vec!["memory.available"]);
        assert_eq!(
            c["memory.available"],
            "memory.available is below the hard eviction threshold of 100"
        );
        assert_eq!(condition_of("memory.available"), "MemoryPressure");
        assert_eq!(condition_of("imagefs.inodesFree"), "DiskPressure");
        assert_eq!(condition_of("pid.available"), "PIDPressure");
    }

    #[test]
    fn this_host_measures() {
        let m = measure(&Sources {
            nodefs: "/var/lib/kubelet".into(),
            imagefs: "/var/lib/skiff".into(),
        });
        for k in [
            "memory.available",
            "nodefs.available",
            "imagefs.available",
            "pid.available",
        ] {
            let s = m[k];
            assert!(s.available <= s.capacity && s.capacity > 0.0, "{k}: {s:?}");
        }
    }
}

//! The node's own usage, which no CRI call covers: CPU from `/proc/stat`, memory from
//! `/proc/meminfo` and `/proc/vmstat`, the host's interfaces from `/proc/net/dev`, the boot time.

use super::types::{time, CpuStats, InterfaceStats, MemoryStats, NetworkStats, RlimitStats};
use crate::cri::stats::net::{self, Interface};
use crate::cri::stats::Rates;
use crate::node::machine::meminfo;

/// The key of the node's own CPU sample among the CRI layer's rates: no container or sandbox id
/// has a colon.
const NODE_RATE: &str = ":node";

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant and has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time spent by every CPU outside idle and iowait, in nanoseconds (the aggregate `cpu` line).
pub fn parse_cpu_nanos(stat: &str, ticks_per_sec: u64) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    Some(busy * (1_000_000_000 / ticks_per_sec.max(1)))
}

/// CPU time the node has spent busy, in nanoseconds.
pub fn cpu_nanos() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_nanos(&stat, clock_ticks())
}

/// The node's CPU, its rate since the previous sample kept in `rates` (the CRI layer's, which
/// owns every such sample).
pub fn cpu(rates: &Rates, now: i64) -> Option<CpuStats> {
    let total = cpu_nanos()?;
    let rate = rates.observe(NODE_RATE, now, total);
    Some(CpuStats {
        time: time(now),
        usage_nano_cores: Some(rate.unwrap_or(0)),
        usage_core_nano_seconds: Some(total),
    })
}

fn vmstat(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == field).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The node's memory as cAdvisor's root container reports it: usage is what is not free, the
/// working set that less the inactive file cache, available the capacity less the working set.
pub fn memory(now: i64) -> Option<MemoryStats> {
    let total = meminfo("MemTotal")?;
    let usage = total.saturating_sub(meminfo("MemFree")?);
    let working_set = usage.saturating_sub(meminfo("Inactive(file)").unwrap_or(0));
    Some(MemoryStats {
        time: time(now),
        available_bytes: Some(total.saturating_sub(working_set)),
        usage_bytes: Some(usage),
        working_set_bytes: Some(working_set),
        rss_bytes: meminfo("AnonPages"),
        page_faults: vmstat("pgfault"),
        major_page_faults: vmstat("pgmajfault"),
    })
}

pub fn interface(i: &Interface) -> InterfaceStats {
    InterfaceStats {
        name: i.name.clone(),
        rx_bytes: Some(i.rx_bytes),
        rx_errors: Some(i.rx_errors),
        tx_bytes: Some(i.tx_bytes),
        tx_errors: Some(i.tx_errors),
    }
}

pub fn network(now: i64) -> Option<NetworkStats> {
    let ifs = net::parse_net_dev(&std::fs::read_to_string("/proc/net/dev").ok()?);
    Some(NetworkStats {
        time: time(now),
        default: net::default_interface(&ifs).map(interface)?,
        interfaces: ifs.iter().map(interface).collect(),
    })
}

/// When the machine booted (`btime`), in nanoseconds since the epoch.
pub fn boot_time() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())
        })
        .map_or(0, |s| s * 1_000_000_000)
}

/// The kernel's PID limit and the tasks that exist now.
pub fn rlimit(now: i64) -> RlimitStats {
    let maxpid = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    // loadavg's fourth field: running/total scheduling entities.
    let curproc = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok());
    RlimitStats {
        time: time(now),
        maxpid,
        curproc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_cpu_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_cpu_nanos(stat, 100), Some(161 * 10_000_000));
    }

    #[test]
    fn the_host_is_measured() {
        let now = crate::now_ns();
        let m = memory(now).unwrap();
        assert!(m.working_set_bytes.unwrap() > 0);
        assert!(m.available_bytes.unwrap() > 0);
        assert!(
            cpu(&Rates::default(), now)
                .unwrap()
                .usage_core_nano_seconds
                .unwrap()
                > 0
        );
        assert!(boot_time() > 0 && boot_time() < now);
    }
}

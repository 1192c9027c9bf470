//! `skiff update` and `skiff events`: a running container's cgroup limits and usage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cgroups;
use crate::container::Runtime;
use crate::spec::{BlockIo, Cpu, Memory, Pids, Resources};
use crate::state::{ContainerState, StateDir, Status};

#[derive(clap::Args, Debug, Default)]
pub struct UpdateArgs {
    /// A JSON file with a linux.resources object ("-" reads stdin); flags override it.
    #[arg(short = 'r', long)]
    pub resources: Option<PathBuf>,
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_share: Option<u64>,
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    #[arg(long)]
    pub cpu_rt_runtime: Option<i64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    #[arg(long, value_parser = parse_bytes)]
    pub kernel_memory: Option<i64>,
    #[arg(long, value_parser = parse_bytes)]
    pub kernel_memory_tcp: Option<i64>,
    /// Memory limit, in bytes or with a k, m, g, t suffix.
    #[arg(long, value_parser = parse_bytes, allow_hyphen_values = true)]
    pub memory: Option<i64>,
    #[arg(long, value_parser = parse_bytes, allow_hyphen_values = true)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap; -1 for unlimited.
    #[arg(long, value_parser = parse_bytes, allow_hyphen_values = true)]
    pub memory_swap: Option<i64>,
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Accepted for runc compatibility; Intel RDT is not supported.
    #[arg(long, hide = true)]
    pub l3_cache_schema: Option<String>,
    /// Accepted for runc compatibility; Intel RDT is not supported.
    #[arg(long, hide = true)]
    pub mem_bw_schema: Option<String>,
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Print the container's usage once and exit.
    #[arg(long)]
    pub stats: bool,
    /// How often the streaming form prints usage (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,
    pub id: String,
}

/// `512`, `64k`, `100M`, `1g`, `2GiB`; a negative number means unlimited.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: i64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 512, 64k, 100m, 1g)"))?;
    if n < 0 {
        return Ok(-1);
    }
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (like 5s, 500ms)");
    let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * unit))
}

fn read_resources(path: &Path) -> Result<Resources> {
    let data = if path == Path::new("-") {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).context("reading stdin")?;
        v
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    let de = &mut serde_json::Deserializer::from_slice(&data);
    serde_path_to_error::deserialize(de)
        .with_context(|| format!("{}: not a linux.resources object", path.display()))
}

impl UpdateArgs {
    fn flags(&self) -> Resources {
        let mut r = Resources::default();
        let mem = Memory {
            limit: self.memory,
            reservation: self.memory_reservation,
            swap: self.memory_swap,
            kernel: self.kernel_memory,
            kernel_tcp: self.kernel_memory_tcp,
            ..Default::default()
        };
        if mem.limit.is_some()
            || mem.reservation.is_some()
            || mem.swap.is_some()
            || mem.kernel.is_some()
            || mem.kernel_tcp.is_some()
        {
            r.memory = Some(mem);
        }
        let cpu = Cpu {
            shares: self.cpu_share,
            quota: self.cpu_quota,
            period: self.cpu_period,
            realtime_period: self.cpu_rt_period,
            realtime_runtime: self.cpu_rt_runtime,
            cpus: self.cpuset_cpus.clone(),
            mems: self.cpuset_mems.clone(),
            ..Default::default()
        };
        if cpu.shares.is_some()
            || cpu.quota.is_some()
            || cpu.period.is_some()
            || cpu.realtime_period.is_some()
            || cpu.realtime_runtime.is_some()
            || cpu.cpus.is_some()
            || cpu.mems.is_some()
        {
            r.cpu = Some(cpu);
        }
        r.pids = self.pids_limit.map(|limit| Pids { limit });
        if let Some(w) = self.blkio_weight {
            r.block_io = Some(BlockIo {
                weight: Some(w),
                ..Default::default()
            });
        }
        r
    }
}

fn live_state(root: &Path, id: &str) -> Result<(StateDir, ContainerState)> {
    let dir = StateDir::open(root, id)?;
    let st = dir.load()?;
    if st.status(&dir.path) == Status::Stopped {
        bail!("container {id} is stopped");
    }
    Ok((dir, st))
}

pub fn update(rt: &Runtime, args: UpdateArgs) -> Result<i32> {
    if args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some() {
        bail!("--l3-cache-schema/--mem-bw-schema: Intel RDT is not supported");
    }
    let mut new = match &args.resources {
        Some(p) => read_resources(p)?,
        None => Resources::default(),
    };
    new.merge(args.flags());
    rt.update(&args.id, new)?;
    Ok(0)
}

#[derive(Serialize)]
struct Event<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
}

fn emit<T: Serialize>(kind: &str, id: &str, data: Option<T>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &Event { kind, id, data })?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

pub fn events(root: &Path, args: EventsArgs) -> Result<i32> {
    let (dir, st) = live_state(root, &args.id)?;
    // Streaming must not hold the container's lock.
    drop(dir);
    let cg = cgroups::from_state(&st.cgroup);
    if args.stats {
        emit("stats", &args.id, Some(cg.stats()))?;
        return Ok(0);
    }
    let mut watch = cg.oom_watch()?;
    let mut next = Instant::now() + args.interval;
    while st.init_alive() {
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        if let Some(w) = watch.as_mut() {
            let mut pfd = libc::pollfd {
                fd: w.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) };
            if r > 0 && w.drain() > 0 {
                emit::<()>("oom", &args.id, None)?;
            }
        } else {
            std::thread::sleep(wait);
        }
        if Instant::now() >= next {
            emit("stats", &args.id, Some(cg.stats()))?;
            next += args.interval;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64k"), Ok(65536));
        assert_eq!(parse_bytes("100M"), Ok(100 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("-1"), Ok(-1));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("0s").is_err());
    }
}
